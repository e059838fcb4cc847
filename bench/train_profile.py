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
XLA runs independent ops at the same time on different cores, so the ops' times add up to more than the wall
time when it does; the shares are of the ops' total.
"""
import argparse
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
from bench.sample_profile import hlo_ops, op_times  # noqa: E402
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


def main():
  p = batch_args(argparse.ArgumentParser(description=__doc__.split('\n')[0]))
  p.add_argument('--top', type=int, default=0, help='also list the N slowest ops (group, shape, JAX name)')
  args = p.parse_args()
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
  wall, times = op_times(one_step)
  total = collections.defaultdict(float)   # (group, 'fwd' | 'bwd') -> ms
  per_op = collections.Counter()
  for name, ms in times.items():
    if name in ops:
      shape, op, meta = ops[name]
      total[group(op, meta), 'bwd' if 'transpose(' in meta else 'fwd'] += ms
      per_op[name] += ms
  busy = sum(total.values())
  print(f'policy {cfg.num_layers} layers, d_model {cfg.d_model}; batch {rows} rows x ({args.prompt_len} + '
        f'{args.response_len}) tokens; step {wall * 1e3:.0f} ms wall, {busy:.0f} ms in ops')
  print(f'  {"group":16s} {"forward":>10s} {"backward":>10s} {"total":>10s} {"share":>7s}')
  for g in sorted(GROUPS, key=lambda g: -(total[g, 'fwd'] + total[g, 'bwd'])):
    ms = total[g, 'fwd'] + total[g, 'bwd']
    print(f'  {g:16s} {total[g, "fwd"]:7.0f} ms {total[g, "bwd"]:7.0f} ms {ms:7.0f} ms {ms / busy:7.1%}')
  for name, ms in per_op.most_common(args.top):
    shape, op, meta = ops[name]
    print(f'  {ms:7.1f} ms  {group(op, meta):14s} {shape.split("{")[0]:24s} {meta.removeprefix("jit(step)/")}')


if __name__ == '__main__':
  main()
