"""Where the update step's time goes: one `update.make_train_step` call under the JAX profiler, its XLA ops
grouped by role, forward and backward apart.

Run: python bench/train_profile.py                   (about 2 minutes on a 2-core CPU)
     python bench/train_profile.py --num_prompts=2 --response_len=512

Same policy and batch as bench/train_bench.py. XLA CPU records one trace event per executed op (thunk); each op
is put in a group from the name scope and shape its metadata carries in the compiled HLO (model.py and
update.py name the scopes `norm`, `rope`, `attention` and `head`):
  layer matmuls     the q/k/v, o, gate/up and down projections and their gradients (dots outside attention)
  attention         QK^T, the masked softmax, PV, and their gradients
  norms + rotary    the RMSNorms (residual stream, q/k heads) and the rotary embedding
  head              the LM head, log-probs and entropy over V, and their gradients
  layer stacking    the layer loop's bookkeeping: slicing a layer's weights and saved activations out of the
                    stacked (L, ...) arrays, and writing them and the weight gradients back
  optimizer         everything after the gradient: the global norm, clipping, AdamW, applying the update
  other             elementwise work between them: SwiGLU, residual adds, the embedding lookup and its
                    gradient, casts, copies
Each op's time is its share of the wall time, from its start to its end, with every moment split evenly among
the ops running then, on either core; so the groups add up to the time some op was running (the rest is the
executor between ops). On the CPU the step compiles with XLA's own kernels (update.compiler_options), which hand
a dot's work to their thread pool: the dot's trace event ends at the handover, and its end is the later
'end: <op>' event that marks the work done. --no-xla_kernels: XLA:CPU's defaults.
"""
import argparse
import bisect
import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hostmem  # noqa: E402

if __name__ == '__main__':
  hostmem.keep_freed_memory()   # as train.py does, before numpy and JAX start threads

import jax  # noqa: E402

import model  # noqa: E402
import sharding  # noqa: E402
import update  # noqa: E402
from bench.sample_profile import hlo_ops, trace_events  # noqa: E402
from bench.train_bench import CFG, batch_args, make_batch  # noqa: E402

GROUPS = ('layer matmuls', 'attention', 'norms + rotary', 'head', 'layer stacking', 'optimizer', 'other')


def group(op: str, meta: str) -> str:
  """The role of one HLO op, from its opcode and its metadata's op_name (the JAX name stack)."""
  if 'jvp(' not in meta and 'transpose(' not in meta:
    # Outside the differentiated function: the optimizer, or buffers with no source (zero-filled stacks).
    return 'optimizer' if meta else 'layer stacking'
  scopes = set(re.split(r'[/()]', meta))   # 'jit(step)/transpose(jvp(head))/dot_general' -> {'head', ...}
  if 'head' in scopes:
    return 'head'
  if 'attention' in scopes:
    return 'attention'
  if 'norm' in scopes or 'rope' in scopes:
    return 'norms + rotary'
  if 'dynamic_slice' in meta or 'dynamic_update_slice' in meta or 'dynamic_index_in_dim' in meta:
    return 'layer stacking'
  if op == 'dot' or 'dot_general' in meta:
    return 'layer matmuls'
  return 'other'


def spans_of(events, ops) -> list[tuple[str, float, float]]:
  """[(op name, start, end)] in microseconds of the trace's complete events for the HLO ops in `ops`. An op's end
  is the first 'end: <op>' event after its start where there is one (work handed to a thread pool), else the end
  of its own event."""
  starts, ends = [], collections.defaultdict(list)
  for e in events:
    if e.get('ph') != 'X':
      continue
    if e['name'] in ops:
      starts.append((e['name'], e['ts'], e['ts'] + e['dur']))
    elif e['name'].startswith('end: ') and e['name'][5:] in ops:
      ends[e['name'][5:]].append(e['ts'] + e['dur'])
  for times in ends.values():
    times.sort()
  spans = []
  for name, a, b in sorted(starts, key=lambda s: s[1]):
    later = ends[name]
    i = bisect.bisect_left(later, a)
    if i < len(later):
      b = max(b, later.pop(i))
    spans.append((name, a, b))
  return spans


def wall_ms(spans) -> collections.Counter:
  """Op name -> milliseconds of wall time: every moment split evenly among the spans running then."""
  edges = sorted([(a, 1, i) for i, (_, a, _) in enumerate(spans)] + [(b, -1, i) for i, (_, _, b) in enumerate(spans)])
  out, running, last = collections.Counter(), set(), None
  for t, kind, i in edges:
    if running and t > last:
      for j in running:
        out[spans[j][0]] += (t - last) / len(running) / 1e3
    if kind == 1:
      running.add(i)
    else:
      running.discard(i)
    last = t
  return out


def main():
  p = batch_args(argparse.ArgumentParser(description=__doc__.split('\n')[0]))
  p.add_argument('--top', type=int, default=0, help='also list the N slowest ops (group, shape, JAX name)')
  p.add_argument('--xla_kernels', action=argparse.BooleanOptionalAction, default=True,
                 help="as train.py (update.compiler_options); --no-xla_kernels: XLA:CPU's defaults (YNNPACK's)")
  args = p.parse_args()
  if not args.xla_kernels:
    update.compiler_options = lambda mesh: None
  cfg, rows = CFG, args.num_prompts * args.num_samples
  mesh = sharding.make_mesh((1, 1, 1))
  params = model.init_params(cfg, jax.random.key(0))
  opt = update.make_optimizer(1e-6)
  shardings = sharding.state_shardings(opt, params, sharding.param_shardings(cfg, mesh), mesh)
  loss_fn = lambda p, c, b: update.policy_loss(p, c, b, temperature=1.0, clip_eps=0.2, kl_coef=0.0, entropy_coef=0.0)
  step = update.make_train_step(cfg, loss_fn, opt, shardings, mesh)
  batch = sharding.global_batch(make_batch(rows, args.prompt_len, args.response_len, cfg.vocab_size), mesh)
  state = sharding.init_state(opt, params, shardings)
  ops = hlo_ops(step.lower(state, batch).compile())   # op name -> (shape, opcode, metadata), the same call's
  state, aux = step(state, batch)   # compile, and the first call's allocations
  jax.block_until_ready(aux)

  def one_step():
    nonlocal state
    state, aux = step(state, batch)
    jax.block_until_ready(aux)
  wall, events = trace_events(one_step)
  spans = spans_of(events, ops)
  total = collections.defaultdict(float)   # (group, 'fwd' | 'bwd') -> ms
  per_op = wall_ms(spans)
  for name, ms in per_op.items():
    shape, op, meta = ops[name]
    total[group(op, meta), 'bwd' if 'transpose(' in meta else 'fwd'] += ms
  busy = sum(total.values())
  print(f'policy {cfg.num_layers} layers, d_model {cfg.d_model}; batch {rows} rows x ({args.prompt_len} + '
        f'{args.response_len}) tokens; XLA\'s own fused kernels (update.compiler_options): '
        f'{"yes" if args.xla_kernels else "no"}; step {wall * 1e3:.0f} ms wall, {busy:.0f} ms with ops running')
  print(f'  {"group":16s} {"forward":>10s} {"backward":>10s} {"total":>10s} {"share":>7s}')
  for g in sorted(GROUPS, key=lambda g: -(total[g, 'fwd'] + total[g, 'bwd'])):
    ms = total[g, 'fwd'] + total[g, 'bwd']
    print(f'  {g:16s} {total[g, "fwd"]:7.0f} ms {total[g, "bwd"]:7.0f} ms {ms:7.0f} ms {ms / busy:7.1%}')
  for name, ms in per_op.most_common(args.top):
    shape, op, meta = ops[name]
    print(f'  {ms:7.1f} ms  {group(op, meta):14s} {shape.split("{")[0]:24s} {meta.removeprefix("jit(step)/")}')


if __name__ == '__main__':
  main()
