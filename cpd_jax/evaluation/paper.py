"""The paper's published numbers (arXiv 2601.22475; shared/reference/PAPER_RESULTS.md),
for result tables that put ours side by side with them. Percent."""

# Table 2, 5-stage MT25: final Acc and BWT after stage 5 (None: not given).
TABLE2_FINAL = {
    "ours": (69.4, 2.3),
    "finetune": (26.1, None),
    "ewc": (35.9, None),
    "kl": (21.6, None),
    "trac": (21.4, None),
    "replay_only": (57.2, -11.0),
    "expert_only": (28.0, -51.3),
    "independent": (62.8, None),
    "no_te": (57.9, None),
    "no_shared_frozen": (64.5, None),
    "no_freeze_gating": (64.5, None),
}
TABLE2_OURS_ACC_PER_STAGE = (59.3, 80.7, 62.3, 65.3, 69.4)

# Table 1: joint distillation of MT10 (central model) and its teachers, mean success.
TABLE1_MT10 = {"central_model": 88.9, "teachers": 90.8}
JOINT_MT25 = 76.5
