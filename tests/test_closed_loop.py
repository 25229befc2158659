"""Closed-loop evaluation: stopping an episode at its first success gives exactly the
success of the full 500-step episode (reference backend, metaworld's scripted policies)."""

import numpy as np

from cpd_jax.envs import make_env
from cpd_jax.evaluation import closed_loop
from cpd_jax.teachers import scripted

TASKS = ["reach-v3", "reach-v3", "drawer-close-v3", "drawer-close-v3"]
VARIATIONS = [50, 51, 50, 51]


def _policy(tasks, noise):
    """History -> actions: each env's scripted policy on its newest observation, with a
    fixed per-env action offset (noise) so some episodes fail."""
    policies = [scripted.ScriptedTeacher(t) for t in tasks]

    def act(history):
        obs = np.asarray(history.obs[:, -1])
        return np.stack([p.action_mean(o[None])[0] for p, o in zip(policies, obs)]) + noise

    return act


def test_stopping_at_success_gives_the_full_episodes_success():
    noise = np.array([[0, 0, 0, 0], [0.9, 0, 0, 0], [0, 0, 0, 0], [0, 0.9, 0, 0]], np.float32)
    out = {}
    for stop in (False, True):
        env = make_env("reference", TASKS)
        out[stop] = closed_loop.rollout_success(env, _policy(TASKS, noise), VARIATIONS, 4,
                                                stop_at_success=stop)
    np.testing.assert_array_equal(out[True]["success"], out[False]["success"])
    assert out[True]["success"].any()
    assert (out[False]["steps"] == 500).all()
    succeeded = out[True]["success"]
    assert (out[True]["steps"][succeeded] < 500).all()
    assert (out[True]["steps"][~succeeded] == 500).all()


def test_released_reference_envs_are_reused_and_give_the_same_episodes():
    """A second evaluation reuses the first one's metaworld envs (no rebuild) and its
    episodes are identical to the first's."""
    from cpd_jax.envs import reference

    noise = np.zeros((4, 4), np.float32)
    noise[1, 0] = 0.9
    results, envs = [], []
    for _ in range(2):
        env = make_env("reference", TASKS)
        envs.append(list(env.metaworld_envs))
        results.append(closed_loop.rollout_success(env, _policy(TASKS, noise), VARIATIONS, 4,
                                                   num_steps=60, stop_at_success=False))
        env.close()
    assert {id(e) for e in envs[0]} == {id(e) for e in envs[1]}  # reused, not rebuilt
    for key in ("success", "return"):
        np.testing.assert_array_equal(results[0][key], results[1][key])
    assert reference._IDLE["reach-v3"]  # handed back after close


def test_episodes_run_in_waves_give_the_one_batch_numbers():
    make = lambda ts: make_env("reference", ts)
    tasks, variations = ["reach-v3", "drawer-close-v3"], [50, 51, 52]

    def run(max_envs):
        policy_of = {}

        def policy(history):  # scripted policy of each env's task, whatever the batch
            ids = np.asarray(history.task_id)
            for i in set(ids.tolist()):
                policy_of.setdefault(i, scripted.ScriptedTeacher(
                    {0: "reach-v3", 5: "drawer-close-v3"}[i]))
            obs = np.asarray(history.obs[:, -1])
            return np.stack([policy_of[i].action_mean(o[None])[0] for i, o in zip(ids, obs)])

        return closed_loop.evaluate_tasks(make, policy, tasks, variations, 4, num_steps=80,
                                          stop_at_success=False, max_envs=max_envs)

    one_batch, waves = run(6), run(2)  # 3 variations at once vs one per wave
    assert one_batch == waves
    assert waves["reach-v3"]["episodes"] == 3
