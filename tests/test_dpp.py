"""Replay selection: greedy MAP == brute-force greedy log-det, one pick per cluster,
features, budgets, and the replay buffer."""

import jax
import numpy as np
import pytest

from cpd_jax.data import dpp
from cpd_jax.data.replay import GOAL, ReplayBuffer, goal_spread, select_stage


@pytest.mark.parametrize("seed,n,d,m", [(0, 20, 8, 6), (1, 30, 12, 10), (2, 25, 25, 12),
                                        (3, 15, 40, 15)])
def test_greedy_map_equals_brute_force(seed, n, d, m):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=(n, 1))  # varied quality
    idx, gains = dpp.greedy_map(v.astype(np.float32), m)
    np.testing.assert_array_equal(np.asarray(idx), dpp.naive_greedy_logdet(v, m))
    # the gains multiply to det L_S (log det = sum log d_j^2)
    sel = np.asarray(idx)
    _, logdet = np.linalg.slogdet((v @ v.T)[np.ix_(sel, sel)])
    np.testing.assert_allclose(np.sum(np.log(np.asarray(gains, np.float64))), logdet,
                               rtol=1e-3)


def test_greedy_map_fills_budget_past_rank():
    v = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)  # rank 3
    idx, gains = dpp.greedy_map(v, 6)
    assert len(set(np.asarray(idx).tolist())) == 6  # distinct even when degenerate
    assert (np.asarray(gains)[3:] < 1e-4).all()


def _clusters(seed, k=5, per=40, d=30, spread=0.05):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    x = np.repeat(centers, per, axis=0) + spread * rng.normal(size=(k * per, d))
    labels = np.repeat(np.arange(k), per)
    perm = rng.permutation(len(x))
    x = x[perm] / np.linalg.norm(x[perm], axis=1, keepdims=True)
    return x.astype(np.float32), labels[perm]


def test_one_pick_per_cluster_vs_random():
    k, seeds = 5, range(20)
    hits = {"dpp": 0, "farthest_first": 0, "random": 0}
    for seed in seeds:
        x, labels = _clusters(seed, k)
        for method in hits:
            idx = dpp.select(x, k, method, key=jax.random.key(seed))
            hits[method] += len(set(labels[np.asarray(idx)])) == k
    print(hits)
    assert hits["dpp"] == len(seeds)
    assert hits["farthest_first"] == len(seeds)
    # 5 uniform picks cover 5 clusters of 40 with prob ~0.04 -> rarely
    assert hits["random"] <= len(seeds) // 4


def test_trajectory_features():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 47, 3)).astype(np.float32)
    f = np.asarray(dpp.trajectory_features(obs, slice_len=10))
    assert f.shape == (4, 4 * 3)  # 47 // 10 = 4 slices, tail dropped
    raw = obs[:, :40].reshape(4, 4, 10, 3).mean(2).reshape(4, 12)
    np.testing.assert_allclose(f, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    fc = np.asarray(dpp.trajectory_features(obs, 10, center=True))
    np.testing.assert_allclose(np.linalg.norm(fc, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError):
        dpp.trajectory_features(obs, slice_len=50)


def test_budget_and_select_replay():
    assert dpp.replay_budget(131) == 13
    assert dpp.replay_budget(5) == 1  # min_count
    assert dpp.replay_budget(5, min_count=0) == 0
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(50, 40, 5)).astype(np.float32)
    tasks = np.repeat([3, 7], [30, 20])
    for method in dpp.METHODS:
        idx = dpp.select_replay(obs, tasks, 0.1, method, key=jax.random.key(0), slice_len=20)
        assert len(idx) == 5 and len(set(idx)) == 5
        assert (tasks[idx] == 3).sum() == 3 and (tasks[idx] == 7).sum() == 2
    pooled = dpp.select_replay(obs, tasks, 0.2, "dpp", slice_len=20, per_task=False)
    assert len(pooled) == 10
    with pytest.raises(ValueError):
        dpp.select(obs[:, 0], 3, "random")


def test_replay_buffer_accumulates_stages():
    rng = np.random.default_rng(0)

    def stage_data(n, task0):
        return (rng.normal(size=(n, 40, 39)), rng.normal(size=(n, 40, 4)),
                rng.normal(size=(n, 40)), rng.random((n, 40)) > 0.5,
                np.repeat([task0, task0 + 1], n // 2))

    buf = ReplayBuffer.empty()
    assert len(buf) == 0
    for stage, task0 in ((1, 0), (2, 5)):
        part = select_stage(*stage_data(40, task0), stage=stage, fraction=0.1, slice_len=20)
        assert len(part) == 4 and (part.stage == stage).all()
        buf = buf.add(part)
    assert len(buf) == 8
    np.testing.assert_array_equal(buf.tasks(), [0, 1, 5, 6])
    assert buf.obs.shape == (8, 40, 39) and buf.obs.dtype == np.float32
    assert len(buf.for_tasks([5, 6])) == 4
    with pytest.raises(ValueError):
        ReplayBuffer.from_arrays(buf.obs, buf.actions, buf.rewards, buf.success,
                                 buf.task_ids[:3], 1)


def test_goal_spread_against_a_numpy_loop():
    """1 for a buffer of every episode; for the 5 episodes farthest from the centroid,
    the mean of the 5 largest distances over the mean distance (computed by hand)."""
    rng = np.random.default_rng(0)
    goals = {3: rng.normal(size=(50, 3)), 7: rng.uniform(size=(40, 3))}
    obs = np.zeros((90, 2, 39), np.float32)
    obs[:, :, GOAL] = np.concatenate([goals[3], goals[7]])[:, None]
    ids = np.repeat([3, 7], [50, 40])
    whole = ReplayBuffer.from_arrays(obs, obs[..., :4], obs[..., 0], np.zeros(90, bool), ids, 0)
    goals_of = lambda t: goals[t].astype(np.float32)
    assert goal_spread(whole, goals_of) == {3: pytest.approx(1.0), 7: pytest.approx(1.0)}
    d = np.linalg.norm(goals[3] - goals[3].mean(axis=0), axis=1)
    edge = whole.take(np.argsort(-d)[:5])
    assert goal_spread(edge, goals_of) == {3: pytest.approx(np.sort(d)[-5:].mean() / d.mean(),
                                                           rel=1e-5)}
