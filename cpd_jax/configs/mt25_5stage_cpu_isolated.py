"""The CPU 5-stage protocol with "ours" extended to keep old tasks isolated (BUILD_NOTES,
"Table 2"): the paper-faithful `mt25_5stage_cpu.py` plus three fields.

- continual.old_experts = "frozen": an expert and its router column never train after
  the stage that created them (the paper retrains every expert in phase 2);
- continual.route_anchor_coef: old tasks' (replay) tokens stay on the experts that
  served them (KL to the previous stage's router);
- continual.route_new_coef: the stage's new tasks' tokens go to the new experts.

Measured on the 2-stage probe (BUILD_NOTES): stage-2 forgetting -41 points (faithful)
-> -2 points, new tasks learned as well.
"""

from cpd_jax.configs import mt25_5stage_cpu


def get_config():
    c = mt25_5stage_cpu.get_config()
    c.continual.old_experts = "frozen"
    c.continual.route_anchor_coef = 1.0
    c.continual.route_new_coef = 1.0
    return c
