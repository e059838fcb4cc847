"""Speed of the training step on this machine's CPU: tokens/s, and the share of the measured matmul ceiling.

    python bench/train_bench.py                       # 25M-parameter policy, 4 prompts x 4 samples x (32 + 128)
    python bench/train_bench.py --num_prompts=16 --num_samples=8 --steps=2   # 3 TFLOP a step: minutes on 2 cores
    python bench/train_bench.py --compare --repeats=5   # XLA:CPU's defaults beside XLA's own kernels, alternating

Measured in one process, side by side, `--repeats` times (other work on the machine moves all numbers together,
so compare the ratios within a repeat):
  ceiling   float32 jnp.dot of two 2048 x 2048 matrices (best of several): the FLOP/s this CPU reaches in XLA;
  step      update.make_train_step with update.policy_loss and AdamW (what train.py runs), one device;
  fwd       the log-probs of the batch (update.token_logprobs) alone;
  fwd+bwd   the policy loss and its gradient, no optimizer (fwd and fwd+bwd compile as the step does:
            update.compiler_options, XLA's own fused kernels on the CPU; --no-xla_kernels: XLA:CPU's defaults;
            --compare: both, alternating in each repeat, and the ratio of their times);
  torch     transformers' Qwen2ForCausalLM (PyTorch) on the same weights (saved with hf.save_checkpoint):
            the same loss (token-mean of -A log p over the response tokens) forward and backward.
FLOPs per step, counted by hand: 6 x (matmul parameters of the layers x all B*T tokens + the LM head x the B*N
response tokens it is applied to) + attention 12 x L x B x T^2 x H x Q (QK^T and PV, both full T x T as
computed; forward 1x, backward 2x). XLA's own count (compiled.cost_analysis()) is printed next to it (it counts
a rolled scan's body once; this policy's 8 layers are unrolled, model.UNROLL_LAYERS, so it sees them all).

The last line sums it up: jax/torch fwd+bwd = torch's fwd+bwd time / ours (above 1: ours is faster) and the
step's share of the ceiling, each the median over the repeats, with their range. Where the time of the step
goes: bench/train_profile.py.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hostmem  # noqa: E402

# As train.py does, before numpy and JAX start threads (--no-keep_freed_memory: glibc's defaults, for comparison)
KEPT = __name__ == '__main__' and '--no-keep_freed_memory' not in sys.argv and hostmem.keep_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import hf  # noqa: E402
import model  # noqa: E402
import sharding  # noqa: E402
import train  # noqa: E402
import update  # noqa: E402
from bench.sample_bench import cpu_line  # noqa: E402

CFG = model.Config(vocab_size=2048, d_model=512, num_layers=8, num_heads=8, num_kv_heads=2, head_dim=64,
                   mlp_dim=1408, tie_embeddings=True)


def make_batch(rows, Tp, N, V, seed=0):
  """A full batch: every prompt and response token real (no padding), so the PyTorch model sees the same thing."""
  rng = np.random.RandomState(seed)
  return {'prompt_tokens': rng.randint(3, V, (rows, Tp)).astype(np.int32), 'prompt_valid': np.ones((rows, Tp), bool),
          'tokens': rng.randint(3, V, (rows, N)).astype(np.int32), 'mask': np.ones((rows, N), np.float32),
          'old_logp': np.full((rows, N), -7.6, np.float32), 'ref_logp': np.full((rows, N), -7.6, np.float32),
          'advantages': rng.randn(rows).astype(np.float32), 'row_weight': np.ones(rows, np.float32)}


def step_flops(cfg, rows, Tp, N):
  T = Tp + N
  L, D, H, K, Q, F, V = (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim,
                         cfg.vocab_size)
  layer = D * H * Q + 2 * D * K * Q + H * Q * D + 3 * D * F
  matmul = 6 * (L * layer * rows * T + V * D * rows * N)
  attention = 12 * L * rows * T * T * H * Q
  return matmul + attention, matmul, attention


def best_time(fn, steps):
  """Best wall time of one call over `steps` calls (the machine is shared: the best is the least disturbed)."""
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def ceiling(n=2048, steps=5):
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  return 2 * n ** 3 / best_time(lambda: dot(a, b), steps)


def jax_fns(cfg, batch, rl):
  mesh = sharding.make_mesh((1, 1, 1))
  params = model.init_params(cfg, jax.random.key(0))
  opt = update.make_optimizer(rl.learning_rate)
  shardings = sharding.state_shardings(opt, params, sharding.param_shardings(cfg, mesh), mesh)
  loss_fn = lambda p, c, b: update.policy_loss(p, c, b, temperature=rl.temperature, clip_eps=rl.clip_eps,
                                               kl_coef=0.0, entropy_coef=0.0)
  step = update.make_train_step(cfg, loss_fn, opt, shardings, mesh)
  batch = sharding.global_batch(batch, mesh)
  state = sharding.init_state(opt, params, shardings)
  jit = lambda f: jax.jit(f, compiler_options=update.compiler_options(mesh))   # as the step's own program
  fwd = jit(lambda p, b: update.token_logprobs(p, cfg, b['prompt_tokens'], b['prompt_valid'], b['tokens'], b['mask'],
                                               rl.temperature))
  grad = jit(jax.value_and_grad(lambda p, b: loss_fn(p, cfg, b)[0]))
  box = {'state': state}

  def run_step():
    box['state'], aux = step(box['state'], batch)
    return aux
  xla_flops = step.lower(state, batch).compile().cost_analysis().get('flops', float('nan'))
  return params, {'step': run_step, 'fwd': lambda: fwd(params, batch), 'fwd+bwd': lambda: grad(params, batch)}, \
      xla_flops, fwd(params, batch)[0]


def torch_fns(cfg, params, batch, threads):
  """transformers' model on the same weights; the same loss; forward + backward."""
  import torch
  import transformers
  torch.set_num_threads(threads)
  d = tempfile.mkdtemp()
  hf.save_checkpoint(d, cfg, params)
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation='sdpa')
  torch_model.train()
  Tp = batch['prompt_tokens'].shape[1]
  ids = torch.from_numpy(np.concatenate([batch['prompt_tokens'], batch['tokens']], 1).astype(np.int64))
  tokens = torch.from_numpy(batch['tokens'].astype(np.int64))
  adv = torch.from_numpy(batch['advantages'])[:, None]
  mask = torch.from_numpy(batch['mask'])

  def logp():
    logits = torch_model(input_ids=ids).logits[:, Tp - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]

  def fwd_bwd():
    torch_model.zero_grad(set_to_none=True)
    loss = -(adv * logp() * mask).sum() / mask.sum()
    loss.backward()
    return loss

  def fwd():
    with torch.no_grad():
      return logp()
  return {'torch fwd': fwd, 'torch fwd+bwd': fwd_bwd}, fwd().numpy()


def batch_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The batch's flags, shared with bench/train_profile.py."""
  p.add_argument('--num_prompts', type=int, default=4)
  p.add_argument('--num_samples', type=int, default=4)
  p.add_argument('--prompt_len', type=int, default=32)
  p.add_argument('--response_len', type=int, default=128)
  return p


def main():
  p = batch_args(argparse.ArgumentParser(description=__doc__.split('\n')[0]))
  p.add_argument('--steps', type=int, default=3, help='timed calls per measurement (the best counts)')
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--torch', action=argparse.BooleanOptionalAction, default=True)
  p.add_argument('--keep_freed_memory', action=argparse.BooleanOptionalAction, default=True,
                 help='hostmem.keep_freed_memory() first, as train.py (read from sys.argv before JAX starts)')
  p.add_argument('--xla_kernels', action=argparse.BooleanOptionalAction, default=True,
                 help="XLA's own fused kernels on the CPU, as train.py (update.compiler_options); "
                      "--no-xla_kernels: XLA:CPU's defaults (YNNPACK's), for comparison")
  p.add_argument('--compare', action='store_true',
                 help="also time fwd+bwd and the step compiled with XLA:CPU's defaults, alternating with the rest, "
                      "and end with the median ratio of the two")
  args = p.parse_args()
  if args.compare and not args.xla_kernels:
    p.error('--compare times both XLA\'s own kernels and XLA:CPU\'s defaults: drop --no-xla_kernels')
  if not args.xla_kernels:
    update.compiler_options = lambda mesh: None
  cfg, rows, Tp, N = CFG, args.num_prompts * args.num_samples, args.prompt_len, args.response_len
  rl = train.RLConfig(learning_rate=1e-6, temperature=1.0)
  batch = make_batch(rows, Tp, N, cfg.vocab_size)
  shapes = jax.tree.leaves(model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
  n_params = sum(int(np.prod(s)) for s in shapes)
  flops, matmul, attention = step_flops(cfg, rows, Tp, N)
  print(f'policy: {n_params / 1e6:.1f}M parameters; batch {args.num_prompts} prompts x {args.num_samples} samples x '
        f'({Tp} + {N}) tokens = {rows * (Tp + N)} tokens; {jax.device_count()} JAX device(s), '
        f'{os.cpu_count()} CPU cores ({cpu_line()}); '
        f'freed host memory kept for reuse (hostmem.py): {"yes" if KEPT else "no"}; '
        f'XLA\'s own fused kernels, not YNNPACK\'s (update.compiler_options): {"yes" if args.xla_kernels else "no"}')
  params, fns, xla_flops, jax_logp = jax_fns(cfg, batch, rl)
  print(f'FLOPs per step: {flops / 1e9:.1f} G by hand ({matmul / 1e9:.1f} G matmuls, {attention / 1e9:.1f} G '
        f'attention); XLA counts {xla_flops / 1e9:.1f} G')
  if args.compare:   # the same weights and batch, compiled with XLA:CPU's defaults
    own = update.compiler_options
    update.compiler_options = lambda mesh: None
    _, defaults, _, _ = jax_fns(cfg, batch, rl)
    update.compiler_options = own
    fns.update({'fwd+bwd defaults': defaults['fwd+bwd'], 'step defaults': defaults['step']})
  if args.torch:
    import torch
    tfns, torch_logp = torch_fns(cfg, params, batch, os.cpu_count())
    fns.update(tfns)
    print(f'same weights in transformers: log-probs agree to {np.abs(torch_logp - np.asarray(jax_logp)).max():.1e}; '
          f'torch {torch.__version__} with {torch.get_num_threads()} threads')
  for f in fns.values():   # compile / warm up
    jax.block_until_ready(f())
  # FLOPs of each measurement: the forward is a third of fwd+bwd (the backward does twice the forward's work).
  work = {'step': flops, 'fwd+bwd': flops, 'fwd': flops / 3, 'torch fwd+bwd': flops, 'torch fwd': flops / 3,
          'fwd+bwd defaults': flops, 'step defaults': flops}
  print(f'\neach cell: best seconds of {args.steps} calls, and the share of the matmul ceiling measured just before '
        f'and after it (their mean)')
  print(f'{"repeat":>6} {"ceiling GFLOP/s":>16} ' + ' '.join(f'{k:>19}' for k in fns) + f' {"step tok/s":>11}'
        + (f' {"jax/torch fwd+bwd":>17}' if args.torch else ''))
  speedups, step_shares, own_time = [], [], {'fwd+bwd': [], 'step': []}
  for r in range(args.repeats):
    t, share, peaks = {}, {}, []
    for k, f in fns.items():
      before = ceiling()
      t[k] = best_time(f, args.steps)
      peak = (before + ceiling()) / 2
      share[k], peaks = work[k] / t[k] / peak, peaks + [peak]
    line = f'{r + 1:>6} {np.mean(peaks) / 1e9:>16.1f} ' + ' '.join(f'{t[k]:>9.3f} s {share[k]:>6.1%}' for k in fns)
    line += f' {rows * (Tp + N) / t["step"]:>11.0f}'
    step_shares.append(share['step'])
    for k in own_time if args.compare else ():
      own_time[k].append(t[k] / t[k + ' defaults'])
    if args.torch:
      speedups.append(t['torch fwd+bwd'] / t['fwd+bwd'])
      line += f' {speedups[-1]:>17.2f}'
    print(line, flush=True)
  print('\nstep tok/s counts prompt and response tokens (B x T); the optimizer is step - fwd+bwd.')
  spread = lambda xs, f: f'{f(np.median(xs))} (repeats {f(min(xs))} to {f(max(xs))})'
  summary = f'step {spread(step_shares, lambda x: f"{x:.0%}")} of the matmul ceiling'
  if args.torch:
    summary = f'jax/torch fwd+bwd {spread(speedups, lambda x: f"{x:.2f}")}; ' + summary
  print(summary)
  if args.compare:
    print("time with XLA's own kernels (update.compiler_options) / with XLA:CPU's defaults: "
          + ', '.join(f'{k} {spread(v, lambda x: f"{x:.2f}")}' for k, v in own_time.items()))


if __name__ == '__main__':
  main()
