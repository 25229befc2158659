"""Routing statistics per layer and task, token order, heatmap and PCA plots."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.evaluation import routing_stats as rs
from cpd_jax.student.transformer import Student, StudentSpec


def test_fractions_golden():
    # 2 layers, 4 tokens, top-2 choices, 3 experts
    idx = np.array([[[0, 1], [0, 2], [1, 0], [2, 1]],
                    [[2, 2], [2, 0], [1, 2], [0, 2]]])
    f = rs.expert_fractions(idx, 3)
    np.testing.assert_allclose(f, [[3 / 8, 3 / 8, 2 / 8], [2 / 8, 1 / 8, 5 / 8]])
    mask = np.array([True, True, False, False])
    np.testing.assert_allclose(rs.expert_fractions(idx, 3, mask)[0], [2 / 4, 1 / 4, 1 / 4])
    tasks, pt = rs.per_task_fractions(idx, np.array([5, 5, 9, 9]), 3)
    np.testing.assert_array_equal(tasks, [5, 9])
    np.testing.assert_allclose(pt[0], [[2 / 4, 1 / 4, 1 / 4], [1 / 4, 2 / 4, 1 / 4]])
    np.testing.assert_allclose(pt.sum(-1), 1.0)
    _, empty = rs.per_task_fractions(idx, np.array([5, 5, 9, 9]), 3, tasks=[5, 7])
    np.testing.assert_array_equal(empty[:, 1], 0.0)


def test_token_order_matches_student():
    """token_task_ids assumes batch-major flattening: check it against the student by
    running each sequence alone (capacity_factor 0: tokens are independent)."""
    spec = StudentSpec(dim=16, num_blocks=1, num_heads=2, num_experts=4, mlp_multiplier=2,
                       seq_len=5)
    x = jax.random.normal(jax.random.key(0), (3, 5, 7))
    valid = jnp.ones((3, 5), bool)
    model = Student(spec)
    params = model.init(jax.random.key(1), x, valid)["params"]
    # a sharper router so sequences route differently
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 50 if "gate_" in jax.tree_util.keystr(p) else a, params)
    apply = jax.jit(model.apply)
    _, aux = apply({"params": params}, x, valid)
    idx = np.asarray(aux["expert_index"])
    token_tasks = rs.token_task_ids([10, 11, 12], 5)
    for b in range(3):
        _, alone = apply({"params": params}, x[b:b + 1], valid[b:b + 1])
        np.testing.assert_array_equal(idx[:, token_tasks == 10 + b],
                                      np.asarray(alone["expert_index"]))
    tasks, frac = rs.per_task_fractions(idx, token_tasks, spec.num_experts)
    assert frac.shape == (1, 3, 4)
    np.testing.assert_allclose(frac.sum(-1), 1.0)


def test_plots(tmp_path):
    rng = np.random.default_rng(0)
    frac = rng.dirichlet(np.ones(6), size=(3, 4))  # [layers 3, tasks 4, experts 6]
    paths = rs.plot_routing_heatmaps(frac, ["reach", "push", "drawer", "window"],
                                     str(tmp_path / "plots"))
    assert len(paths) == 4
    z = np.concatenate([rng.normal(loc=3 * t, size=(20, 16)) for t in range(4)])
    ids = np.repeat(np.arange(4), 20)
    paths.append(rs.plot_task_embedding_pca(z, ids, {0: "a", 1: "b", 2: "c", 3: "d"},
                                            str(tmp_path / "plots")))
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    coords, ratio = rs.pca_2d(z)
    assert coords.shape == (80, 2) and ratio[0] > 0.5
    path = str(tmp_path / "json" / "r.json")
    assert rs.write_fractions_json(path, [0, 1, 2, 3], frac[0:1]) == path
    with open(path) as f:
        saved = json.load(f)
    assert saved["tasks"] == ["0", "1", "2", "3"]
    np.testing.assert_allclose(saved["fractions"], frac[0:1])
