"""Training throughput of the student on the machine it runs on, and the MoE dispatch, as
ratios.

Sections, each measured against a baseline timed in the same process (calls interleaved
round-robin with the baseline, medians, so that load from other processes hits all
alike):

* student: samples/s (windows of L steps) of the jitted distillation step for the
  Table 6 student (dim 256, 5 blocks, 8 experts, L=20, batch 128) and its FLOP rate
  as a fraction of a large `jnp.dot` (the machine's practical peak), counted two ways:
  model FLOPs (`model_flops_per_step`; the ratio is the model FLOPs utilisation) and
  XLA's cost analysis of the compiled step (on CPU the chunk dispatch's loop bodies are
  counted once, not once per trip, so XLA's count is then below the work done).
* profile: where that step's time goes. The same step with the MoE's no-drop dispatch
  as `moe.MoE` picks it ("moe"), forced to the block dispatch ("moe_block", the dispatch
  before the chunk loop), replaced by one dense FFN of the same per-token cost over the
  N*k routed rows ("dense_ffn", the floor any dispatch can reach) and by nothing
  ("no_ffn": embeddings, attention, layer norms, router, loss, optimizer); beside them
  the AdamW update of the student's params alone ("optimizer") and the forward+backward
  of its attention sublayers alone ("attention").
* stages: the CPU student (`mt25_5stage_cpu`'s student block and batch) with the expert
  counts of `--stage_experts` (stage 1: 4; the 5-stage protocol grows it per stage):
  ms per train step and the ratio to the first count, and beside each the step with
  the MoE replaced by one dense FFN and by nothing, and the optimizer update alone.
* moe: ms per jitted forward+backward (grad w.r.t. the MoE params and the tokens) of
  one no-drop MoE layer: the chunk loop (`moe.chunk_dispatch`) and the block dispatch
  (`moe.block_dispatch`) against the old full-capacity buffer (`moe.buffer_dispatch` at
  capacity N, E FFNs over all N tokens), `jax.lax.ragged_dot` (on CPU a dense masked
  lowering) and, as the floor, one FFN over the N*k routed rows. Sizes: `cpu` = the
  CPU configs (N = 64 windows x L 10 tokens, dim 64, hidden 256, E = 4, 8, 12),
  `paper` = Table 6 (N = 128 x 20, dim 256, hidden 1024, E = 8, 13). Routing: a random
  router on random tokens (uneven loads, like an untrained student's).

    python benchmarks/student_throughput.py [--sections student,profile,stages,moe]
        [--batch 128] [--steps 20] [--matmul_n 2048] [--stage_experts 4,12]
        [--stage_dispatch default,block,chunk] [--moe_sizes cpu,paper]
        [--moe_repeats 20] [--json out.json] [--markdown out.md]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cpd_jax import distillation
from cpd_jax.configs import default, mt25_5stage_cpu
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.pipeline import init_student
from cpd_jax.student import moe as moe_lib
from cpd_jax.student import routing as routing_lib
from cpd_jax.student.transformer import StudentSpec

# (tokens N, dim, hidden, expert counts) per --moe_sizes name
MOE_SIZES = {"cpu": (64 * 10, 64, 256, (4, 8, 12)),
             "paper": (128 * 20, 256, 1024, (8, 13))}


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


def _interleaved(calls: dict, repeats: int, matmul_n: int) -> tuple[dict, float]:
    """(median seconds of each zero-argument call, matmul FLOP/s): each round runs every
    call once and a `matmul_n`^3 `jnp.dot` once, so the rate each is compared with was
    measured under the same load."""
    a = jax.random.normal(jax.random.PRNGKey(0), (matmul_n, matmul_n))
    dot = jax.jit(jnp.dot)
    calls = dict(calls, _matmul=lambda: dot(a, a))
    for call in calls.values():
        jax.block_until_ready(call())  # warm up (compiled already)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    med = {name: float(np.median(t)) for name, t in times.items()}
    return {k: v for k, v in med.items() if k != "_matmul"}, 2 * matmul_n**3 / med["_matmul"]


def student_step(batch: int, student_overrides: dict | None = None, config=None):
    """(jitted train step, state, window source, #params, model FLOPs per step) of the
    Table 6 student (`config`: another base config, e.g. `mt25_5stage_cpu.get_config()`;
    `student_overrides`: config.student fields to change)."""
    c = config or default.get_config()
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


def _compiled_step(batch: int, student_overrides=None, dispatch=None, config=None):
    """student_step compiled, with every MoE layer's no-drop dispatch forced to
    `dispatch` (None: the layer's own choice; see `moe.forced_dispatch`).
    Returns dict(call, state, compile_s, step_gflop (XLA), model_flops, params)."""
    step, state, source, n_params, model_flops = student_step(batch, student_overrides, config)
    t0 = time.perf_counter()
    if dispatch is None:
        compiled = step.lower(state, source).compile()
    else:
        with moe_lib.forced_dispatch(dispatch):
            compiled = step.lower(state, source).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(call=lambda: compiled(state, source)[0], state=state, compile_s=compile_s,
                step_flops=float(cost.get("flops", float("nan"))), model_flops=model_flops,
                params=int(n_params))


def measure_student(batch: int, steps: int, matmul_n: int = 2048,
                    student_overrides: dict | None = None) -> dict:
    """The Table 6 student's train step: time, samples/s, and its FLOP rate as a ratio
    of a `matmul_n`^3 `jnp.dot` timed between the steps, counted two ways: XLA's FLOPs
    (what the compiled program executes, dispatch overhead included; on CPU loop bodies
    count once) and model FLOPs (`model_flops_per_step`: what the model needs; their
    ratio is MFU). `steps` timed steps (medians)."""
    s = _compiled_step(batch, student_overrides)
    times, peak = _interleaved({"step": s["call"]}, steps, matmul_n)
    step_s = times["step"]
    achieved = s["step_flops"] / step_s
    mfu = s["model_flops"] / step_s / peak
    print(f"student {s['params']/1e6:.2f}M params, batch {batch}, compile {s['compile_s']:.1f} s")
    print(f"train step {step_s*1e3:.1f} ms -> {batch/step_s:.0f} samples/s")
    print(f"step FLOPs (XLA cost analysis) {s['step_flops']/1e9:.2f} GFLOP -> "
          f"{achieved/1e9:.1f} GFLOP/s")
    print(f"baseline jnp.dot {matmul_n}^3: {peak/1e9:.1f} GFLOP/s; ratio achieved/matmul = "
          f"{achieved/peak:.3f}; model FLOPs {s['model_flops']/1e9:.2f} GFLOP/step -> "
          f"model FLOPs utilisation {mfu:.3f}", flush=True)
    return dict(params=s["params"], batch=batch, compile_s=s["compile_s"],
                step_ms=step_s * 1e3, samples_per_s=batch / step_s,
                step_gflop=s["step_flops"] / 1e9, model_gflop=s["model_flops"] / 1e9,
                matmul_n=matmul_n, matmul_gflop_per_s=peak / 1e9,
                ratio_achieved_over_matmul=achieved / peak, model_flops_utilisation=mfu)


def _no_ffn(x, expert_index, gate_weights, experts):
    """Not a MoE: no FFN at all (the step's other work, router and aux loss included)."""
    return jnp.zeros_like(x)


def _optimizer_call(params, flatten: bool = False):
    """A zero-argument call of the distillation optimizer's AdamW update of `params`
    (with `params` as the gradient), jitted: the optimizer's share of a train step.
    flatten: the same AdamW over one vector of all leaves (`optax.flatten`), the fused
    alternative to one update per leaf (bitwise the same params)."""
    tx = distillation.make_optimizer(default.get_config().distill, 1000)
    if flatten:
        tx = optax.flatten(tx)
    opt_state = tx.init(params)

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return lambda: update(params, opt_state, params)


def _attention_call(batch: int, spec: StudentSpec):
    """A zero-argument call of the forward+backward (grads w.r.t. params and input) of
    the student's `num_blocks` attention sublayers alone (pre-norm LayerNorm +
    MultiHeadDotProductAttention + residual, as in `transformer.Block`, with the causal
    mask) on [batch, L, dim]: the attention's share of a train step."""
    import flax.linen as nn

    from cpd_jax.student.transformer import attention_mask

    class Attention(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            for _ in range(spec.num_blocks):
                h = nn.LayerNorm()(x)
                x = x + nn.MultiHeadDotProductAttention(
                    num_heads=spec.num_heads, qkv_features=spec.dim)(h, h, mask=mask)
            return x

    x = jax.random.normal(jax.random.PRNGKey(0), (batch, spec.seq_len, spec.dim))
    mask = attention_mask(jnp.ones((batch, spec.seq_len), bool))
    model = Attention()
    params = model.init(jax.random.PRNGKey(1), x, mask)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, x, mask) ** 2), argnums=(0, 1)))
    return lambda: grad(params, x)


def measure_profile(batch: int, repeats: int, matmul_n: int = 2048) -> dict:
    """The paper student's train step with the MoE dispatch as chosen, forced to the
    block dispatch, replaced by one dense FFN and by nothing, and the optimizer update
    alone; ms (medians, interleaved with the matmul) and model FLOPs utilisation."""
    variants = {"moe": None, "moe_block": "block", "dense_ffn": _one_ffn, "no_ffn": _no_ffn}
    steps = {}
    for name, dispatch in variants.items():
        steps[name] = _compiled_step(batch, dispatch=dispatch)
        print(f"profile: compiled {name} in {steps[name]['compile_s']:.1f} s", flush=True)
    calls = {name: s["call"] for name, s in steps.items()}
    calls["optimizer"] = _optimizer_call(steps["moe"]["state"].params)
    spec = StudentSpec.from_config(default.get_config().student)
    calls["attention"] = _attention_call(batch, spec)
    times, peak = _interleaved(calls, repeats, matmul_n)
    model_flops = steps["moe"]["model_flops"]
    rows = {name: dict(ms=t * 1e3, model_flops_utilisation=model_flops / t / peak)
            for name, t in times.items()}
    for name, s in steps.items():
        rows[name].update(compile_s=s["compile_s"], xla_gflop=s["step_flops"] / 1e9,
                          ratio_xla_over_matmul=s["step_flops"] / times[name] / peak)
    ffn_ms = {name: rows[name]["ms"] - rows["no_ffn"]["ms"]
              for name in ("moe", "moe_block", "dense_ffn")}
    other_ms = rows["no_ffn"]["ms"] - rows["attention"]["ms"] - rows["optimizer"]["ms"]
    result = dict(batch=batch, matmul_n=matmul_n, matmul_gflop_per_s=peak / 1e9,
                  model_gflop=model_flops / 1e9, rows=rows, ffn_ms=ffn_ms,
                  no_ffn_other_ms=other_ms,
                  ffn_over_dense=dict(moe=ffn_ms["moe"] / ffn_ms["dense_ffn"],
                                      moe_block=ffn_ms["moe_block"] / ffn_ms["dense_ffn"]),
                  speedup_moe_over_block=rows["moe_block"]["ms"] / rows["moe"]["ms"])
    for name, r in rows.items():
        print(f"profile {name:10s} {r['ms']:8.1f} ms  model FLOPs / matmul rate "
              f"{r['model_flops_utilisation']:.3f}", flush=True)
    print(f"profile: FFN part (step - no_ffn): moe {ffn_ms['moe']:.0f} ms, block "
          f"{ffn_ms['moe_block']:.0f} ms, dense {ffn_ms['dense_ffn']:.0f} ms; matmul "
          f"{peak/1e9:.1f} GFLOP/s; step speedup block/moe "
          f"{result['speedup_moe_over_block']:.2f}x; no_ffn = attention "
          f"{rows['attention']['ms']:.0f} + optimizer {rows['optimizer']['ms']:.0f} + other "
          f"{other_ms:.0f} ms", flush=True)
    return result


def measure_stages(expert_counts, repeats: int, matmul_n: int = 2048,
                   dispatch=None) -> dict:
    """ms per train step of the CPU student (`mt25_5stage_cpu`: its student block and
    batch) with each expert count, all interleaved, and its ratio to the first count;
    beside each, the step with the MoE replaced by one dense FFN ("dense_ffn") and by
    nothing ("no_ffn"), and the optimizer update alone, per leaf and over one flattened
    vector ("optimizer_flat"), to show what grows with E."""
    batch = mt25_5stage_cpu.get_config().distill.batch_size
    variants = {"step": dispatch, "dense_ffn": _one_ffn, "no_ffn": _no_ffn}
    steps, calls = {}, {}
    for e in expert_counts:
        for name, d in variants.items():
            steps[e, name] = _compiled_step(batch, dict(num_experts=e), dispatch=d,
                                            config=mt25_5stage_cpu.get_config())
            calls[e, name] = steps[e, name]["call"]
        calls[e, "optimizer"] = _optimizer_call(steps[e, "step"]["state"].params)
        calls[e, "optimizer_flat"] = _optimizer_call(steps[e, "step"]["state"].params,
                                                     flatten=True)
    times, peak = _interleaved(calls, repeats, matmul_n)
    first = times[expert_counts[0], "step"]
    rows = []
    for e in expert_counts:
        r = dict(experts=e, params=steps[e, "step"]["params"],
                 compile_s=steps[e, "step"]["compile_s"],
                 **{f"{name}_ms": times[e, name] * 1e3
                    for name in ("step", "dense_ffn", "no_ffn", "optimizer",
                                 "optimizer_flat")},
                 ratio_to_first=times[e, "step"] / first,
                 model_flops_utilisation=steps[e, "step"]["model_flops"] / times[e, "step"] / peak)
        r["moe_ms"] = r["step_ms"] - r["no_ffn_ms"]
        rows.append(r)
        print(f"stages: {e:2d} experts ({r['params']/1e6:.2f}M params) {r['step_ms']:.2f} "
              f"ms/step (x{r['ratio_to_first']:.2f} of {expert_counts[0]} experts); "
              f"dense FFN {r['dense_ffn_ms']:.2f}, no FFN {r['no_ffn_ms']:.2f}, optimizer "
              f"alone {r['optimizer_ms']:.2f} ms (flattened {r['optimizer_flat_ms']:.2f})",
              flush=True)
    return dict(batch=batch, dispatch=dispatch or "default", matmul_gflop_per_s=peak / 1e9,
                rows=rows)


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
        "chunk": moe_lib.chunk_dispatch,
        "ragged_dot": _ragged_dot_dispatch,
        "one_ffn": _one_ffn,
    }
    steps = {name: moe_step(d, num_experts, top_k) for name, d in dispatches.items()}
    # the MoE dispatches compute the same function: check before timing
    exact = ("buffer", "block", "chunk", "ragged_dot")
    grads = {name: steps[name](params, x, cot) for name in exact}
    max_rel_err = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for name in exact[1:]
        for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(grads["buffer"])))
    ms = {name: s * 1e3 for name, s in _median_times(steps, (params, x, cot), repeats).items()}
    row = dict(size=size, tokens=n, dim=dim, hidden=hidden, experts=num_experts, top_k=top_k,
               block_size=block, chunk_sizes=list(moe_lib.CHUNK_SIZES),
               **{f"{name}_ms": v for name, v in ms.items()},
               speedup_block_over_buffer=ms["buffer"] / ms["block"],
               speedup_chunk_over_block=ms["block"] / ms["chunk"],
               ratio_ragged_dot_over_block=ms["ragged_dot"] / ms["block"],
               ratio_block_over_one_ffn=ms["block"] / ms["one_ffn"],
               ratio_chunk_over_one_ffn=ms["chunk"] / ms["one_ffn"],
               max_rel_grad_err_vs_buffer=max_rel_err)
    print(f"moe {size} N={n} D={dim} H={hidden} E={num_experts} k={top_k}: "
          f"buffer {ms['buffer']:.2f} ms, block(B={block}) {ms['block']:.2f} ms, "
          f"chunk {ms['chunk']:.2f} ms, ragged_dot {ms['ragged_dot']:.2f} ms, "
          f"one FFN {ms['one_ffn']:.2f} ms; block/one FFN "
          f"{row['ratio_block_over_one_ffn']:.2f}, chunk/one FFN "
          f"{row['ratio_chunk_over_one_ffn']:.2f}, grad rel err {max_rel_err:.1e}", flush=True)
    return row


def markdown(results: dict) -> str:
    lines = []
    if results.get("student"):
        s = results["student"]
        lines += [f"Student train step (batch {s['batch']}): {s['step_ms']:.1f} ms, "
                  f"{s['samples_per_s']:.0f} samples/s, achieved/matmul FLOP/s (XLA's "
                  f"count) {s['ratio_achieved_over_matmul']:.3f}, model FLOPs utilisation "
                  f"{s['model_flops_utilisation']:.3f} (matmul "
                  f"{s['matmul_gflop_per_s']:.1f} GFLOP/s)", ""]
    if results.get("profile"):
        p = results["profile"]
        lines += [f"Where the paper student's train step goes (batch {p['batch']}, medians "
                  f"interleaved with a {p['matmul_n']}^3 matmul at "
                  f"{p['matmul_gflop_per_s']:.1f} GFLOP/s; model {p['model_gflop']:.1f} "
                  "GFLOP/step):", "",
                  "| variant | ms/step | model FLOPs / matmul rate | XLA FLOPs / matmul rate "
                  "| compile s |", "|---|---:|---:|---:|---:|"]
        for name, r in p["rows"].items():
            xla = (f"{r['ratio_xla_over_matmul']:.3f}" if "ratio_xla_over_matmul" in r
                   else "")
            compile_s = f"{r['compile_s']:.0f}" if "compile_s" in r else ""
            lines.append(f"| {name} | {r['ms']:.1f} | {r['model_flops_utilisation']:.3f} "
                         f"| {xla} | {compile_s} |")
        f = p["ffn_ms"]
        lines += ["", f"FFN part (step - no_ffn): moe {f['moe']:.0f} ms, moe_block "
                  f"{f['moe_block']:.0f} ms, dense_ffn {f['dense_ffn']:.0f} ms "
                  f"(moe / dense {p['ffn_over_dense']['moe']:.2f}, block / dense "
                  f"{p['ffn_over_dense']['moe_block']:.2f}); step speedup block / moe "
                  f"{p['speedup_moe_over_block']:.2f}x. no_ffn = attention "
                  f"{p['rows']['attention']['ms']:.0f} + optimizer "
                  f"{p['rows']['optimizer']['ms']:.0f} + other {p['no_ffn_other_ms']:.0f} ms "
                  "(embeddings, layer norms outside attention, router, loss, grad norm)", ""]
    if results.get("stages"):
        for st in results["stages"]:
            lines += [f"CPU student (mt25_5stage_cpu, batch {st['batch']}), dispatch "
                      f"{st['dispatch']}, ms per train step (medians, interleaved):", "",
                      "| experts | params | step | x first | MoE part (step - no FFN) "
                      "| dense FFN step | no FFN step | optimizer alone | optimizer, "
                      "flattened |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in st["rows"]:
                lines.append(f"| {r['experts']} | {r['params']:,} | {r['step_ms']:.2f} "
                             f"| {r['ratio_to_first']:.2f} | {r['moe_ms']:.2f} "
                             f"| {r['dense_ffn_ms']:.2f} | {r['no_ffn_ms']:.2f} "
                             f"| {r['optimizer_ms']:.2f} "
                             f"| {r['optimizer_flat_ms']:.2f} |")
            lines.append("")
    if results.get("moe"):
        lines += ["MoE layer, jitted forward+backward, median ms (no token dropping):", "",
                  "| size | N | D | H | E | k | buffer | block (B) | chunk | ragged_dot "
                  "| one FFN | block / one FFN | chunk / one FFN |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["moe"]:
            lines.append(
                f"| {r['size']} | {r['tokens']} | {r['dim']} | {r['hidden']} | {r['experts']} "
                f"| {r['top_k']} | {r['buffer_ms']:.2f} | {r['block_ms']:.2f} "
                f"({r['block_size']}) | {r['chunk_ms']:.2f} | {r['ragged_dot_ms']:.2f} "
                f"| {r['one_ffn_ms']:.2f} | {r['ratio_block_over_one_ffn']:.2f} "
                f"| {r['ratio_chunk_over_one_ffn']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="student,moe",
                   help="of student, profile, stages, moe")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20,
                   help="timed calls per variant (student, profile, stages)")
    p.add_argument("--matmul_n", type=int, default=2048)
    p.add_argument("--stage_experts", default="4,12",
                   help="expert counts of the stages section (the first is the reference)")
    p.add_argument("--stage_dispatch", default="default",
                   help="comma list of default, block, chunk: one stages run each")
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
    if "student" in sections:
        results["student"] = measure_student(args.batch, args.steps, args.matmul_n)
    if "profile" in sections:
        results["profile"] = measure_profile(args.batch, args.steps, args.matmul_n)
    if "stages" in sections:
        counts = [int(e) for e in args.stage_experts.split(",")]
        results["stages"] = [
            measure_stages(counts, args.steps, args.matmul_n,
                           dispatch=None if d == "default" else d)
            for d in args.stage_dispatch.split(",") if d]
    if "moe" in sections:
        results["moe"] = [measure_moe(size, e, args.moe_top_k, args.moe_repeats)
                          for size in args.moe_sizes.split(",") if size
                          for e in MOE_SIZES[size][3]]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results))


if __name__ == "__main__":
    main()
