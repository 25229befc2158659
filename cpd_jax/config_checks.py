"""Up-front checks of a run's config: refuse a config that cannot run before any data is
collected or anything is compiled, with one line naming the field and the fix.

`check_config(config)` is pure (reads the config and constant tables, no files, no JAX
call) so `cpd_jax.main` can call it before `jax.distributed.initialize()`. Every config
derives from `configs/default.py`, so every field checked here exists; a config built
otherwise is refused by the first field it lacks.
"""

import operator

from cpd_jax.envs.tasks import UnknownTaskError, validate_tasks
from cpd_jax.errors import UserError

PROTOCOLS = ("joint", "stages", "teachers")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}

# (field, ((op, bound), ...)): every comparison must hold.
RANGES = (
    ("student.dim", ((">=", 1),)),
    ("student.num_blocks", ((">=", 1),)),
    ("student.num_heads", ((">=", 1),)),
    ("student.num_experts", ((">=", 1),)),
    ("student.top_k", ((">=", 1),)),
    ("student.mlp_multiplier", ((">=", 1),)),
    ("student.seq_len", ((">=", 1),)),
    ("distill.learning_rate", ((">", 0),)),
    ("distill.weight_decay", ((">=", 0),)),
    ("distill.epochs", ((">", 0),)),
    ("distill.batch_size", ((">=", 1),)),
    ("distill.max_steps", ((">=", 0),)),  # 0 = derive the steps from distill.epochs
    ("distill.log_every", ((">=", 1),)),
    ("distill.aux_coef_start", ((">=", 0),)),
    ("distill.aux_coef_min", ((">=", 0),)),
    ("data.episodes_per_task", ((">=", 1),)),
    ("data.collect_batch", ((">=", 1),)),
    ("data.collect_noise_std", ((">=", 0),)),
    ("continual.new_experts_per_stage", ((">=", 0),)),
    ("continual.sigma_init", ((">=", 0),)),
    ("continual.phase1_fraction", ((">", 0), ("<", 1))),
    ("continual.replay_fraction", ((">=", 0), ("<=", 1))),
    ("continual.ewc_coef", ((">=", 0),)),
    ("continual.kl_coef", ((">=", 0),)),
    ("continual.route_anchor_coef", ((">=", 0),)),
    ("continual.route_new_coef", ((">=", 0),)),
    ("continual.feature_anchor_coef", ((">=", 0),)),
    ("continual.fisher_batches", ((">=", 1),)),
    ("task_encoder.embed_dim", ((">=", 1),)),
    ("task_encoder.temperature", ((">", 0),)),
    ("task_encoder.learning_rate", ((">", 0),)),
    ("task_encoder.steps", ((">=", 1),)),
    ("task_encoder.batch_size", ((">=", 2),)),  # InfoNCE needs a positive pair
    ("eval.episodes_per_task", ((">=", 1),)),
    ("eval.max_envs", ((">=", 1),)),
    ("checkpoint.max_to_keep", ((">=", 1),)),
    ("checkpoint.every_steps", ((">=", 0),)),
)
CHOICES = (
    ("protocol", PROTOCOLS),
    ("student.task_context", ("none", "onehot", "contrastive")),
    ("distill.lr_schedule", ("constant", "cosine")),
    ("distill.sampling", ("episode", "task")),
    ("env.backend", ("reference", "mjx")),
    ("teacher.kind", ("scripted", "ppo")),
    ("continual.old_task_context", ("frozen", "trainable")),
    ("continual.replay_selector", ("dpp", "farthest_first", "random")),
    ("eval.protocol", ("heldout", "metaworld_plus")),
    ("log.wandb_mode", ("offline", "online")),
)


def get_field(config, dotted: str):
    """config.a.b for "a.b"; UserError naming the field when the config lacks it."""
    node = config
    for name in dotted.split("."):
        if name not in node:
            raise UserError(f"the config has no field {dotted}; build the config file on "
                            "cpd_jax/configs/default.py (`default.get_config()`)")
        node = node[name]
    return node


def check_range(config, dotted: str, bounds) -> None:
    """Raises UserError unless every (op, bound) of `bounds` holds for the field."""
    value = get_field(config, dotted)
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and all(_OPS[op](value, bound) for op, bound in bounds):
        return
    need = " and ".join(f"{op} {bound}" for op, bound in bounds)
    raise UserError(f"{dotted} must be {need}, got {value!r}; "
                    f"set --config.{dotted} to a value {need}")


def check_choice(config, dotted: str, choices) -> None:
    value = get_field(config, dotted)
    if value not in choices:
        raise UserError(f"{dotted}={value!r} is not one of {', '.join(choices)}; "
                        f"set --config.{dotted} to one of them")


def check_tasks(tasks, field: str) -> tuple[str, ...]:
    """`tasks` validated, the error naming `field` (config field or flag)."""
    try:
        return validate_tasks(tasks)
    except UnknownTaskError as e:
        raise UnknownTaskError(f"{field}: {e}") from e


def _check_heads(config) -> None:
    dim, heads = get_field(config, "student.dim"), get_field(config, "student.num_heads")
    if dim % heads:
        raise UserError(f"student.dim={dim} is not divisible by student.num_heads={heads}; "
                        "set --config.student.dim to a multiple of the heads")
    top_k, experts = get_field(config, "student.top_k"), get_field(config,
                                                                    "student.num_experts")
    if top_k > experts:
        raise UserError(f"student.top_k={top_k} is more than student.num_experts={experts}; "
                        "lower --config.student.top_k")
    if get_field(config, "student.task_film") and get_field(
            config, "student.task_context") == "none":
        raise UserError("student.task_film=True modulates the layers with the task context, "
                        "but student.task_context='none' gives none: set "
                        "--config.student.task_context=onehot or --config.student.task_film="
                        "False")


def split_stages(tasks, stage_sizes) -> list[tuple[str, ...]]:
    """The task stream cut into consecutive stages of the given sizes."""
    tasks = check_tasks(tasks, "tasks")
    sizes = tuple(stage_sizes)
    if not sizes or min(sizes) < 1 or sum(sizes) != len(tasks):
        raise UserError(f"continual.stage_sizes={sizes} do not partition the {len(tasks)} "
                        "tasks; set --config.continual.stage_sizes to positive sizes that "
                        f"sum to {len(tasks)}")
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return [tasks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _as_user_error(fn, *args):
    """Calls a validator of another module whose ValueError is a user mistake."""
    try:
        return fn(*args)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(str(e)) from e


def check_contrastive_stages(config, stages, method) -> None:
    """InfoNCE contrasts tasks: a stage's encoder trains on its own tasks plus, from stage
    2 on and only for a method with replay, the replayed old tasks (at least one episode
    each, `dpp.replay_budget`). A stage that sees one task in all cannot train it."""
    if config.student.task_context != "contrastive":
        return
    for k, stage in enumerate(stages):
        replays_old = k > 0 and method.replay and not method.fresh_student
        if len(stage) < 2 and not replays_old:
            why = ("stage 1" if k == 0 else
                   f"stage {k + 1} (method {config.method!r} replays no old tasks)")
            raise UserError(
                "student.task_context='contrastive' trains its encoder with InfoNCE, which "
                f"needs at least two tasks, but {why} has only {stage[0]}: change "
                f"continual.stage_sizes={tuple(config.continual.stage_sizes)} so that stage "
                "has >= 2 tasks, or use --config.student.task_context=onehot")


def _check_stages(config) -> None:
    from cpd_jax.continual import freezing  # flax/optax: no JAX call at import
    from cpd_jax.continual.methods import get_method
    method = _as_user_error(get_method, config.method)
    if method.freeze:
        _as_user_error(freezing.check_schedule, config.continual.backbone,
                       config.continual.freeze_gating, config.continual.old_experts)
    stages = split_stages(config.tasks, config.continual.stage_sizes)
    check_contrastive_stages(config, stages, method)


def check_joint(config) -> None:
    if config.student.task_context == "contrastive":
        n = len(config.tasks)
        raise UserError("protocol 'joint' has no task encoder: for student.task_context="
                        "'contrastive' run --config.protocol=stages with one stage "
                        f"(--config.continual.stage_sizes=({n},))")


def check_config(config, protocol: str | None = None) -> None:
    """Raises UserError (one line: field, cause, fix) for a config that cannot run as
    `protocol` (default: the config's own)."""
    for dotted, bounds in RANGES:
        check_range(config, dotted, bounds)
    for dotted, choices in CHOICES:
        check_choice(config, dotted, choices)
    _check_heads(config)
    check_tasks(get_field(config, "tasks"), "tasks")
    protocol = protocol or get_field(config, "protocol")
    if protocol == "stages":
        _check_stages(config)
    elif protocol == "joint":
        check_joint(config)
