"""CPU-sized 5-stage MT25 protocol (scripted teachers, small student)."""

from cpd_jax.configs import mt25_5stage


def get_config():
    c = mt25_5stage.get_config()
    c.student.task_context = "onehot"  # overridden per method by experiments/
    # One teacher episode per training goal (the paper: ~131 per task): at the plateau
    # of joint distillation (BUILD_NOTES, "Learning curves"); the 10% replay then keeps
    # 5 episodes of every old task.
    c.data.episodes_per_task = 50
    c.student.dim = 64
    c.student.num_blocks = 2
    c.student.num_heads = 2
    c.student.num_experts = 4
    c.student.seq_len = 10
    c.distill.batch_size = 64
    # Per stage, at the plateau of joint distillation of each stage's 5 tasks
    # (BUILD_NOTES, "Learning curves"); a cosine decay to 10% over each stage reaches it
    # in ~4x fewer steps than the paper's constant rate.
    c.distill.max_steps = 5000
    c.distill.learning_rate = 1e-3
    c.distill.lr_schedule = "cosine"
    # Task-balanced draws: the replay keeps 2 of 20 episodes per old task, so uniform
    # draws give each old task ~1/10 of a new task's gradient and phase 2 overwrites the
    # old experts (BUILD_NOTES, CPU Table 2). Without replay it is uniform, bitwise.
    c.distill.sampling = "task"
    return c
