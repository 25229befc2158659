"""CPU-sized 5-stage MT25 protocol (scripted teachers, small student): ~5 min a run."""

from cpd_jax.configs import mt25_5stage


def get_config():
    c = mt25_5stage.get_config()
    c.student.task_context = "onehot"  # overridden per method by experiments/
    c.data.episodes_per_task = 20  # variations 0..19
    c.data.num_train_variations = 20
    c.student.dim = 64
    c.student.num_blocks = 2
    c.student.num_heads = 2
    c.student.num_experts = 4
    c.student.seq_len = 10
    c.continual.new_experts_per_stage = 2
    c.distill.batch_size = 64
    c.distill.max_steps = 1500  # per stage
    c.distill.learning_rate = 1e-3
    # Task-balanced draws: the replay keeps 2 of 20 episodes per old task, so uniform
    # draws give each old task ~1/10 of a new task's gradient and phase 2 overwrites the
    # old experts (BUILD_NOTES, CPU Table 2). Without replay it is uniform, bitwise.
    c.distill.sampling = "task"
    c.distill.aux_coef_decay = 1e-5
    c.eval.episodes_per_task = 10
    c.eval.first_variation = 30  # variations 30..39: never trained on
    return c
