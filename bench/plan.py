"""Memory plan: how much accelerator memory one SRT step needs per device, for a model shape, mesh and batch.

    python bench/plan.py --model_shape=qwen2.5-math-7b --mesh=1,8,1 --num_prompts=16 --num_samples=32 \
        --prompt_len=1024 --response_len=3072 --remat

Nothing is run and no weights exist: the policy-gradient update (update.make_train_step with update.policy_loss
and AdamW), the sampler (sample._sample: prefill + decode loop) and the KL reference scorer are compiled ahead
of time (`jax.jit(...).lower(abstract inputs).compile()`) for jax.ShapeDtypeStruct inputs that carry the
shardings train.py gives them, on a mesh of --devices fake CPU devices. XLA's buffer assignment of the
per-device program (`compiled.memory_analysis()`) then says what one device holds:

    need = argument + output + temp - alias     (bytes; alias: donated inputs reused as outputs)

plus what stays resident outside the compiled function during that phase (the train state while sampling;
the reference policy for the KL term). The compiling and measuring is memory.py's, which train.py also runs
on an accelerator before its first step, for the real run's shapes on the real devices.

Precision, decided here and used by default: float32 master weights and float32 Adam moments, bfloat16
matmuls (--param_dtype=float32 --dtype=bfloat16). With bfloat16 weights a learning-rate-1e-6 AdamW update
(about 1e-6 per weight) is below half a bfloat16 ulp of a typical weight (0.02: ulp 1.2e-4) and rounds away,
so the paper's learning rate would not move the policy.

The update step's rows go through in micro-batches (train.py --micro_batches); the plan compiles the step for
1, 2, 4, ... rows per device per micro-batch, up to the whole batch or until the need passes the largest
chip, and reports, for each chip, the largest micro-batch that fits. The sampler has no micro-batches: its
rows are P x G; the plan compiles it for the whole batch and for smaller numbers of prompts per sampler call
(doubling from one prompt per data shard) and reports the largest that fits.

The numbers are XLA:CPU's buffer assignment: TPU and GPU compilers fuse differently (and XLA:CPU may
compute bfloat16 elementwise ops in float32), so read them as +-20% estimates of what a chip needs, and keep
the headroom (--headroom, 0.9: a plan fits when need <= 90% of HBM). The update compiles with XLA:CPU's
default options, as when the README's tables were measured. train.py's own CPU runs swap YNNPACK's fused kernels
for XLA's (update.compiler_options), which at bench/train_bench.py's shapes needs 14% less scratch; an
accelerator's compiler uses neither.
"""
import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (jax_num_cpu_devices is set in main, before JAX's backend starts)
import jax.numpy as jnp  # noqa: E402

import memory  # noqa: E402
import model  # noqa: E402
import sample as sample_lib  # noqa: E402
import sharding  # noqa: E402
import train  # noqa: E402
import update  # noqa: E402

GiB = memory.GiB
# HBM per chip (GiB): TPU v5e, v4, v5p (Cloud TPU system architecture pages); H200: 141 GB, which nvidia-smi
# shows as 143,771 MiB.
CHIPS = {'v5e': 16.0, 'v4': 32.0, 'v5p': 95.0, 'H200': 143771 / 1024}
Phase = memory.Phase


def setup(cfg, mesh_sizes, rl):
  """Abstract train state (params, AdamW state) with train.py's shardings, and the step's shardings."""
  mesh = sharding.make_mesh(mesh_sizes)
  p_shard = sharding.param_shardings(cfg, mesh)
  shapes = jax.tree.map(lambda shape: jax.ShapeDtypeStruct(shape, jnp.dtype(cfg.param_dtype)),
                        model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
  params = memory.abstract(shapes, p_shard)
  optimizer = update.make_optimizer(rl.learning_rate)
  shardings = sharding.state_shardings(optimizer, params, p_shard, mesh)
  state = {'params': params,
           'opt_state': memory.abstract(jax.eval_shape(optimizer.init, params), shardings['opt_state'])}
  return mesh, optimizer, state, shardings


def plan_update(cfg, mesh_sizes, rl, rows, prompt_len, response_len, micro_batches, kl=True) -> Phase:
  """The update step over `rows` rows in `micro_batches` slices."""
  mesh, optimizer, state, shardings = setup(cfg, mesh_sizes, rl)
  loss_fn = lambda p, c, b: update.policy_loss(p, c, b, temperature=rl.temperature, clip_eps=rl.clip_eps,
                                               kl_coef=rl.kl_coef, entropy_coef=rl.entropy_coef)
  step = update.make_train_step(cfg, loss_fn, optimizer, shardings, mesh, micro_batches)
  batch = memory.batch_abstract(mesh, rows, sample_lib.bucket(prompt_len), response_len)
  # The frozen reference policy (KL term) stays on the devices through the update.
  return memory.update_phase(step, state, batch, memory.nbytes_per_device(state['params']) if kl else 0)


def plan_sampler(cfg, mesh_sizes, rl, prompts, samples, prompt_len, response_len, kl=True) -> Phase:
  """One sampler call for `prompts` prompts x `samples` samples; the train state (and the reference) stay
  resident while it runs (train.py samples with the live parameters)."""
  mesh, _, state, _ = setup(cfg, mesh_sizes, rl)
  resident = (memory.nbytes_per_device(state['opt_state'])
              + (memory.nbytes_per_device(state['params']) if kl else 0))
  return memory.sampler_phase(state['params'], cfg, mesh, prompts, samples, sample_lib.bucket(prompt_len),
                              response_len, resident)


def plan_scorer(cfg, mesh_sizes, rl, rows, prompt_len, response_len, micro_batches) -> Phase:
  """The KL reference's log-probs (forward only) over the batch; the train state stays resident."""
  mesh, _, state, _ = setup(cfg, mesh_sizes, rl)
  scorer = update.make_scorer(cfg, rl.temperature, mesh, micro_batches)
  batch = memory.batch_abstract(mesh, rows, sample_lib.bucket(prompt_len), response_len)
  t = time.time()
  compiled = scorer.lower(state['params'], batch).compile()
  return memory.measure(compiled, memory.nbytes_per_device(state['opt_state'])
                        + memory.nbytes_per_device(state['params']), time.time() - t)


def fits(need, chip, headroom):
  return need <= headroom * CHIPS[chip] * GiB


def doublings(lo, hi):
  """lo, 2 lo, 4 lo, ... up to hi (hi included when it is not a power-of-two multiple of lo)."""
  out, x = [], lo
  while x < hi:
    out.append(x)
    x *= 2
  return out + [hi]


def run_plan(model_shape='qwen2.5-math-1.5b', mesh=(1, 8, 1), num_prompts=16, num_samples=32, prompt_len=1024,
             response_len=3072, remat=True, param_dtype='float32', dtype='bfloat16', kl=True, headroom=0.9,
             micro_rows=None, sampler_prompts=None, cfg=None, log=print) -> dict:
  """Compiles the phases and returns {'update': {rows per device per micro-batch: Phase}, 'sampler':
  {prompts per call: Phase}, 'scorer': Phase or None, 'state': bytes of the train state per device, ...}.

  micro_rows / sampler_prompts: the sizes to compile (default: doublings, stopping past the largest chip).
  cfg overrides model_shape (tests pass a tiny config).
  """
  cfg = cfg or model.PRESETS[model_shape]
  cfg = dataclasses.replace(cfg, param_dtype=param_dtype, dtype=dtype, remat=remat)
  rl = train.RLConfig(num_prompts=num_prompts, num_samples=num_samples, max_new_tokens=response_len,
                      kl_coef=0.001 if kl else 0.0, kl_in='loss')
  data, fsdp, _ = mesh
  rows = num_prompts * num_samples
  shards = data * fsdp
  if rows % shards or num_prompts % data:
    raise ValueError(f'{num_prompts} prompts x {num_samples} samples = {rows} rows do not divide over the '
                     f'{data}x{fsdp} data x fsdp axes (or the prompts over the {data}-way data axis)')
  largest = max(CHIPS.values()) * GiB
  _, _, state, _ = setup(cfg, mesh, rl)
  out = {'cfg': cfg, 'rows': rows, 'shards': shards, 'update': {}, 'sampler': {}, 'scorer': None,
         'params': memory.nbytes_per_device(state['params']),
         'opt_state': memory.nbytes_per_device(state['opt_state'])}

  # 1) The update step: r rows per device in each micro-batch, M = rows / (r x shards) micro-batches.
  for r in doublings(1, rows // shards) if micro_rows is None else micro_rows:
    if (rows // shards) % r:
      continue
    m = rows // (r * shards)
    p = plan_update(cfg, mesh, rl, rows, prompt_len, response_len, m, kl)
    out['update'][r] = p
    log(f'  update, {r:>3} rows/device/micro-batch ({m:>3} micro-batches): {p.need / GiB:8.2f} GiB '
        f'(temp {p.temp / GiB:.2f}, compiled in {p.seconds:.0f} s)')
    if p.need > largest and micro_rows is None:
      break
  # 2) The sampler: prompts per call, from one per data shard up to all of them.
  for n in doublings(data, num_prompts) if sampler_prompts is None else sampler_prompts:
    if n % data:
      continue
    p = plan_sampler(cfg, mesh, rl, n, num_samples, prompt_len, response_len, kl)
    out['sampler'][n] = p
    log(f'  sampler, {n:>3} prompts x {num_samples} samples per call: {p.need / GiB:8.2f} GiB '
        f'(temp {p.temp / GiB:.2f}, compiled in {p.seconds:.0f} s)')
    if p.need > largest and sampler_prompts is None:
      break
  # 3) The KL reference scorer, micro-batched like the best-fitting update on the smallest chip that fits.
  if kl and out['update']:
    r = max(out['update'])
    fitting = [r for r, p in out['update'].items() if fits(p.need, 'v5e', headroom)]
    r = max(fitting) if fitting else min(out['update'])
    out['scorer'] = plan_scorer(cfg, mesh, rl, rows, prompt_len, response_len, rows // (r * shards))
    out['scorer_rows'] = r
  return out


def report(out, args, headroom):
  gib = lambda b: f'{b / GiB:.1f}'
  lines = [f'{args.model_shape}, mesh {args.mesh} (data, fsdp, tensor), {args.num_prompts} prompts x '
           f'{args.num_samples} samples = {out["rows"]} rows, {args.prompt_len} prompt + {args.response_len} '
           f'response tokens, remat={args.remat}, params {out["cfg"].param_dtype}, compute {out["cfg"].dtype}',
           f'per device: parameters {gib(out["params"])} GiB, AdamW state {gib(out["opt_state"])} GiB']
  head = '| phase | size | need (GiB/device) | ' + ' | '.join(f'{c} ({CHIPS[c]:.0f})' for c in CHIPS) + ' |'
  lines += ['', head, '|' + '---|' * (3 + len(CHIPS))]
  for r, p in sorted(out['update'].items()):
    m = out['rows'] // (r * out['shards'])
    lines.append(f'| update | {r} rows/device/micro-batch ({m} micro-batches) | {gib(p.need)} | '
                 + ' | '.join('fits' if fits(p.need, c, headroom) else '-' for c in CHIPS) + ' |')
  for n, p in sorted(out['sampler'].items()):
    lines.append(f'| sampler | {n} prompts x {args.num_samples} per call | {gib(p.need)} | '
                 + ' | '.join('fits' if fits(p.need, c, headroom) else '-' for c in CHIPS) + ' |')
  if out['scorer'] is not None:
    p = out['scorer']
    lines.append(f'| KL scorer | {out["scorer_rows"]} rows/device/micro-batch | {gib(p.need)} | '
                 + ' | '.join('fits' if fits(p.need, c, headroom) else '-' for c in CHIPS) + ' |')
  lines += ['', f'largest that fits (need <= {headroom:.0%} of HBM):']
  for c in CHIPS:
    up = [r for r, p in out['update'].items() if fits(p.need, c, headroom)]
    sa = [n for n, p in out['sampler'].items() if fits(p.need, c, headroom)]
    flag = f' (--micro_batches={out["rows"] // (max(up) * out["shards"])})' if up else ''
    lines.append(f'  {c:>5}: update {max(up) if up else "none"} rows/device/micro-batch{flag}; '
                 f'sampler {max(sa) if sa else "none"} prompts per call')
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model_shape', default='qwen2.5-math-1.5b', choices=sorted(model.PRESETS))
  p.add_argument('--mesh', default='1,8,1', help='data,fsdp,tensor (-1: the remaining devices)')
  p.add_argument('--devices', type=int, default=8, help='fake CPU devices to simulate')
  p.add_argument('--num_prompts', type=int, default=16)
  p.add_argument('--num_samples', type=int, default=32)
  p.add_argument('--prompt_len', type=int, default=1024)
  p.add_argument('--response_len', type=int, default=3072)
  p.add_argument('--remat', action=argparse.BooleanOptionalAction, default=True)
  p.add_argument('--param_dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--dtype', default='bfloat16', choices=['float32', 'bfloat16'])
  p.add_argument('--kl', action=argparse.BooleanOptionalAction, default=True,
                 help='keep a reference policy for the KL term (the paper: 0.001)')
  p.add_argument('--micro_rows', default='', help='rows per device per micro-batch to compile, e.g. 1,2,4 '
                 '(default: doublings until the largest chip is exceeded)')
  p.add_argument('--sampler_prompts', default='', help='prompts per sampler call to compile (default: doublings)')
  p.add_argument('--headroom', type=float, default=0.9)
  args = p.parse_args()
  update.compiler_options = lambda mesh: None   # XLA:CPU's defaults, as the tables were measured
  jax.config.update('jax_num_cpu_devices', args.devices)
  mesh = sharding.parse_mesh(args.mesh, args.devices)
  ints = lambda s: [int(x) for x in s.split(',')] if s else None
  print(f'compiling on {jax.device_count()} fake CPU devices ...', flush=True)
  out = run_plan(args.model_shape, mesh, args.num_prompts, args.num_samples, args.prompt_len, args.response_len,
                 args.remat, args.param_dtype, args.dtype, args.kl, args.headroom, ints(args.micro_rows),
                 ints(args.sampler_prompts))
  print()
  print(report(out, args, args.headroom))


if __name__ == '__main__':
  main()
