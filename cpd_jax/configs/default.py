"""Paper defaults (Tables 4 and 6): joint distillation of MT10 with scripted teachers.

Every other config starts from this one and changes only what it must. A field added
later defaults to the behaviour from before it, so that runs saved before it still resume
(`checkpointing.config_differences`).
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
    # Training goals (cpd_jax/envs/variations.py): episodes cycle through variations
    # first..first+num-1 of the 50 MT50(seed=0) goals; 50..99 are held-out goals.
    c.data.first_train_variation = 0
    c.data.num_train_variations = 50
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
    # Per-task FiLM (an extension, not the paper's): the task context also scales and
    # shifts every layer norm's output (`student.transformer.TaskContext`). With one-hot
    # context each task's FiLM is its own row, which trains only at its task's stage, so
    # a frozen backbone still gives new tasks capacity in every layer.
    c.student.task_film = False

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
    # Load-balancing lambda (Table 6): 0.01 at a stage's first step, minus 5e-5 per step
    # of the stage (phases continue the count), floored at 1e-4. It restarts every
    # stage, because every stage adds experts that the router has to start using.
    c.distill.aux_coef_start = 0.01
    c.distill.aux_coef_decay = 5e-5
    c.distill.aux_coef_min = 1e-4
    c.distill.log_every = 200  # steps between progress lines

    c.continual = ml_collections.ConfigDict()
    c.continual.stage_sizes = (10,)  # tasks per stage, in stream order (protocol "stages")
    c.continual.new_experts_per_stage = 1  # experts added per MoE layer at stages >= 2 (Fig. 1)
    c.continual.sigma_init = 0.01  # std of the noise on copied experts (§4.2)
    c.continual.gate_bias_init = -5.0  # cold-start router bias of new experts (§4.2)
    # Shared layers at stages >= 2 (continual/freezing.py): "frozen" (§4.5, for good),
    # "phase2" (Algorithm 1 line 19: trained again in phase 2) or "trainable" (the
    # "No Shared-Frozen" ablation). The task-context projection trains at every stage.
    c.continual.backbone = "frozen"
    # One-hot context: old tasks' rows of the task-context projection after their stage:
    # "frozen" (each row is its task's embedding; trained on the replay they drift and
    # old tasks forget) or "trainable" (§4.5 read literally). continual/stages.py.
    c.continual.old_task_context = "frozen"
    # Experts created at earlier stages: "phase2" (paper: trained in phase 2 of every
    # later stage) or "frozen" (never trained again; an extension).
    c.continual.old_experts = "phase2"
    # Routing terms at stages >= 2 (extensions, 0 = the paper; continual/penalties.py):
    # anchor: coef * KL(previous router || router) on old tasks' (replay) tokens keeps
    # old tasks on the experts that served them; new: coef * -log(router mass on the new
    # experts) on the stage's new tasks' tokens sends new tasks to the new experts.
    c.continual.route_anchor_coef = 0.0
    c.continual.route_new_coef = 0.0
    # Feature anchor at stages >= 2 (an extension, 0 = the paper): coef * mean squared
    # drift of old tasks' MoE-layer inputs from the previous stage's student, on their
    # (replay) tokens. It lets a trainable backbone (continual.backbone) learn new tasks
    # while old tasks' frozen experts keep reading what they were trained on.
    c.continual.feature_anchor_coef = 0.0
    c.continual.freeze_gating = True  # False = "No Freeze-Gating" ablation (one phase)
    c.continual.phase1_fraction = 0.5  # share of a stage's steps in phase 1
    c.continual.replay_fraction = 0.1  # replay budget: <= 10% of a stage's trajectories
    c.continual.replay_selector = "dpp"  # "dpp", "farthest_first" or "random" (§4.4)
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
    # Stages >= 2 start from the previous stage's encoder (and its input statistics) and
    # add anchor_coef * mean(1 - cos(z, z_prev)) over old tasks' replay windows, so old
    # tasks keep their z while the frozen backbone reads it (continual/encoder.py).
    c.task_encoder.anchor_coef = 1.0
    c.task_encoder.batch_size = 256  # windows per step, class-balanced

    c.parallel = ml_collections.ConfigDict()
    c.parallel.data_parallel = True  # split distillation batches over all devices if > 1
    c.parallel.multi_host = False  # call jax.distributed.initialize() (TPU pods, SLURM)
    c.parallel.coordinator_address = ""  # "host:port"; "" = auto-detect
    c.parallel.num_processes = -1  # -1 = auto-detect
    c.parallel.process_id = -1  # -1 = auto-detect

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.max_to_keep = 10  # stage checkpoints kept (one per finished stage)
    # Protocol "stages": save the training state inside a stage every this many steps of
    # a phase (0 = only between stages), so a killed run resumes mid-stage, bitwise.
    # A save is one sync write of the state: ~1 s for the CPU configs' student (50 ms
    # steps: ~2% of the time) and ~5 s for the paper's (3.3 s steps on a CPU: 0.15%,
    # at most ~1 h of a ~5 h stage lost). Raise it where steps are much faster (GPU).
    c.checkpoint.every_steps = 1000

    c.eval = ml_collections.ConfigDict()
    # Evaluation protocol (cpd_jax/evaluation/protocol.py): "heldout" = one episode per
    # held-out goal from eval.first_variation (50..99 are held-out goals, disjoint from
    # the training goals by construction; an overlapping config is refused), or
    # "metaworld_plus" = Meta-World+'s episodes on the 50 training goals. Success: at any
    # step of 500.
    c.eval.protocol = "heldout"
    c.eval.episodes_per_task = 20  # evaluation episodes per task
    c.eval.first_variation = 50  # the first held-out goal
    # Stop stepping an episode once it succeeded: the success rate is exactly the same
    # (success counts at any step); returns are counted up to the first success.
    c.eval.stop_at_success = True
    # Envs stepped at once (the tasks' episodes run in waves): memory, not speed; a
    # reference-backend env holds ~25 MB.
    c.eval.max_envs = 100
    # Teacher episodes on held-out goals (the first ones of the protocol's) per task, for
    # the student's MSE on held-out teacher actions at the end of every phase.
    c.eval.mse_episodes_per_task = 2
    # Joint protocol: also evaluate after these gradient steps (the learning curve,
    # held-out success vs steps, in results.json and learning_curve.png).
    c.eval.curve_steps = ()

    # Evaluation videos (cpd_jax/evaluation/video.py) of the saved student, into
    # <workdir>/videos: with `--video`, or after a continual run with video.at_end.
    c.video = ml_collections.ConfigDict()
    c.video.at_end = False  # render after a `stages` run (the joint protocol saves no student)
    c.video.episodes_per_task = 2  # on the evaluation protocol's first goals
    c.video.height = 240  # pixels; height and width are multiples of 16 (H.264 blocks)
    c.video.width = 320
    c.video.frame_every = 4  # render every 4th env step: 20 fps, real time (80 steps/s)
    c.video.format = "mp4"  # or "gif"

    c.log = ml_collections.ConfigDict()  # live metrics (cpd_jax/live_metrics.py)
    c.log.tensorboard = True  # scalars to TensorBoard event files in <workdir>/tb
    c.log.wandb = False  # also to Weights & Biases (needs `pip install wandb`)
    c.log.wandb_mode = "offline"  # "offline" (run dir in <workdir>/wandb) or "online"
    c.log.wandb_project = "cpd_jax"  # W&B project name
    return c
