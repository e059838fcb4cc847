"""Sampling speed of sample.py against its peers, on the same random Qwen2 weights, side by side in one run.

Run: python bench/sample_bench.py                 (about 5 minutes on a quiet 2-core CPU)
     python bench/sample_bench.py --sizes 1x1,16x8 --repeats 3 --skip_hf --skip_tunix

The model: a Qwen2-shaped decoder of 23.6M parameters (hidden 512, 8 layers, 8 heads, 2 kv heads, head dim 64,
MLP 1408, vocabulary 2048, tied embeddings), random weights (model.init_params) saved once as a Hugging Face
checkpoint that every sampler loads. Prompts of 32 random tokens; N = 128 new tokens at temperature 1, top-p 1,
and every row runs to N tokens (no EOS). A size PxG is P prompts with G samples each (P * G rows).

Timed: the whole call (prefill + decode), after one untimed warm-up call per size (compilation).
  ours   sample.sample (jitted prefill + lax.while_loop decode)
  HF     transformers generate, PyTorch CPU, do_sample, top_k=0, min_new_tokens=N, num_return_sequences=G
  Tunix  google-tunix's Sampler on its Qwen2 (weights from the same safetensors), in a worker process run by the
         python of a separate venv (--tunix_python, default .tunix-venv/bin/python in the project: `python3 -m
         venv .tunix-venv && .tunix-venv/bin/pip install google-tunix`); skipped if absent. Tunix has no
         samples-per-prompt argument, so each prompt is repeated G times.
The machine may be shared, and its speed then drifts by several times within minutes. So the measurements are
interleaved: each of --repeats rounds times the ceilings, ours, HF and Tunix back to back, and each reports its
best round. Compare the ratios, measured side by side, more than the absolute numbers.

Ceilings (a roofline for this model on this machine): compute = measured float32 matmul FLOP/s / (2 * matmul
parameters per token); memory = measured copy bandwidth (bytes read + written per second) / bytes of weights
read per decode step. A size of R rows can do at most min(R * memory ceiling, compute ceiling) tokens/s
(prefill, attention and the KV cache are left out: they are small next to the weights here).
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


def timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def cpu_line() -> str:
  """The CPU's name, family/model and widest vector unit, from /proc/cpuinfo where there is one. Ceilings differ
  from CPU to CPU, and so do the peers' kernels: PyTorch's float32 matmuls ran at half XLA's speed on one machine
  (an AMD EPYC with AVX-512) and about as fast as XLA's on another (an Intel Xeon)."""
  info = {}
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if not line.strip():
          break   # the first processor's block
        info[key.strip()] = value.strip()
  flags = set(info.get('flags', '').split())
  vector = next((name for flag, name in [('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('asimd', 'NEON')]
                 if flag in flags), 'vector unit unknown')
  name = info.get('model name') or info.get('Model name') or 'CPU model unknown'
  return f'{name} (family {info.get("cpu family", "?")}, model {info.get("model", "?")}), {vector}'


def parse_sizes(text: str) -> list[tuple[int, int]]:
  return [tuple(int(n) for n in s.split('x')) for s in text.split(',')]


# ----------------------------------------------------------------------------------------------------------------
# Ceilings


class Ceilings:
  """Measures the machine's matmul FLOP/s and copy bandwidth; converts them to tokens/s for the model."""

  def __init__(self, cfg):
    import jax
    import jax.numpy as jnp
    import model
    n = 2048
    self.a = np.random.RandomState(0).rand(n, n).astype(np.float32)
    x = jnp.asarray(self.a)
    matmul = jax.jit(lambda x: x @ x)
    self.jax_matmul = lambda: matmul(x).block_until_ready()
    self.jax_matmul()
    self.big = np.ones(64 * 2 ** 20, np.float32)   # 256 MiB
    self.out = np.empty_like(self.big)
    count = lambda tree: sum(int(np.prod(s)) for s in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, tuple)))
    shapes = model.param_shapes(cfg)
    self.params = count(shapes)
    self.matmul_params = count(shapes['layers']) + cfg.vocab_size * cfg.d_model   # layers + LM head
    self.weight_bytes = 4 * self.params                                            # float32, each read once a step

  def measure(self) -> dict:
    n = self.a.shape[0]
    flops = 2 * n ** 3 / min(min(timed(lambda: self.a @ self.a), timed(self.jax_matmul)) for _ in range(3))
    bandwidth = 2 * self.big.nbytes / min(timed(lambda: np.copyto(self.out, self.big)) for _ in range(3))
    return dict(flops=flops, bandwidth=bandwidth, compute_tok_s=flops / (2 * self.matmul_params),
                memory_tok_s=bandwidth / self.weight_bytes)


# ----------------------------------------------------------------------------------------------------------------
# The three samplers: for a size, (warm-up, timed call returning seconds).


def ours(cfg, params, P, G, new_tokens):
  import jax
  import sample
  prompts = make_prompts(P)
  calls = iter(range(10 ** 6))

  def run():
    rollout = sample.sample(params, cfg, prompts, num_samples=G, max_new_tokens=new_tokens, temperature=1.0,
                            key=jax.random.key(next(calls)), eos_ids=[])
    jax.block_until_ready(rollout.tokens)
  return run, lambda: timed(run)


def huggingface(torch_model, P, G, new_tokens):
  import torch
  ids = torch.tensor(make_prompts(P))

  def run(n=new_tokens):
    with torch.no_grad():
      seqs = torch_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                  top_k=0, top_p=1.0, max_new_tokens=n, min_new_tokens=n, num_return_sequences=G,
                                  use_cache=True, pad_token_id=0, eos_token_id=1)
    assert seqs.shape == (P * G, PROMPT_LEN + n), seqs.shape
  return (lambda: run(8)), lambda: timed(run)   # eager PyTorch compiles nothing: a short warm-up is enough


class TunixWorker:
  """Tunix in its own venv, as a process that stays up: one command per line in, one 'TUNIX ...' line out."""

  def __init__(self, python, path, new_tokens):
    self.log = tempfile.NamedTemporaryFile('w+', prefix='tunix_', suffix='.log', delete=False)
    self.proc = subprocess.Popen([python, __file__, '--tunix_worker', '--ckpt', path, '--new_tokens',
                                  str(new_tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, bufsize=1)

  def call(self, command: str):
    self.proc.stdin.write(command + '\n')
    for line in self.proc.stdout:
      if line.startswith('TUNIX '):
        return json.loads(line[6:])
    self.log.seek(0)
    raise RuntimeError(f'Tunix worker died:\n{self.log.read()[-3000:]}')

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def tunix_worker(args):
  """Runs inside the Tunix venv: loads the checkpoint into Tunix's Qwen2, answers 'greedy', 'run PxG' lines."""
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
  for seed, command in enumerate(sys.stdin):
    if command.strip() == 'greedy':
      out = sampler([' '.join(map(str, make_prompts(1)[0]))], max_generation_steps=8, temperature=0.0,
                    eos_tokens=[-1])
      print('TUNIX ' + json.dumps(np.asarray(out.tokens[0]).tolist()), flush=True)
      continue
    P, G = parse_sizes(command.split()[1])[0]
    texts = [' '.join(map(str, p)) for p in make_prompts(P) for _ in range(G)]   # G adjacent copies

    def run():
      # eos -1 never matches a token: every row runs the full N steps.
      out = sampler(texts, max_generation_steps=args.new_tokens, temperature=1.0, top_p=1.0, eos_tokens=[-1],
                    seed=seed)
      jax.block_until_ready(out.tokens)
      assert all(len(t) == args.new_tokens for t in out.tokens)
    print('TUNIX ' + json.dumps(timed(run)), flush=True)


# ----------------------------------------------------------------------------------------------------------------


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='1x1,16x8,64x1', help='comma-separated PxG: P prompts, G samples each')
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=2, help='timed rounds per size (each reports its best)')
  parser.add_argument('--skip_hf', action='store_true')
  parser.add_argument('--skip_tunix', action='store_true')
  parser.add_argument('--tunix_python', default=os.path.join(ROOT, '.tunix-venv', 'bin', 'python'))
  parser.add_argument('--tunix_worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--ckpt', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.tunix_worker:
    return tunix_worker(args)

  import jax
  import hf
  import model
  import sample
  sizes = parse_sizes(args.sizes)
  cfg = model.Config(**CONFIG)
  params = model.init_params(cfg, jax.random.key(0))
  path = tempfile.mkdtemp(prefix='sample_bench_')
  hf.save_checkpoint(path, cfg, params)
  ceilings = Ceilings(cfg)
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}, {cpu_line()}, {os.cpu_count()} cores, '
        f'{ceilings.params / 1e6:.1f}M parameters; N = {args.new_tokens} new tokens, prompt {PROMPT_LEN}; best of '
        f'{args.repeats} interleaved rounds', flush=True)

  # Same weights, same model? The first 8 greedy tokens of one prompt, from each implementation.
  prompt = make_prompts(1)
  greedy = np.asarray(sample.sample(params, cfg, prompt, num_samples=1, max_new_tokens=8, temperature=0.0,
                                    key=jax.random.key(0), eos_ids=[]).tokens)[0].tolist()
  line = f'greedy 8 tokens: ours {greedy}'
  samplers = {'ours': lambda P, G: ours(cfg, params, P, G, args.new_tokens)}
  if not args.skip_hf:
    import torch
    import transformers
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                                    dtype=torch.float32).eval()
    ref = torch_model.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=8, min_new_tokens=8,
                               pad_token_id=0, eos_token_id=1)[0, PROMPT_LEN:].tolist()
    line += f', HF {"same" if ref == greedy else ref}'
    samplers['HF'] = lambda P, G: huggingface(torch_model, P, G, args.new_tokens)
  worker = None
  if not args.skip_tunix:
    if os.path.exists(args.tunix_python):
      worker = TunixWorker(args.tunix_python, path, args.new_tokens)
      ref = worker.call('greedy')
      line += f', Tunix {"same" if ref == greedy else ref}'
      samplers['Tunix'] = lambda P, G: (lambda: worker.call(f'run {P}x{G}'), lambda: worker.call(f'run {P}x{G}'))
    else:
      print(f'Tunix skipped: {args.tunix_python} not found (see the module docstring to create the venv)')
  print(line, flush=True)

  peers = [name for name in samplers if name != 'ours']
  head = f'{"size":>6} {"rows":>5} {"ceiling":>8} ' + ' '.join(f'{n + " tok/s":>12}' for n in samplers)
  head += ' ' + ' '.join(f'{"ours/" + p:>10}' for p in peers) + f' {"ours/ceiling":>12}'
  rows = []
  for P, G in sizes:
    runs = {name: make(P, G) for name, make in samplers.items()}
    for warmup, _ in runs.values():
      warmup()
    best = {name: float('inf') for name in runs}
    ceiling = 0.0
    for _ in range(args.repeats):
      c = ceilings.measure()
      ceiling = max(ceiling, min(P * G * c['memory_tok_s'], c['compute_tok_s']))
      for name, (_, run) in runs.items():
        best[name] = min(best[name], run())
    tok_s = {name: P * G * args.new_tokens / t for name, t in best.items()}
    row = f'{f"{P}x{G}":>6} {P * G:>5} {ceiling:>8,.0f} ' + ' '.join(f'{tok_s[n]:>12,.0f}' for n in samplers)
    row += ' ' + ' '.join(f'{tok_s["ours"] / tok_s[p]:>10.2f}' for p in peers) + f' {tok_s["ours"] / ceiling:>12.0%}'
    rows.append(row)
    print(f'{P}x{G} done: ' + ', '.join(f'{n} {v:,.0f} tok/s' for n, v in tok_s.items()), flush=True)
  if worker:
    worker.close()
  c = ceilings.measure()
  print(f'ceilings now: matmul {c["flops"] / 1e9:.0f} GFLOP/s -> compute {c["compute_tok_s"]:,.0f} tok/s; copy '
        f'{c["bandwidth"] / 1e9:.1f} GB/s -> memory {c["memory_tok_s"]:,.0f} tok/s per row '
        '(the table uses the best measured in each size\'s rounds)')
  print(head)
  print('\n'.join(rows))


if __name__ == '__main__':
  main()
