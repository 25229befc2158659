"""Paper defaults (Tables 4 and 6): joint distillation of MT10 with scripted teachers.

Every other config starts from this one and changes only what it must.
"""

import ml_collections

from cpd_jax.envs.tasks import MT10_TASKS


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # one seed drives collection noise, init, batches and evaluation order
    c.tasks = MT10_TASKS  # task stream, in the paper's worker-id order
    c.protocol = "joint"  # "joint": one stage with every task; "stages": Algorithm 1
    c.method = "ours"  # continual method (cpd_jax/continual/methods.py), protocol "stages"

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
    c.data.dir = ""  # rollouts directory; "" = <workdir>/data (share it across runs)

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

    c.distill = ml_collections.ConfigDict()
    c.distill.learning_rate = 1e-4  # AdamW (Table 6)
    c.distill.weight_decay = 1e-4  # AdamW decoupled weight decay
    c.distill.lr_schedule = "constant"  # "constant" (paper) or "cosine" (decay to 10%)
    c.distill.epochs = 2.0  # passes over all windows (Table 6)
    c.distill.batch_size = 128  # windows per step (Table 6)
    c.distill.max_steps = 0  # > 0 overrides epochs
    # Episode draw: "episode" (uniform over episodes = the paper's epochs over all data)
    # or "task" (each task in stage data + replay equally likely; distillation.py).
    c.distill.sampling = "episode"
    c.distill.aux_coef_start = 0.01  # load-balancing lambda at step 0 (Table 6)
    c.distill.aux_coef_decay = 5e-5  # lambda decrease per step (Table 6)
    c.distill.aux_coef_min = 1e-4  # lambda floor (Table 6)
    c.distill.log_every = 200  # steps between progress lines

    c.continual = ml_collections.ConfigDict()
    c.continual.stage_sizes = (10,)  # tasks per stage, in stream order (protocol "stages")
    c.continual.new_experts_per_stage = 2  # experts added per MoE layer at stages >= 2
    c.continual.sigma_init = 0.01  # std of the noise on copied experts (§4.2)
    c.continual.gate_bias_init = -5.0  # cold-start router bias of new experts (§4.2)
    c.continual.freeze_backbone = True  # False = "No Shared-Frozen" ablation
    c.continual.freeze_gating = True  # False = "No Freeze-Gating" ablation (one phase)
    c.continual.phase1_fraction = 0.5  # share of a stage's steps in phase 1
    c.continual.replay_fraction = 0.1  # replay budget: <= 10% of a stage's trajectories
    c.continual.replay_selector = "dpp"  # "dpp", "farthest_first" or "random" (§4.4)
    c.continual.replay_slice_len = 20  # DPP features: means of slices of this many steps
    c.continual.ewc_coef = 100.0  # EWC baseline penalty strength
    c.continual.fisher_batches = 8  # minibatches for the EWC diagonal Fisher
    c.continual.kl_coef = 1.0  # KL baseline penalty strength

    c.task_encoder = ml_collections.ConfigDict()  # task_context "contrastive" (§4.3)
    c.task_encoder.embed_dim = 16  # z size (paper Table 6); (39 + 16 = 55 student inputs)
    c.task_encoder.hidden = (128, 128)  # per-step MLP widths before mean-pooling
    c.task_encoder.temperature = 0.1  # InfoNCE temperature on cosine similarities
    c.task_encoder.learning_rate = 1e-3  # AdamW
    c.task_encoder.weight_decay = 1e-4  # AdamW
    c.task_encoder.steps = 300  # InfoNCE gradient steps per stage
    c.task_encoder.batch_size = 256  # windows per step, class-balanced

    c.parallel = ml_collections.ConfigDict()
    c.parallel.data_parallel = True  # split distillation batches over all devices if > 1
    c.parallel.multi_host = False  # call jax.distributed.initialize() (TPU pods, SLURM)
    c.parallel.coordinator_address = ""  # "host:port"; "" = auto-detect
    c.parallel.num_processes = -1  # -1 = auto-detect
    c.parallel.process_id = -1  # -1 = auto-detect

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.max_to_keep = 10  # stage checkpoints kept (one per finished stage)

    c.eval = ml_collections.ConfigDict()
    c.eval.episodes_per_task = 20  # evaluation episodes per task
    c.eval.first_variation = 40  # held-out variations 40.. (mod 50), never trained on
    return c
