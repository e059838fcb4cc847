"""Where the sampler's time goes: one `sample.sample` call under the JAX profiler, its XLA ops grouped by role.

Run: python bench/sample_profile.py --size 16x8        (about 1 minute on a 2-core CPU)
     python bench/sample_profile.py --size 1x1

Same model, prompts and N as bench/sample_bench.py. XLA CPU records one trace event per executed op (thunk);
each op is put in a group from its name and shape in the compiled HLO:
  weight matmuls    the q/k/v, o, gate/up and down projections (dots with a 2-D output)
  attention         the two batched dots over the KV cache, (B*K, G, S) and (B*K, G, Q), with the softmax fused
  head + sampling   the unembedding, log-softmax and inverse-CDF draw, (B, V)
  prefill           model.forward over the prompts (the layer scan)
  other             norms, rotary embedding, cache writes, bookkeeping
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model  # noqa: E402
import sample  # noqa: E402
from bench.sample_bench import CONFIG, make_prompts  # noqa: E402


def group(shape: str, op: str, meta: str, cfg: model.Config) -> str:
  dims = [int(d) for d in re.findall(r'\d+', shape.split('{')[0][4:])] if shape.startswith('f32[') else []
  if '/prefill/' in meta:   # sample.py's named scope
    return 'prefill'
  if 'log_softmax' in meta or 'cumsum' in meta or (len(dims) == 2 and dims[1] == cfg.vocab_size):
    return 'head + sampling'
  if len(dims) == 3 and dims[1] == cfg.num_heads // cfg.num_kv_heads:
    return 'attention'
  if ('dot_general' in meta or op == 'dot') and len(dims) == 2:
    return 'weight matmuls'
  return 'other'


def hlo_ops(compiled) -> dict[str, tuple[str, str, str]]:
  """Op name -> (shape, opcode, JAX op_name metadata), read from the HLO text of a compiled executable."""
  ops = {}
  for line in compiled.as_text().split('\n'):
    m = re.match(r'\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(', line)
    if m:
      meta = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = (m.group(2), m.group(3), meta.group(1) if meta else '')
  return ops


def trace_events(fn) -> tuple[float, list[dict]]:
  """fn() once under the JAX profiler: (wall seconds, the trace's events)."""
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      t = time.perf_counter()
      fn()
      wall = time.perf_counter() - t
    trace = json.load(gzip.open(glob.glob(os.path.join(d, '**', '*.trace.json.gz'), recursive=True)[0]))
  return wall, trace['traceEvents']


def op_times(fn) -> tuple[float, collections.Counter]:
  """fn() once under the JAX profiler: (wall seconds, op name -> milliseconds in its trace events)."""
  wall, events = trace_events(fn)
  times = collections.Counter()
  for e in events:
    if e.get('ph') == 'X':
      times[e['name']] += e['dur'] / 1e3
  return wall, times


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--size', default='16x8', help='PxG: P prompts, G samples each')
  parser.add_argument('--new_tokens', type=int, default=128)
  args = parser.parse_args()
  P, G = (int(n) for n in args.size.split('x'))
  N = args.new_tokens
  cfg = model.Config(**CONFIG)
  params = model.init_params(cfg, jax.random.key(0))
  prompts = make_prompts(P)
  call = lambda k: jax.block_until_ready(sample.sample(params, cfg, prompts, num_samples=G, max_new_tokens=N,
                                                       temperature=1.0, key=jax.random.key(k), eos_ids=[]).tokens)
  call(0)   # compile
  wall, times = op_times(lambda: call(1))
  # Op name -> (shape, opcode, metadata) from the compiled HLO of the same call.
  tokens, valid = sample.pad_prompts(prompts, 0)
  weights = sample.sampler_weights(params, cfg) if sample.weights_apart(cfg) else None
  ops = hlo_ops(sample._sample.lower(params, weights, cfg, tokens, valid,
                                     jax.random.key(0), jnp.float32(1), jnp.float32(1),
                                     jnp.zeros((cfg.vocab_size,), bool), jnp.int32(0), num_samples=G,
                                     max_new_tokens=N, greedy=False, nucleus=False, mesh=None).compile())
  total = collections.Counter()
  for name, ms in times.items():
    if name in ops:
      total[group(*ops[name], cfg)] += ms
  busy = sum(total.values())
  print(f'{args.size}: {P * G * N / wall:,.0f} tok/s, {wall * 1e3:.0f} ms for {N} tokens per row; time in ops '
        f'{busy:.0f} ms')
  for name, ms in total.most_common():
    print(f'  {name:16s} {ms:8.1f} ms {ms / N:7.2f} ms/step  {ms / busy:6.1%}')


if __name__ == '__main__':
  main()
