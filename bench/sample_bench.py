"""Sampling speed of sample.py against its peers, on the same random Qwen2 weights, side by side in one run.

Run: python bench/sample_bench.py                 (about 5-10 minutes on a 2-core CPU)
     python bench/sample_bench.py --sizes 1x1,16x8,64x1 --repeats 3 --skip_hf --skip_tunix

The model: a Qwen2-shaped decoder of ~24M parameters (hidden 512, 8 layers, 8 heads, 2 kv heads, head dim 64,
MLP 1408, vocabulary 2048, tied embeddings), random weights (model.init_params) saved once as a Hugging Face
checkpoint that every sampler loads. Prompts of 32 random tokens; N = 128 new tokens at temperature 1, top-p 1,
and every row runs to N tokens (no EOS). A size PxG is P prompts with G samples each (P * G rows).

Timed: the whole call (prefill + decode), best of --repeats, after one untimed warm-up call (compilation).
  ours   sample.sample (jitted prefill + lax.while_loop decode)
  HF     transformers generate, PyTorch CPU, do_sample, top_k=0, min_new_tokens=N, num_return_sequences=G
  Tunix  google-tunix's Sampler on its Qwen2 (weights from the same safetensors), run as a subprocess with the
         python of a separate venv (--tunix_python, default /tmp/tunix-venv/bin/python: `python3 -m venv
         /tmp/tunix-venv && /tmp/tunix-venv/bin/pip install google-tunix`); skipped if absent. Tunix has no
         samples-per-prompt argument, so each prompt is repeated G times.

Ceilings (a roofline for this model on this machine): compute = measured float32 matmul FLOP/s / (2 * matmul
parameters per token); memory = measured copy bandwidth (bytes read + written per second) / bytes of weights
read per decode step. A size of R rows can do at most min(R * memory ceiling, compute ceiling) tokens/s
(attention and the KV cache are left out: they are small next to the weights here).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = dict(vocab_size=2048, d_model=512, num_layers=8, num_heads=8, num_kv_heads=2, head_dim=64, mlp_dim=1408,
              tie_embeddings=True)
PROMPT_LEN = 32


def make_prompts(num_prompts: int) -> list[list[int]]:
  """The same prompts in every process: random ids in [1, V) (0 is the pad id)."""
  return np.random.RandomState(num_prompts).randint(1, CONFIG['vocab_size'], (num_prompts, PROMPT_LEN)).tolist()


def best_time(fn, repeats: int, warmup=None) -> float:
  (warmup or fn)()   # warm-up: compilation, allocations
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def parse_sizes(text: str) -> list[tuple[int, int]]:
  return [tuple(int(n) for n in s.split('x')) for s in text.split(',')]


# ----------------------------------------------------------------------------------------------------------------
# Ceilings


def ceilings(cfg) -> dict:
  import jax
  import jax.numpy as jnp
  import model
  n = 2048
  a = np.random.RandomState(0).rand(n, n).astype(np.float32)
  x = jnp.asarray(a)
  matmul = jax.jit(lambda x: x @ x)
  flops = max(2 * n ** 3 / best_time(lambda: a @ a, 5),
              2 * n ** 3 / best_time(lambda: matmul(x).block_until_ready(), 5))
  big = np.ones(64 * 2 ** 20, np.float32)   # 256 MiB
  out = np.empty_like(big)
  bandwidth = 2 * big.nbytes / best_time(lambda: np.copyto(out, big), 5)
  shapes = model.param_shapes(cfg)
  count = lambda tree: sum(int(np.prod(s)) for s in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, tuple)))
  total = count(shapes)
  matmul_params = count(shapes['layers']) + cfg.vocab_size * cfg.d_model   # per layer + LM head (embedding rows)
  weight_bytes = 4 * total                                                   # float32, all read once per step
  return dict(params=total, flops=flops, bandwidth=bandwidth, compute_tok_s=flops / (2 * matmul_params),
              memory_tok_s=bandwidth / weight_bytes)


# ----------------------------------------------------------------------------------------------------------------
# The three samplers. Each returns {size: tokens/s}.


def bench_ours(cfg, params, sizes, new_tokens, repeats) -> dict:
  import jax
  import sample
  out = {}
  for P, G in sizes:
    prompts = make_prompts(P)
    run = lambda: jax.block_until_ready(sample.sample(
        params, cfg, prompts, num_samples=G, max_new_tokens=new_tokens, temperature=1.0,
        key=jax.random.key(int(time.perf_counter() * 1e6) % 2 ** 31), eos_ids=[]).tokens)
    out[f'{P}x{G}'] = P * G * new_tokens / best_time(run, repeats)
  return out


def bench_hf(path, sizes, new_tokens, repeats) -> dict:
  import torch
  import transformers
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
  out = {}
  for P, G in sizes:
    ids = torch.tensor(make_prompts(P))

    def run(n=new_tokens):
      with torch.no_grad():
        seqs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                           top_p=1.0, max_new_tokens=n, min_new_tokens=n, num_return_sequences=G,
                           use_cache=True, pad_token_id=0, eos_token_id=1)
      assert seqs.shape == (P * G, PROMPT_LEN + n), seqs.shape
    # Eager PyTorch compiles nothing: a short warm-up call is enough.
    out[f'{P}x{G}'] = P * G * new_tokens / best_time(run, repeats, warmup=lambda: run(8))
  return out


def greedy_check(cfg, params, path, tunix_python) -> str:
  """Same weights, same model? The first 8 greedy tokens of one prompt, from each implementation."""
  import jax
  import torch
  import transformers
  import sample
  prompt = make_prompts(1)
  ours = np.asarray(sample.sample(params, cfg, prompt, num_samples=1, max_new_tokens=8, temperature=0.0,
                                  key=jax.random.key(0), eos_ids=[]).tokens)[0].tolist()
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
  ref = hf.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
                    eos_token_id=1)[0, PROMPT_LEN:].tolist()
  line = f'greedy 8 tokens: ours {ours}, HF {"same" if ref == ours else ref}'
  if os.path.exists(tunix_python):
    res = subprocess.run([tunix_python, __file__, '--tunix_worker', '--greedy', '--ckpt', path],
                         capture_output=True, text=True)
    got = [json.loads(l[6:]) for l in res.stdout.splitlines() if l.startswith('TUNIX ')]
    line += f', Tunix {("same" if got[0] == ours else got[0]) if got else "failed: " + res.stderr[-300:]}'
  return line


def bench_tunix(tunix_python, path, sizes, new_tokens, repeats) -> dict:
  sizes_arg = ','.join(f'{P}x{G}' for P, G in sizes)
  res = subprocess.run([tunix_python, __file__, '--tunix_worker', '--ckpt', path, '--sizes', sizes_arg,
                        '--new_tokens', str(new_tokens), '--repeats', str(repeats)], capture_output=True, text=True)
  out = {}
  for line in res.stdout.splitlines():
    if line.startswith('TUNIX '):
      out.update(json.loads(line[6:]))
  if not out:
    print(f'Tunix failed:\n{res.stderr[-2000:]}')
  return out


def tunix_worker(args):
  """Runs inside the Tunix venv: loads the checkpoint into Tunix's Qwen2 and times its Sampler."""
  import jax
  from tunix.generate import sampler as tunix_sampler
  from tunix.models.qwen2 import model as qwen2
  from tunix.models.qwen2 import params as qwen2_params
  cfg = qwen2.ModelConfig(num_layers=CONFIG['num_layers'], vocab_size=CONFIG['vocab_size'],
                          embed_dim=CONFIG['d_model'], hidden_dim=CONFIG['mlp_dim'], num_heads=CONFIG['num_heads'],
                          head_dim=CONFIG['head_dim'], num_kv_heads=CONFIG['num_kv_heads'], rope_theta=10000,
                          norm_eps=1e-6, use_tied_embedding=CONFIG['tie_embeddings'])
  policy = qwen2_params.create_model_from_safe_tensors(args.ckpt, cfg)

  class IdTokenizer:   # prompts travel as space-separated ids; no BOS; pad 0
    def encode(self, text, **kw):
      return [int(t) for t in text.split()]

    def decode(self, ids, **kw):
      return ' '.join(map(str, ids))

    def bos_id(self):
      return None

    def eos_id(self):
      return -1

    def pad_id(self):
      return 0

  cache = tunix_sampler.CacheConfig(cache_size=PROMPT_LEN + args.new_tokens, num_layers=cfg.num_layers,
                                    num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
  sampler = tunix_sampler.Sampler(policy, IdTokenizer(), cache)
  if args.greedy:
    out = sampler([' '.join(map(str, make_prompts(1)[0]))], max_generation_steps=8, temperature=0.0,
                  eos_tokens=[-1])
    print('TUNIX ' + json.dumps(np.asarray(out.tokens[0]).tolist()), flush=True)
    return
  for P, G in parse_sizes(args.sizes):
    texts = [' '.join(map(str, p)) for p in make_prompts(P) for _ in range(G)]   # G adjacent copies

    def run():
      # eos -1 never matches a token: every row runs the full N steps.
      out = sampler(texts, max_generation_steps=args.new_tokens, temperature=1.0, top_p=1.0, eos_tokens=[-1],
                    seed=int(time.perf_counter() * 1e6) % 2 ** 31)
      jax.block_until_ready(out.tokens)
      assert all(len(t) == args.new_tokens for t in out.tokens)
    tok_s = P * G * args.new_tokens / best_time(run, args.repeats)
    print('TUNIX ' + json.dumps({f'{P}x{G}': tok_s}), flush=True)


# ----------------------------------------------------------------------------------------------------------------


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='1x1,16x8,64x1', help='comma-separated PxG: P prompts, G samples each')
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=2, help='timed calls per size (best is reported)')
  parser.add_argument('--skip_hf', action='store_true')
  parser.add_argument('--skip_tunix', action='store_true')
  parser.add_argument('--tunix_python', default='/tmp/tunix-venv/bin/python')
  parser.add_argument('--tunix_worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--greedy', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--ckpt', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.tunix_worker:
    return tunix_worker(args)

  import jax
  import model
  sizes = parse_sizes(args.sizes)
  cfg = model.Config(**CONFIG)
  params = model.init_params(cfg, jax.random.key(0))
  path = tempfile.mkdtemp(prefix='sample_bench_')
  model.save_hf_checkpoint(path, cfg, params)
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} cores; '
        f'N = {args.new_tokens} new tokens, prompt {PROMPT_LEN}, best of {args.repeats}')
  c = ceilings(cfg)
  print(f'{c["params"] / 1e6:.1f}M parameters; matmul {c["flops"] / 1e9:.0f} GFLOP/s -> compute ceiling '
        f'{c["compute_tok_s"]:,.0f} tok/s; copy bandwidth {c["bandwidth"] / 1e9:.1f} GB/s -> memory ceiling '
        f'{c["memory_tok_s"]:,.0f} tok/s per row')
  have_tunix = not args.skip_tunix and os.path.exists(args.tunix_python)
  if not args.skip_tunix and not have_tunix:
    print(f'Tunix skipped: {args.tunix_python} not found (see the module docstring to create the venv)')
  if not args.skip_hf:
    print(greedy_check(cfg, params, path, args.tunix_python if have_tunix else ''))

  results = {'ours': bench_ours(cfg, params, sizes, args.new_tokens, args.repeats)}
  if not args.skip_hf:
    results['HF'] = bench_hf(path, sizes, args.new_tokens, args.repeats)
  if have_tunix:
    results['Tunix'] = bench_tunix(args.tunix_python, path, sizes, args.new_tokens, args.repeats)

  peers = [name for name in ('HF', 'Tunix') if name in results]
  head = f'{"size":>6} {"rows":>5} {"ceiling":>8} ' + ' '.join(f'{n + " tok/s":>12}' for n in results)
  head += ' ' + ' '.join(f'{"ours/" + p:>10}' for p in peers) + f' {"ours/ceiling":>12}'
  print(head)
  for P, G in sizes:
    size = f'{P}x{G}'
    ceiling = min(P * G * c['memory_tok_s'], c['compute_tok_s'])
    row = f'{size:>6} {P * G:>5} {ceiling:>8,.0f} '
    row += ' '.join(f'{results[n].get(size, float("nan")):>12,.0f}' for n in results)
    row += ' ' + ' '.join(f'{results["ours"][size] / results[p].get(size, float("nan")):>10.2f}' for p in peers)
    row += f' {results["ours"][size] / ceiling:>12.0%}'
    print(row)


if __name__ == '__main__':
  main()
