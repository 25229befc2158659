"""The project's main job at CPU size (minutes): the continual protocol of Algorithm 1 on
3 stages of 2 tasks — a student distilled stage after stage from scripted teachers, a new
expert per MoE layer per stage, replay of earlier stages, frozen old parameters, and every
seen task evaluated on held-out goals after each stage (Acc/BWT, accuracy matrix,
routing heatmaps, `report.md`).

It is `mt25_5stage_cpu.py` (method "ours", one-hot task context) with fewer tasks, fewer
episodes and shorter stages; `quickstart.py` is the joint (one-stage) quickstart.
"""

from cpd_jax.configs import mt25_5stage_cpu


def get_config():
    c = mt25_5stage_cpu.get_config()
    # The first stage's tasks train the backbone that later stages keep frozen, so it
    # gets two tasks with different motions (hinge pull, slide pull); with reach and
    # drawer-close first, 2,000 steps per stage learned no later task but window-open.
    c.tasks = ("door-open-v3", "drawer-open-v3", "button-press-topdown-v3", "reach-v3",
               "drawer-close-v3", "window-open-v3")
    c.continual.stage_sizes = (2, 2, 2)
    c.data.episodes_per_task = 30  # one episode per training goal 0..29
    c.data.num_train_variations = 30
    c.distill.max_steps = 4000  # per stage (phase 1 + phase 2)
    c.eval.episodes_per_task = 10
    return c
