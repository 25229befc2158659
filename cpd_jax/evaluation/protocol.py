"""Which goals a run trains on and which it is evaluated on (the evaluation protocol).

Training episodes always use training goals (variations 0..49 of
`cpd_jax.envs.variations`), cycling through `data.first_train_variation ..
+ data.num_train_variations - 1`. Evaluation follows `eval.protocol`:

  "heldout"          `eval.episodes_per_task` episodes on consecutive variations from
                     `eval.first_variation` (default 50, the first held-out goal), one
                     episode per goal. Held-out means disjoint from the training goals:
                     `check_goal_split` refuses a config whose evaluation goals overlap
                     the training goals, by index and by value, before any work starts.
  "metaworld_plus"   Meta-World+'s multi-task evaluation: episodes on the training goals
                     0..49 (50 per task by default), i.e. how well the training goals are
                     fitted, not generalisation.

Both count an episode as a success if `info["success"]` is true at any step of its 500
(Meta-World+; the paper's §A.3 says "at the end of the episode"). Every result file
carries `describe(config)`, so it says which protocol produced it.
"""


from cpd_jax.envs import MAX_EPISODE_STEPS
from cpd_jax.envs import variations as variations_lib
from cpd_jax.errors import UserError

PROTOCOLS = ("heldout", "metaworld_plus")
_DESCRIPTIONS = {
    "heldout": "held-out goals (MT50 seed {seed}+ goal stream, each >= {sep} m from every "
               "training goal), one episode per goal",
    "metaworld_plus": "Meta-World+ MT protocol: episodes on the training goals "
                      "(MT50 seed 0), one episode per goal",
}


class GoalOverlapError(UserError):
    """A held-out evaluation would use goals the training data uses."""


def _span(variations) -> str:
    v = sorted(set(int(x) for x in variations))
    if v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}..{v[-1]}"
    return ", ".join(map(str, v))


def train_variations(data_config, num_episodes: int) -> list[int]:
    """Variation of each collected training episode: cycles through the training goals
    `first_train_variation .. first_train_variation + num_train_variations - 1`."""
    first, count = data_config.first_train_variation, data_config.num_train_variations
    if count < 1 or first < 0 or first + count > variations_lib.GOALS_PER_SOURCE:
        raise UserError(
            f"data.first_train_variation={first} and data.num_train_variations={count} "
            f"must select training goals inside 0..{variations_lib.GOALS_PER_SOURCE - 1} "
            f"(variations {variations_lib.FIRST_HELDOUT}.. are the held-out goals)")
    return [first + i % count for i in range(num_episodes)]


def eval_variations(config) -> list[int]:
    """The variation of each evaluation episode of a task, under `config.eval.protocol`."""
    protocol, n = config.eval.protocol, config.eval.episodes_per_task
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown eval.protocol {protocol!r}; choose from {PROTOCOLS}")
    if n < 1:
        raise UserError(f"eval.episodes_per_task must be >= 1, got {n}")
    if protocol == "metaworld_plus":
        if n > variations_lib.GOALS_PER_SOURCE:
            raise UserError(f"eval.protocol='metaworld_plus' has "
                            f"{variations_lib.GOALS_PER_SOURCE} training goals per task; "
                            f"eval.episodes_per_task={n} is more")
        return list(range(n))
    first = config.eval.first_variation
    if first < 0 or first + n > variations_lib.NUM_VARIATIONS:
        raise UserError(f"eval.first_variation={first} + eval.episodes_per_task={n} runs "
                        f"past the {variations_lib.NUM_VARIATIONS} variations "
                        f"(held-out goals are {variations_lib.FIRST_HELDOUT}.."
                        f"{variations_lib.NUM_VARIATIONS - 1})")
    return list(range(first, first + n))


def check_goal_split(config, tasks) -> None:
    """Raises `GoalOverlapError` (naming the overlap and the fix) when the "heldout"
    protocol would evaluate on a goal the training data of any of `tasks` uses."""
    if config.eval.protocol != "heldout":
        return
    train = train_variations(config.data, config.data.episodes_per_task)
    evals = eval_variations(config)
    shared = sorted(set(train) & set(evals))
    if shared:
        raise GoalOverlapError(
            f"eval.protocol='heldout' would evaluate on variations {_span(shared)}, which "
            f"the training data uses (training goals {_span(train)}); set "
            f"eval.first_variation >= {variations_lib.FIRST_HELDOUT} (the held-out goals) "
            "or use eval.protocol='metaworld_plus' to evaluate on training goals")
    train_goals = sorted(set(train))
    for task in tasks:
        vecs = variations_lib.all_rand_vecs()[task]
        for v in evals:
            if not variations_lib.separated(vecs[v], vecs[train_goals]):
                raise GoalOverlapError(
                    f"{task}: held-out variation {v} is within "
                    f"{variations_lib.MIN_GOAL_SEPARATION} of a training goal")


def check_data_goals(task: str, data_variations, expected) -> None:
    """Refuses teacher rollouts whose episodes were not collected on the `expected`
    goals (e.g. a data directory shared with a run of another goal split)."""
    if list(map(int, data_variations)) != list(map(int, expected)):
        raise UserError(
            f"the {task} rollouts on disk were collected on variations "
            f"{_span(data_variations)}, but this run needs {_span(expected)}; point "
            "data.dir at a fresh directory (or delete the old rollouts)")


def describe(config) -> dict:
    """What a result file says about how it was evaluated."""
    protocol = config.eval.protocol
    return {"protocol": protocol,
            "description": _DESCRIPTIONS[protocol].format(
                seed=variations_lib.HELDOUT_SEED, sep=variations_lib.MIN_GOAL_SEPARATION),
            "variations": eval_variations(config),
            "episodes_per_task": config.eval.episodes_per_task,
            "success": f"info['success'] at any step of a {MAX_EPISODE_STEPS}-step episode",
            "training_goals": _span(train_variations(config.data,
                                                     config.data.episodes_per_task))}
