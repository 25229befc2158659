"""Replay selection (paper §4.4): DPP greedy MAP, farthest-first, uniform random.

Per-trajectory features: each trajectory is cut into non-overlapping slices of
`slice_len` steps (default 20, the student's sequence length), each slice is averaged,
the slice means are concatenated and the row is L2-normalised, so the DPP kernel
L = V V^T is a cosine-similarity kernel (every item has the same "quality" L_ii = 1 and
the selection is driven by diversity alone).

`greedy_map` is the fast greedy MAP inference of Chen, Zhang & Zhou (2018), Alg. 1:
the greedy step "add the item that maximises log det L_S" equals "add the item with
the largest d_i^2 = L_ii - |c_i|^2", the squared residual of item i after projecting
onto the span of the selected items; c_i (incremental Cholesky rows) and d_i^2 are
updated in O(N (D + m)) per step, O(m N (D + m)) in all, without forming L
(rows of L are computed on the fly as V v_j). Jitted, `lax.fori_loop`.

Degenerate sets: once every remaining d_i^2 <= eps (the selected items already span
all remaining ones, det L_S = 0 for any addition), Chen et al. stop; here the budget is
always filled: the argmax is still taken (so items stay distinct) but its Cholesky row
is set to zero, i.e. later picks follow the order of the remaining residuals.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_SLICE_LEN = 20  # paper: slices of the student's sequence length
DEFAULT_FRACTION = 0.1  # paper: replay at most 10% of the stage's distillation data
DEFAULT_EPS = 1e-10  # residuals below this count as linearly dependent
METHODS = ("dpp", "farthest_first", "random")


def trajectory_features(obs, slice_len: int = DEFAULT_SLICE_LEN, center: bool = False):
    """float32[N, T, D] -> float32[N, (T // slice_len) * D], rows of unit L2 norm.

    Trailing steps that do not fill a slice are dropped. center=True subtracts the
    mean over the N trajectories before normalising (an option, not the paper's rule:
    it stops features that are constant across the set, e.g. a task's fixed goal, from
    dominating the cosine similarities).
    """
    obs = jnp.asarray(obs, jnp.float32)
    n, t, d = obs.shape
    num_slices = t // slice_len
    if num_slices == 0:
        raise ValueError(f"trajectories of {t} steps are shorter than one slice ({slice_len})")
    slices = obs[:, :num_slices * slice_len].reshape(n, num_slices, slice_len, d)
    feats = slices.mean(axis=2).reshape(n, num_slices * d)
    if center:
        feats = feats - feats.mean(axis=0, keepdims=True)
    norm = jnp.linalg.norm(feats, axis=1, keepdims=True)
    return feats / jnp.maximum(norm, 1e-12)


def replay_budget(num_items: int, fraction: float = DEFAULT_FRACTION, min_count: int = 1) -> int:
    """floor(fraction * num_items), at least min_count (a tiny stage still leaves a
    trace), at most num_items."""
    return int(min(num_items, max(min_count, math.floor(fraction * num_items))))


@functools.partial(jax.jit, static_argnames=("m",))
def greedy_map(features, m: int, eps: float = DEFAULT_EPS):
    """Fast greedy MAP of the DPP with kernel L = V V^T (Chen et al. 2018, Alg. 1).

    features: float32[N, D] (V). Returns (indices int32[m] in selection order,
    gains float32[m]: d_j^2 of each pick, so log det L_S = sum(log gains) over the
    non-degenerate prefix).
    """
    v = jnp.asarray(features, jnp.float32)
    n = v.shape[0]
    if m > n:
        raise ValueError(f"cannot select {m} of {n} items")
    d2 = jnp.sum(v * v, axis=1)  # diag(L)
    chol = jnp.zeros((m, n), jnp.float32)  # row j: c_{., j} of every item
    taken = jnp.zeros(n, bool)

    def body(j, carry):
        chol, d2, taken, idx, gains = carry
        i = jnp.argmax(jnp.where(taken, -jnp.inf, d2))
        gain = d2[i]
        ok = gain > eps
        l_row = v @ v[i]  # L[i, :], computed on the fly
        # rows >= j of chol are still zero, so the full contraction is the prefix sum
        e = (l_row - chol[:, i] @ chol) / jnp.sqrt(jnp.where(ok, gain, 1.0))
        e = jnp.where(ok, e, 0.0)
        chol = chol.at[j].set(e)
        d2 = d2 - e * e
        return chol, d2, taken.at[i].set(True), idx.at[j].set(i), gains.at[j].set(gain)

    init = (chol, d2, taken, jnp.zeros(m, jnp.int32), jnp.zeros(m, jnp.float32))
    _, _, _, idx, gains = jax.lax.fori_loop(0, m, body, init)
    return idx, gains


def naive_greedy_step(kernel: np.ndarray, selected: list[int], chunk: int = 256) -> int:
    """One brute-force greedy step: the candidate c maximising slogdet(L[S + {c}]).

    kernel float64[N, N]; candidates are evaluated `chunk` at a time (memory
    O(chunk |S|^2)). Ties go to the lowest index, as in `greedy_map`.
    """
    n = kernel.shape[0]
    taken = np.zeros(n, bool)
    taken[selected] = True
    cand = np.flatnonzero(~taken)
    best, best_logdet = -1, -np.inf
    for start in range(0, len(cand), chunk):
        c = cand[start:start + chunk]
        sets = np.concatenate([np.tile(np.asarray(selected, int), (len(c), 1)), c[:, None]],
                              axis=1)  # [C, |S|+1]
        sign, logdet = np.linalg.slogdet(kernel[sets[:, :, None], sets[:, None, :]])
        logdet = np.where(sign > 0, logdet, -np.inf)
        j = int(np.argmax(logdet))
        if best < 0 or logdet[j] > best_logdet:
            best, best_logdet = int(c[j]), logdet[j]
    return best


def naive_greedy_logdet(features, m: int, chunk: int = 256) -> np.ndarray:
    """Greedy log-det maximisation by brute force (numpy): at every step evaluate
    slogdet(L[S + {c}]) for every candidate c. O(m N |S|^3); the reference for tests and
    the baseline of `benchmarks/dpp_selection.py`. Returns int64[m]."""
    v = np.asarray(features, np.float64)
    kernel = v @ v.T
    selected: list[int] = []
    for _ in range(m):
        selected.append(naive_greedy_step(kernel, selected, chunk))
    return np.asarray(selected)


@functools.partial(jax.jit, static_argnames=("m",))
def farthest_first(features, m: int):
    """k-center greedy: start from the item farthest from the mean, then repeatedly
    add the item farthest (Euclidean) from its nearest selected item.
    features float32[N, D] -> int32[m]."""
    v = jnp.asarray(features, jnp.float32)
    first = jnp.argmax(jnp.sum((v - v.mean(0)) ** 2, axis=1))

    def sq_dist(i):
        return jnp.sum((v - v[i]) ** 2, axis=1)

    def body(j, carry):
        min_d, idx = carry
        i = jnp.argmax(min_d)  # selected items have min_d = 0 (-1 if duplicates exist)
        return jnp.minimum(min_d, sq_dist(i)).at[i].set(-1.0), idx.at[j].set(i)

    min_d = sq_dist(first).at[first].set(-1.0)
    idx = jnp.zeros(m, jnp.int32).at[0].set(first)
    _, idx = jax.lax.fori_loop(1, m, body, (min_d, idx))
    return idx


def uniform_random(key, num_items: int, m: int):
    """m distinct indices, uniformly at random. -> int32[m]."""
    return jax.random.choice(key, num_items, (m,), replace=False).astype(jnp.int32)


def select(features, m: int, method: str = "dpp", key=None):
    """Indices int32[m] of the selected rows of features float32[N, D].

    method: "dpp" (greedy MAP), "farthest_first" or "random" (needs key).
    """
    if method == "dpp":
        return greedy_map(features, m)[0]
    if method == "farthest_first":
        return farthest_first(features, m)
    if method == "random":
        if key is None:
            raise ValueError("method 'random' needs a PRNG key")
        return uniform_random(key, features.shape[0], m)
    raise ValueError(f"unknown selection method {method!r}; choose from {METHODS}")


def select_replay(obs, task_ids, fraction: float = DEFAULT_FRACTION, method: str = "dpp",
                  key=None, slice_len: int = DEFAULT_SLICE_LEN, per_task: bool = True,
                  center: bool = False) -> np.ndarray:
    """The trajectories of one stage to keep for replay.

    obs float32[N, T, D]; task_ids int[N]. per_task=True gives every task its own budget
    replay_budget(n_task, fraction) and selects within the task (each task stays
    represented); per_task=False selects replay_budget(N, fraction) from the pooled set.
    Returns int64[M] indices into the N trajectories, sorted.
    """
    task_ids = np.asarray(task_ids)
    feats = trajectory_features(obs, slice_len, center=center)
    groups = [np.flatnonzero(task_ids == t) for t in np.unique(task_ids)] if per_task \
        else [np.arange(len(task_ids))]
    key = jax.random.key(0) if key is None else key
    picked = []
    for g, rows in enumerate(groups):
        m = replay_budget(len(rows), fraction)
        local = select(feats[rows], m, method, jax.random.fold_in(key, g))
        picked.append(rows[np.asarray(local)])
    return np.sort(np.concatenate(picked))
