"""Data parallelism: on 4 forced host devices the sharded step (`make_train_step` with a
mesh, as the pipeline builds it) equals the 1-device step."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cpd_jax import parallel

NUM_DEVICES = 4
NUM_STEPS = 3
SGD_LR = 0.1

# The tiny student and its window source of every script below (each runs in a fresh
# interpreter, after its own set-up).
_TINY_STUDENT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from cpd_jax import distillation, parallel
    from cpd_jax.configs import quickstart
    from cpd_jax.data.rollouts import Trajectories
    from cpd_jax.pipeline import init_student
    c = quickstart.get_config()
    c.student.dim, c.student.num_blocks, c.student.num_heads = 16, 1, 2
    c.student.seq_len, c.student.num_experts = 4, 2
    c.distill.batch_size = 16
    rng = np.random.default_rng(0)
    n, t = 4, 9
    trajs = [Trajectories(task=task, obs=rng.normal(size=(n, t, 39)).astype(np.float32),
                          actions=rng.uniform(-1, 1, (n, t, 4)).astype(np.float32),
                          rewards=rng.normal(size=(n, t)).astype(np.float32),
                          success=np.zeros((n, t), bool), lengths=np.full(n, t, np.int32),
                          variations=np.arange(n, dtype=np.int32))
             for task in ("reach-v3", "push-v3")]
    source = distillation.make_window_source(trajs, c.student.seq_len)
    model, params = init_student(c, jax.random.PRNGKey(0))
""")

# Runs in a fresh interpreter: the device count is fixed when JAX first starts.
_SCRIPT = (textwrap.dedent("""
    import json
    import jax
    assert jax.device_count() == %(devices)d, jax.devices()
    SGD_LR = %(sgd_lr)r
""") + _TINY_STUDENT + textwrap.dedent("""

    mesh = parallel.make_mesh()
    src4 = parallel.replicate(source, mesh)

    def run(tx):
        state0 = distillation.DistillState(params=params, opt_state=tx.init(params),
                                           step=jnp.zeros((), jnp.int32),
                                           key=jax.random.PRNGKey(1))
        single = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
        sharded = distillation.make_train_step(model, tx, c.distill, c.student.task_context,
                                               mesh=mesh)
        s1, s4 = state0, parallel.replicate(state0, mesh)
        hlo = sharded.lower(s4, src4).compile().as_text()
        out = {"losses1": [], "losses4": [], "gnorm1": [], "gnorm4": []}
        for _ in range(%(steps)d):
            s1, m1 = single(s1, source)
            s4, m4 = sharded(s4, src4)
            out["losses1"].append(float(m1["loss"])); out["losses4"].append(float(m4["loss"]))
            out["gnorm1"].append(float(m1["grad_norm"])); out["gnorm4"].append(float(m4["grad_norm"]))
        leaves1 = jax.tree_util.tree_leaves_with_path(s1.params)
        leaves4 = jax.tree_util.tree_leaves(s4.params)
        diffs = {jax.tree_util.keystr(k): float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                 for (k, a), b in zip(leaves1, leaves4)}
        worst = max(diffs, key=diffs.get)
        leaf = leaves4[0]
        out.update(max_param_diff=diffs[worst], worst_leaf=worst,
                   param_devices=len(leaf.sharding.device_set),
                   param_replicated=bool(leaf.sharding.is_fully_replicated),
                   all_reduce_in_hlo="all-reduce" in hlo,
                   keys_equal=bool(np.array_equal(np.asarray(s1.key), np.asarray(s4.key))))
        return out

    # SGD: the update is linear in the gradient, so params inherit the gradients' (tiny)
    # summation-order differences. AdamW's first steps are ~lr * sign(g): for leaves whose
    # gradient is ~0 (rounding noise, |g| ~ Adam eps) the sign is noise and params may
    # differ by up to ~lr, so for AdamW only losses and gradient norms are compared.
    print("RESULT " + json.dumps({"sgd": run(optax.sgd(SGD_LR)),
                                  "adamw": run(distillation.make_optimizer(c.distill, 100))}))
""")) % {"devices": NUM_DEVICES, "steps": NUM_STEPS, "sgd_lr": SGD_LR}


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}",
               PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_sharded_step_matches_single_device(result, opt):
    r = result[opt]
    assert r["keys_equal"]
    for a, b in zip(r["losses1"] + r["gnorm1"], r["losses4"] + r["gnorm4"]):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    if opt == "sgd":
        assert r["max_param_diff"] < 1e-5, r["worst_leaf"]


def test_batch_really_split_and_params_replicated(result):
    r = result["adamw"]
    assert r["all_reduce_in_hlo"]  # gradients are summed across batch shards
    assert r["param_devices"] == NUM_DEVICES and r["param_replicated"]


def test_batch_must_divide_over_devices():
    import jax
    mesh = parallel.make_mesh(jax.devices()[:1])
    parallel.check_batch_divisible(3, mesh)  # 1 device: anything divides
    fake = type("FakeMesh", (), {"shape": {parallel.DATA_AXIS: 4}})()
    with pytest.raises(ValueError, match="multiple of 4"):
        parallel.check_batch_divisible(6, fake)


def test_distributed_kwargs_pass_only_the_fields_set():
    from cpd_jax.configs import default
    p = default.get_config().parallel
    assert parallel.distributed_kwargs(p) == {}  # all auto-detected
    p.coordinator_address, p.num_processes, p.process_id = "10.0.0.1:1234", 4, 0
    assert parallel.distributed_kwargs(p) == {"coordinator_address": "10.0.0.1:1234",
                                              "num_processes": 4, "process_id": 0}


def test_process_shares_hold_every_item_exactly_once():
    """Against a brute-force count: for every (items, processes), each item is in exactly
    one share and the shares differ in size by at most one."""
    for n_items in range(0, 9):
        items = [f"task{i}" for i in range(n_items)]
        for count in range(1, 5):
            shares = [parallel.process_share(items, i, count) for i in range(count)]
            assert sorted(sum(shares, [])) == sorted(items)
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_process_identity_from_config_then_slurm(monkeypatch):
    import ml_collections
    p = ml_collections.ConfigDict({"num_processes": -1, "process_id": -1})
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert parallel.process_identity(p) == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "3")
    assert parallel.process_identity(p) == (2, 3)
    p.num_processes, p.process_id = 4, 1  # the config wins over the environment
    assert parallel.process_identity(p) == (1, 4)
    p.process_id = 4
    with pytest.raises(ValueError, match="not in"):
        parallel.process_identity(p)


# Process i of 2 (one CPU device each, gloo collectives): the sharded step over both
# processes' devices against the single-device step run locally on the same data.
_TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, ml_collections
    from cpd_jax import parallel

    process_id, port = int(sys.argv[1]), sys.argv[2]
    parallel.maybe_initialize_distributed(ml_collections.ConfigDict({"parallel": {
        "multi_host": True, "coordinator_address": f"127.0.0.1:{port}",
        "num_processes": 2, "process_id": process_id}}))
    assert jax.process_count() == 2 and jax.device_count() == 2
""") + _TINY_STUDENT + textwrap.dedent("""
    tx = optax.sgd(0.1)
    state0 = distillation.DistillState(params=params, opt_state=tx.init(params),
                                       step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(1))
    mesh = parallel.make_mesh()  # both processes' devices
    single = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
    sharded = distillation.make_train_step(model, tx, c.distill, c.student.task_context, mesh=mesh)
    s1, s2 = state0, parallel.replicate(state0, mesh)
    src2 = parallel.replicate(source, mesh)
    losses1, losses2 = [], []
    for _ in range(3):
        s1, m1 = single(s1, source)
        s2, m2 = sharded(s2, src2)
        losses1.append(float(m1["loss"]))
        losses2.append(float(parallel.local_value(m2["loss"])))
    p1, p2 = jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(
        parallel.local_value(s2.params))
    leaf = jax.tree_util.tree_leaves(s2.params)[0]
    print("RESULT " + json.dumps({
        "losses1": losses1, "losses2": losses2,
        "max_param_diff": max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(p1, p2)),
        "param_devices": len(leaf.sharding.device_set),
        "addressable": len(leaf.addressable_shards)}))
""")


def test_two_process_step_equals_single_process_step(tmp_path):
    """Two real processes form one JAX cluster: the data-parallel step over both equals
    the single-device step on the same global batch (float summation order only)."""
    from tests.helpers import free_port, run_processes

    script = tmp_path / "two_process_step.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    port = str(free_port())
    runs = run_processes([[sys.executable, str(script), str(i), port] for i in range(2)],
                         [env] * 2, timeout=300)
    results = []
    for code, out in runs:
        assert code == 0, out[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    for r in results:
        assert r["param_devices"] == 2 and r["addressable"] == 1  # one array, 2 processes
        assert r["losses2"] == pytest.approx(r["losses1"], rel=1e-5)
        assert r["max_param_diff"] < 1e-5
    assert results[0]["losses2"] == results[1]["losses2"]  # both see the same global step
