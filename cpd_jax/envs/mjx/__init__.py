"""MJX port of Meta-World (Sawyer base + MT10 tasks)."""
