"""Paper defaults (Tables 4 and 6): joint distillation of MT10 with scripted teachers.

Every other config starts from this one and changes only what it must.
"""

import ml_collections

from cpd_jax.envs.tasks import MT10_TASKS


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # one seed drives collection noise, init, batches and evaluation order
    c.tasks = MT10_TASKS  # task stream, in the paper's worker-id order
    c.protocol = "joint"  # "joint": one stage with every task

    c.env = ml_collections.ConfigDict()
    c.env.backend = "reference"  # "reference" (metaworld on CPU MuJoCo) or "mjx"

    c.teacher = ml_collections.ConfigDict()
    c.teacher.kind = "scripted"  # "scripted" (metaworld.policies) or "ppo"
    c.teacher.checkpoint_dir = ""  # root of trained PPO teachers (kind="ppo")

    c.data = ml_collections.ConfigDict()
    c.data.episodes_per_task = 131  # ~65,536 steps per task (paper §5)
    c.data.first_train_variation = 0  # episodes use variations first.. (mod 50)
    c.data.num_train_variations = 40  # variations 0..39 for data; 40..49 held out
    c.data.collect_noise_std = 0.1  # executed-action noise (labels stay clean), DART-style
    c.data.collect_batch = 64  # envs stepped together while collecting

    c.student = ml_collections.ConfigDict()
    c.student.dim = 256  # hidden size (Table 6)
    c.student.num_blocks = 5  # Transformer blocks (Table 6)
    c.student.num_heads = 4  # attention heads
    c.student.num_experts = 8  # experts per MoE layer at stage 1 (Table 6)
    c.student.top_k = 1  # Switch routing
    c.student.mlp_multiplier = 4  # expert hidden = 4 * dim (Table 6)
    c.student.seq_len = 20  # observation history length L (Table 6)
    c.student.capacity_factor = 0.0  # <= 0: no token dropping (exact, batch-independent)
    c.student.action_dim = 4
    c.student.task_context = "onehot"  # "none", "onehot" or "contrastive" (§4.3)
    c.student.task_embedding_dim = 16  # z size for "contrastive" (39 + 16 = 55)

    c.distill = ml_collections.ConfigDict()
    c.distill.learning_rate = 1e-4  # AdamW (Table 6)
    c.distill.weight_decay = 1e-4  # AdamW decoupled weight decay
    c.distill.lr_schedule = "constant"  # "constant" (paper) or "cosine" (decay to 10%)
    c.distill.epochs = 2.0  # passes over all windows (Table 6)
    c.distill.batch_size = 128  # windows per step (Table 6)
    c.distill.max_steps = 0  # > 0 overrides epochs
    c.distill.aux_coef_start = 0.01  # load-balancing lambda at step 0 (Table 6)
    c.distill.aux_coef_decay = 5e-5  # lambda decrease per step (Table 6)
    c.distill.aux_coef_min = 1e-4  # lambda floor (Table 6)
    c.distill.log_every = 200  # steps between progress lines

    c.eval = ml_collections.ConfigDict()
    c.eval.episodes_per_task = 20  # evaluation episodes per task
    c.eval.first_variation = 40  # held-out variations 40.. (mod 50), never trained on
    return c
