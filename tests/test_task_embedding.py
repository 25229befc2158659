"""Contrastive task embedding: InfoNCE golden values, padding, and task separation on
scripted-teacher trajectories of 5 Meta-World tasks (reference backend)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.student import task_embedding as te

TASKS = ("reach-v3", "push-v3", "drawer-close-v3", "button-press-topdown-v3",
         "window-open-v3")
TRAIN_VARIATIONS = (0, 1, 2, 3)
TEST_VARIATIONS = (10, 11, 12, 13)  # held-out episodes (other object/goal positions)
STEPS = 100  # first steps of each episode keep the collection short
WINDOW = 10


def _numpy_info_nce(z, y, tau):
    """Loop reference of the multi-positive InfoNCE in the module doc."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / tau
    losses = []
    for i in range(len(z)):
        pos = [j for j in range(len(z)) if j != i and y[j] == y[i]]
        neg = [j for j in range(len(z)) if y[j] != y[i]]
        if not pos:
            continue
        neg_sum = sum(np.exp(s[i, j]) for j in neg)
        losses.append(-np.mean([np.log(np.exp(s[i, p]) / (np.exp(s[i, p]) + neg_sum))
                                for p in pos]))
    return np.mean(losses)


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 16))
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])  # task 3 has no positive
    for tau in (0.1, 0.5):
        got = float(te.info_nce_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y), tau))
        np.testing.assert_allclose(got, _numpy_info_nce(z, y, tau), rtol=1e-5)
    # perfectly separated embeddings give a loss near 0, collapsed ones log(1 + #neg)
    sep = np.eye(16)[y]
    assert float(te.info_nce_loss(jnp.asarray(sep), jnp.asarray(y), 0.05)) < 1e-6
    coll = np.ones((12, 16))
    np.testing.assert_allclose(float(te.info_nce_loss(jnp.asarray(coll), jnp.asarray(y), 0.1)),
                               _numpy_info_nce(coll, y, 0.1), rtol=1e-5)


def test_embed_ignores_padding_and_windows():
    cfg = te.TaskEncoderConfig(hidden=(8,))
    params = te.init_params(jax.random.key(0), cfg, jnp.zeros(44), jnp.ones(44))
    rng = np.random.default_rng(1)
    obs, act, rew = rng.normal(size=(3, 6, 39)), rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 6))
    valid = np.ones((3, 6), bool)
    valid[1, :2] = False  # left padding
    z = te.embed(params, obs, act, rew, valid)
    assert z.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    obs2 = obs.copy()
    obs2[1, :2] = 1e3  # garbage in padded steps changes nothing
    np.testing.assert_allclose(te.embed(params, obs2, act, rew, valid), z, atol=1e-6)
    short = te.embed(params, obs[1:2, 2:], act[1:2, 2:], rew[1:2, 2:], valid[1:2, 2:])
    np.testing.assert_allclose(short[0], z[1], atol=1e-5)

    w, traj = te.make_windows(obs, act, rew, window=4, stride=2, length=np.array([6, 6, 3]))
    # starts 0 and 2 per trajectory; trajectory 2 (3 valid steps) is partly padding
    assert w.obs.shape == (6, 4, 39) and w.valid.shape == (6, 4)
    np.testing.assert_array_equal(traj, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(w.valid[4:], [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(w.obs[1], obs[0, 2:6].astype(np.float32))


@pytest.fixture(scope="module")
def scripted_data():
    """obs f32[5*E, STEPS, 39], actions, rewards, task ids for train and test episodes."""
    from metaworld.policies import ENV_POLICY_MAP
    from cpd_jax.envs import make_env

    out = {}
    variations = TRAIN_VARIATIONS + TEST_VARIATIONS
    tasks = [t for t in TASKS for _ in variations]
    env = make_env("reference", tasks)
    policies = [ENV_POLICY_MAP[t]() for t in tasks]
    obs = env.reset([v for _ in TASKS for v in variations])
    trajs = {"obs": [], "actions": [], "rewards": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(STEPS):
            act = np.clip(np.stack([p.get_action(o) for p, o in zip(policies, obs)]), -1, 1)
            tr = env.step(act.astype(np.float32))
            trajs["obs"].append(obs)
            trajs["actions"].append(act.astype(np.float32))
            trajs["rewards"].append(tr.reward)
            obs = tr.obs
    arrays = {k: np.stack(v, axis=1) for k, v in trajs.items()}  # [B, T, ...]
    ids = np.repeat(np.arange(len(TASKS)), len(variations))
    is_test = np.tile(np.isin(variations, TEST_VARIATIONS), len(TASKS))
    for split, sel in (("train", ~is_test), ("test", is_test)):
        out[split] = ({k: a[sel] for k, a in arrays.items()}, ids[sel])
    return out


def test_separates_scripted_tasks(scripted_data):
    (train, y_train), (test, y_test) = scripted_data["train"], scripted_data["test"]
    w_train, traj_train = te.make_windows(train["obs"], train["actions"], train["rewards"],
                                          WINDOW, stride=WINDOW // 2)
    w_test, traj_test = te.make_windows(test["obs"], test["actions"], test["rewards"], WINDOW)
    cfg = te.TaskEncoderConfig(steps=150, batch_size=128, hidden=(64, 64))
    params, losses = te.train_task_encoder(jax.random.key(0), w_train, y_train[traj_train],
                                           cfg, return_losses=True)
    assert losses[-10:].mean() < losses[:10].mean()
    embed = jax.jit(te.embed)
    z_train = embed(params, *w_train)
    z_test = embed(params, *w_test)
    acc = te.nearest_centroid_accuracy(z_train, y_train[traj_train], z_test, y_test[traj_test])
    print(f"held-out window accuracy {acc:.3f} over {len(traj_test)} windows; "
          f"loss {losses[:10].mean():.3f} -> {losses[-10:].mean():.3f}")
    assert acc >= 0.95
