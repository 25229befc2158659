"""Training throughput of the student on the machine it runs on, and the MoE dispatch, as
ratios.

Two sections, each measured against a baseline timed in the same process:

* student: samples/s (windows of L steps) of the jitted distillation step for the
  Table 6 student (dim 256, 5 blocks, 8 experts, L=20, batch 128) and its achieved
  FLOP/s (XLA's cost analysis of the compiled step / measured time) as a fraction of a
  large `jnp.dot`: the machine's practical peak.
* moe: ms per jitted forward+backward (grad w.r.t. the MoE params and the tokens) of
  one no-drop MoE layer with the new block dispatch (`moe.block_dispatch`, the layer's
  default) against the old full-capacity buffer (`moe.buffer_dispatch` at capacity N,
  E FFNs over all N tokens), `jax.lax.ragged_dot` (on CPU a dense masked lowering) and,
  as the floor, one FFN over the N*k routed rows. Sizes: `cpu` = the CPU configs
  (N = 64 windows x L 10 tokens, dim 64, hidden 256, E = 4, 8, 12), `paper` = Table 6
  (N = 128 x 20, dim 256, hidden 1024, E = 8, 13).

    python benchmarks/student_throughput.py [--sections student,moe] [--batch 128]
        [--steps 20] [--moe_sizes cpu,paper] [--moe_repeats 20]
        [--json out.json] [--markdown out.md]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax import distillation
from cpd_jax.configs import default
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.pipeline import init_student
from cpd_jax.student import moe as moe_lib
from cpd_jax.student import routing as routing_lib
from cpd_jax.student.transformer import StudentSpec

# (tokens N, dim, hidden, expert counts) per --moe_sizes name
MOE_SIZES = {"cpu": (64 * 10, 64, 256, (4, 8, 12)),
             "paper": (128 * 20, 256, 1024, (8, 13))}


def _time(fn, *args, repeats):
    out = fn(*args)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _median_times(fns: dict, args, repeats: int) -> dict:
    """Median seconds per call of each fn(*args), calls interleaved round-robin so that
    load from other processes hits every variant alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))  # compile
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def model_flops_per_step(spec, context_dim: int, batch: int, obs_dim: int = 39) -> float:
    """FLOPs one training step needs (2 per multiply-add; backward = 2x forward), counting
    what the model computes for each token and nothing a dispatch adds: the input
    projections, per block the q/k/v/out projections, attention scores and mix over
    the window, the router and the top-k experts' two matmuls, and the action head.
    float (FLOPs for `batch` windows of `spec.seq_len` tokens)."""
    d, length, hidden = spec.dim, spec.seq_len, spec.mlp_multiplier * spec.dim
    block = (4 * 2 * d * d  # q, k, v, out projections
             + 2 * 2 * length * d  # scores q.k and the weighted sum of v
             + 2 * d * spec.num_experts  # router
             + spec.top_k * 2 * 2 * d * hidden)  # the chosen experts' FFNs
    per_token = 2 * (obs_dim + context_dim) * d + spec.num_blocks * block + 2 * d * spec.action_dim
    return 3.0 * per_token * batch * length


def matmul_flops_per_s(n=2048, repeats=10) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    dot = jax.jit(jnp.dot)
    return 2 * n**3 / _time(dot, a, a, repeats=repeats)


def student_step(batch: int, student_overrides: dict | None = None):
    """(jitted train step, state, window source, #params, model FLOPs per step) of the
    Table 6 student (`student_overrides`: config.student fields to change)."""
    c = default.get_config()
    c.distill.batch_size = batch
    c.student.update(student_overrides or {})
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
    context_dim = int(params["task_context"]["kernel"].shape[0]) if "task_context" in params else 0
    model_flops = model_flops_per_step(StudentSpec.from_config(c.student), context_dim, batch)
    return step, state, source, n_params, model_flops


def measure_student(batch: int, steps: int, matmul_n: int = 2048,
                    student_overrides: dict | None = None) -> dict:
    """The Table 6 student's train step: time, samples/s, and its FLOP rate as a ratio
    of a `matmul_n`^3 `jnp.dot` in the same process, counted two ways: XLA's FLOPs
    (what the compiled program executes, dispatch overhead included) and model FLOPs
    (`model_flops_per_step`: what the model needs; their ratio is MFU)."""
    step, state, source, n_params, model_flops = student_step(batch, student_overrides)
    t0 = time.perf_counter()
    compiled = step.lower(state, source).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    step_flops = float(cost.get("flops", float("nan")))

    def run(s):
        return compiled(s, source)[0]

    step_s = _time(run, state, repeats=steps)
    peak = matmul_flops_per_s(matmul_n)
    achieved = step_flops / step_s
    mfu = model_flops / step_s / peak
    print(f"student {n_params/1e6:.2f}M params, batch {batch} x L 20, compile {compile_s:.1f} s")
    print(f"train step {step_s*1e3:.1f} ms -> {batch/step_s:.0f} samples/s "
          f"({batch*20/step_s:.0f} tokens/s)")
    print(f"step FLOPs (XLA cost analysis) {step_flops/1e9:.2f} GFLOP -> "
          f"{achieved/1e9:.1f} GFLOP/s")
    print(f"baseline jnp.dot {matmul_n}^3: {peak/1e9:.1f} GFLOP/s; ratio achieved/matmul = "
          f"{achieved/peak:.3f}; model FLOPs {model_flops/1e9:.2f} GFLOP/step -> "
          f"model FLOPs utilisation {mfu:.3f}", flush=True)
    return dict(params=int(n_params), batch=batch, compile_s=compile_s, step_ms=step_s * 1e3,
                samples_per_s=batch / step_s, step_gflop=step_flops / 1e9,
                model_gflop=model_flops / 1e9, matmul_n=matmul_n,
                matmul_gflop_per_s=peak / 1e9, ratio_achieved_over_matmul=achieved / peak,
                model_flops_utilisation=mfu)


def _ragged_dot_dispatch(x, expert_index, gate_weights, experts):
    """No-drop dispatch with `jax.lax.ragged_dot`: pairs sorted by expert, one grouped
    matmul per FFN layer, unsorted. Exact, but jax 0.6.2 lowers ragged_dot to a grouped
    kernel only on TPU; elsewhere it masks the lhs per group and runs the dense dot."""
    w_in, b_in, w_out, b_out = experts
    n, k = expert_index.shape
    flat = expert_index.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.zeros((w_in.shape[0],), jnp.int32).at[flat].add(1)
    expert = flat[order]
    h = jax.nn.gelu(jax.lax.ragged_dot(x[order // k], w_in, sizes) + b_in[expert])
    out = jax.lax.ragged_dot(h, w_out, sizes) + b_out[expert]
    out = out[jnp.argsort(order)].reshape(n, k, -1)
    return jnp.einsum("nkd,nk->nd", out, gate_weights.astype(x.dtype))


def _one_ffn(x, expert_index, gate_weights, experts):
    """Not a MoE: one FFN (expert 0) over the N*k routed rows, the floor the no-drop
    dispatch aims at."""
    w_in, b_in, w_out, b_out = (w[0] for w in experts)
    rows = jnp.repeat(x, expert_index.shape[1], axis=0)
    out = jax.nn.gelu(rows @ w_in + b_in) @ w_out + b_out
    return jnp.einsum("nkd,nk->nd", out.reshape(*expert_index.shape, -1), gate_weights)


def moe_step(dispatch, num_experts: int, top_k: int):
    """jit(grad) of sum(y * cot) + aux through one MoE layer's params (layout of
    `moe.MoE`), with `dispatch(x, expert_index, gate_weights, experts) -> y[N, D]`."""

    def loss(params, x, cot):
        kernel = jnp.stack([params[f"gate_{e}"]["kernel"] for e in range(num_experts)], 1)
        bias = jnp.stack([params[f"gate_{e}"]["bias"] for e in range(num_experts)])
        routing = routing_lib.route_top_k(x @ kernel + bias, top_k)
        experts = tuple(jnp.stack([params[f"expert_{e}"][name] for e in range(num_experts)])
                        for name in ("w_in", "b_in", "w_out", "b_out"))
        y = dispatch(x, routing.expert_index, routing.gate_weights, experts)
        return jnp.sum(y * cot) + routing_lib.load_balancing_loss(routing)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def measure_moe(size: str, num_experts: int, top_k: int, repeats: int) -> dict:
    """ms per forward+backward of each dispatch, and the ratios between them."""
    n, dim, hidden, _ = MOE_SIZES[size]
    x = jax.random.normal(jax.random.PRNGKey(0), (n, dim))
    cot = jax.random.normal(jax.random.PRNGKey(1), (n, dim))
    layer = moe_lib.MoE(num_experts=num_experts, hidden=hidden, top_k=top_k)
    params = jax.jit(layer.init)(jax.random.PRNGKey(2), x)["params"]
    block = moe_lib.default_block_size(dim, hidden)
    dispatches = {
        "buffer": lambda *a: moe_lib.buffer_dispatch(*a, capacity=n),
        "block": lambda *a: moe_lib.block_dispatch(*a, block_size=block),
        "ragged_dot": _ragged_dot_dispatch,
        "one_ffn": _one_ffn,
    }
    steps = {name: moe_step(d, num_experts, top_k) for name, d in dispatches.items()}
    # the three MoE dispatches compute the same function: check before timing
    grads = {name: steps[name](params, x, cot) for name in ("buffer", "block", "ragged_dot")}
    max_rel_err = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for name in ("block", "ragged_dot")
        for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(grads["buffer"])))
    ms = {name: s * 1e3 for name, s in _median_times(steps, (params, x, cot), repeats).items()}
    row = dict(size=size, tokens=n, dim=dim, hidden=hidden, experts=num_experts, top_k=top_k,
               block_size=block, **{f"{name}_ms": v for name, v in ms.items()},
               speedup_block_over_buffer=ms["buffer"] / ms["block"],
               ratio_ragged_dot_over_block=ms["ragged_dot"] / ms["block"],
               ratio_block_over_one_ffn=ms["block"] / ms["one_ffn"],
               max_rel_grad_err_vs_buffer=max_rel_err)
    print(f"moe {size} N={n} D={dim} H={hidden} E={num_experts} k={top_k}: "
          f"buffer {ms['buffer']:.2f} ms, block(B={block}) {ms['block']:.2f} ms, "
          f"ragged_dot {ms['ragged_dot']:.2f} ms, one FFN {ms['one_ffn']:.2f} ms; "
          f"speedup buffer/block {row['speedup_block_over_buffer']:.2f}x, "
          f"block/one FFN {row['ratio_block_over_one_ffn']:.2f}, "
          f"grad rel err {max_rel_err:.1e}", flush=True)
    return row


def markdown(results: dict) -> str:
    lines = []
    if results.get("moe"):
        lines += ["MoE layer, jitted forward+backward, median ms (no token dropping):", "",
                  "| size | N | D | H | E | k | block | buffer (old) | block (new) "
                  "| ragged_dot | one FFN | speedup old/new | new / one FFN |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["moe"]:
            lines.append(
                f"| {r['size']} | {r['tokens']} | {r['dim']} | {r['hidden']} | {r['experts']} "
                f"| {r['top_k']} | {r['block_size']} | {r['buffer_ms']:.2f} "
                f"| {r['block_ms']:.2f} | {r['ragged_dot_ms']:.2f} | {r['one_ffn_ms']:.2f} "
                f"| {r['speedup_block_over_buffer']:.2f} | {r['ratio_block_over_one_ffn']:.2f} |")
        lines.append("")
    if results.get("student"):
        s = results["student"]
        lines += [f"Student train step (batch {s['batch']} x L 20): {s['step_ms']:.1f} ms, "
                  f"{s['samples_per_s']:.0f} samples/s, achieved/matmul FLOP/s "
                  f"{s['ratio_achieved_over_matmul']:.3f}, model FLOPs utilisation "
                  f"{s['model_flops_utilisation']:.3f}", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="student,moe")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--moe_sizes", default="cpu", help=f"of {sorted(MOE_SIZES)}")
    p.add_argument("--moe_top_k", type=int, default=1)
    p.add_argument("--moe_repeats", type=int, default=20)
    p.add_argument("--json", default="", help="write the results JSON here")
    p.add_argument("--markdown", default="", help="write markdown tables here")
    args = p.parse_args()
    sections = [s for s in args.sections.split(",") if s]

    results = {"jax": jax.__version__, "platform": jax.devices()[0].platform,
               "args": vars(args)}
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    if "moe" in sections:
        results["moe"] = [measure_moe(size, e, args.moe_top_k, args.moe_repeats)
                          for size in args.moe_sizes.split(",") if size
                          for e in MOE_SIZES[size][3]]
    if "student" in sections:
        results["student"] = measure_student(args.batch, args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results))


if __name__ == "__main__":
    main()
