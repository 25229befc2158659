"""CPU quickstart (minutes): 3 tasks, scripted teachers, a small student, joint distillation."""

from cpd_jax.configs import default


def get_config():
    c = default.get_config()
    c.tasks = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")
    c.data.episodes_per_task = 60  # variations 0..29, twice (different action noise)
    c.data.num_train_variations = 30
    c.student.dim = 64
    c.student.num_blocks = 2
    c.student.num_heads = 2
    c.student.num_experts = 4
    c.student.seq_len = 10
    c.distill.batch_size = 64
    c.distill.max_steps = 4000
    c.distill.learning_rate = 1e-3  # small model, short run: a larger step is stable
    c.distill.lr_schedule = "cosine"  # settles the precise end-points (reach) late in training
    c.distill.aux_coef_decay = 1e-5
    return c
