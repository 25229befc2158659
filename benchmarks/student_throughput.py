"""Training throughput of the paper-size student on this machine, as a ratio.

Measures samples/s (windows of L steps) of the jitted distillation step for the
Table 6 student (dim 256, 5 blocks, 8 experts, L=20, batch 128) and its achieved
FLOP/s (XLA's cost analysis of the compiled step / measured time) as a fraction of a
large `jnp.dot` measured in the same process: the machine's practical peak.

    python benchmarks/student_throughput.py [--batch 128] [--steps 20]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax import distillation
from cpd_jax.configs import default
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.pipeline import init_student


def _time(fn, *args, repeats):
    out = fn(*args)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def matmul_flops_per_s(n=2048, repeats=10) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    dot = jax.jit(jnp.dot)
    return 2 * n**3 / _time(dot, a, a, repeats=repeats)


def student_step(batch: int):
    c = default.get_config()
    c.distill.batch_size = batch
    model, params = init_student(c, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    traj = Trajectories(task="reach-v3", obs=rng.normal(size=(8, 500, 39)).astype(np.float32),
                        actions=rng.uniform(-1, 1, (8, 500, 4)).astype(np.float32),
                        rewards=np.zeros((8, 500), np.float32),
                        success=np.zeros((8, 500), bool), lengths=np.full(8, 500, np.int32),
                        variations=np.arange(8, dtype=np.int32))
    source = distillation.make_window_source([traj], c.student.seq_len)
    tx = distillation.make_optimizer(c.distill, 1000)
    step = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
    state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                      step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(1))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    return step, state, source, n_params


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    step, state, source, n_params = student_step(args.batch)
    t0 = time.perf_counter()
    compiled = step.lower(state, source).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    step_flops = float(cost.get("flops", float("nan")))

    def run(s):
        return compiled(s, source)[0]

    step_s = _time(run, state, repeats=args.steps)
    peak = matmul_flops_per_s()
    achieved = step_flops / step_s
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: student {n_params/1e6:.2f}M "
          f"params, batch {args.batch} x L 20, compile {compile_s:.1f} s")
    print(f"train step {step_s*1e3:.1f} ms -> {args.batch/step_s:.0f} samples/s "
          f"({args.batch*20/step_s:.0f} tokens/s)")
    print(f"step FLOPs (XLA cost analysis) {step_flops/1e9:.2f} GFLOP -> "
          f"{achieved/1e9:.1f} GFLOP/s")
    print(f"baseline jnp.dot 2048^2: {peak/1e9:.1f} GFLOP/s; ratio achieved/matmul = "
          f"{achieved/peak:.3f}")


if __name__ == "__main__":
    main()
