"""Self-Rewarded Training (SRT) and RL with true labels: one flat script, one loop, the label source a flag.

    python train.py --mode=self                  # SRT on the embedded default (warm start runs first, cached)
    python train.py --mode=gt                    # the same loop, rewarded by the dataset's true answers
    python train.py --mode=sft --data=...        # supervised warm start on worked solutions
    python train.py --mode=self --model=path/to/Qwen2.5-Math-7B --data=math12k.jsonl --mesh=1,8,1 ...

One RL step (arXiv 2505.21444, Sec. 3; ../shared/SRT.md):
  1) sample G completions for each of P prompts from the current policy (one jitted, cached sampler);
  2) extract each final \\boxed{} answer and take the majority vote of the group as its label (self mode), or the
     frozen starting policy's vote (--label_source=teacher), or the dataset's answer (gt mode);
  3) reward 1 for answers equivalent to the label (vote.py: one notion of equality everywhere), else 0;
  4) advantages per group: RLOO (KL penalty folded into the reward) or GRPO (KL penalty in the loss);
  5) token-mean policy-gradient loss (PPO-clipped when --updates_per_batch > 1) with optional entropy bonus;
  6) one AdamW step with gradient-norm clipping, jitted over a device mesh (batch over data x fsdp,
     parameters and optimizer state FSDP-sharded, tensor-parallel where --mesh asks for it).
Left out on purpose: critic/value models, sequence packing and dynamic batching (the paper uses none of them
for SRT), and asynchronous rollouts (kept on-policy, as the paper's runs are).
"""
import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import data as data_lib
import model
import sample as sample_lib
import vote

# ----------------------------------------------------------------------------------------------------------------
# Configuration: a frozen dataclass per concern, flags map onto the fields one to one.

# The embedded default (README, "The embedded default"): the tiny policy learns chain sums of 2-3 numbers of 1-2
# digits with labels, then self-trains on sums of three one-digit numbers, where its samples are right 63% of the
# time and its 8-sample majority 73% (sums with two-digit numbers: 41% and 48%, a gap too narrow for the vote to
# teach, measured to drift down). Flag defaults below are the paper's settings for real models; with --model=tiny,
# the flags the user did not set take EMBEDDED_FLAGS instead (measured: a learning rate of 1e-4 first stalls, then
# collapses by step 150).
EMBEDDED = 'tiny'                     # --model name of the embedded default policy
EMBEDDED_DATA = 'rg:chain_sum:min_terms=3,max_terms=3,min_digits=1,max_digits=1'
EMBEDDED_WARMSTART_DATA = 'rg:chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=2'
EMBEDDED_FLAGS = {'data': EMBEDDED_DATA, 'learning_rate': 5e-5, 'steps': 150, 'max_new_tokens': 48,
                  'eval_every': 50}
# The warm start ships with the code (2.4 MB); `python train.py --mode=sft` (these flags) remakes it: the same
# recipe and batches, not the same bits (README, "The embedded default").
EMBEDDED_WARMSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'tiny-chain-sum')
EMBEDDED_SFT_FLAGS = {'data': EMBEDDED_WARMSTART_DATA, 'learning_rate': 1e-3, 'steps': 1000, 'num_prompts': 64,
                      'max_new_tokens': 48, 'data_size': 96000, 'checkpoint_every': 500}


@dataclasses.dataclass(frozen=True)
class RLConfig:
  mode: str = 'self'                  # self (SRT) | gt (true labels) | sft (supervised warm start)
  label_source: str = 'policy'        # policy: the live policy votes; teacher: the frozen starting policy votes
  agreement_threshold: float = 0.0    # online curriculum: drop prompts whose majority share is below it, refill
  soft_reward: bool = False           # reward = vote share of the answer's class instead of 0/1
  easiest_fraction: float = 1.0       # offline curriculum: keep only this fraction of prompts, easiest first
  advantage: str = 'rloo'             # rloo | grpo
  kl_coef: float = 0.0                # k3 KL to the starting policy (in the reward for rloo, in the loss for grpo)
  entropy_coef: float = 0.0           # entropy bonus in the loss
  clip_eps: float = 0.2               # PPO clip range (binds only when updates_per_batch > 1)
  updates_per_batch: int = 1          # optimizer steps on each batch of rollouts
  learning_rate: float = 1e-6        # the paper's, for 7B models
  max_grad_norm: float = 1.0
  weight_decay: float = 0.01
  num_prompts: int = 16               # P prompts per step
  num_samples: int = 8                # G samples per prompt
  max_new_tokens: int = 64            # N
  temperature: float = 1.0
  top_p: float = 1.0
  steps: int = 100
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
  model: str = EMBEDDED               # a local Hugging Face directory, or 'tiny'
  data: str = ''                      # reasoning-gym spec (rg:NAME:k=v,...) or a .jsonl/.json/.parquet file
  data_size: int = 4096               # prompts generated for a reasoning-gym task (files: all records)
  eval_data: str = ''                 # held-out prompts (default: the training task with another seed)
  eval_prompts: int = 256
  eval_samples: int = 8               # k of avg@k / maj@k / pass@k
  eval_every: int = 0                 # 0: evaluate before and after only
  val_prompts: int = 0                # labelled validation prompts for early stopping (0: none)
  chat_template: bool = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
  mesh: tuple = (1, 1, 1)             # (data, fsdp, tensor) axis sizes
  workdir: str = 'runs/default'
  checkpoint_every: int = 25
  resume: bool = True
  trace_prompts: int = 2              # prompts per step written to trace.jsonl with samples, votes and rewards
  remat: bool = False                 # recompute each layer's activations in the backward pass (model.Config.remat)
  micro_batches: int = 1              # gradient accumulation: the update's rows in this many slices, one at a time
  distributed: bool = False           # multi-process (multi-host): call jax.distributed.initialize() first


FLAGS = flags.FLAGS
for _cls in (RLConfig, DataConfig, RunConfig):
  for _f in dataclasses.fields(_cls):
    _d = _f.default
    if _f.name == 'mesh':
      flags.DEFINE_string('mesh', '1,1,1', 'device mesh axis sizes data,fsdp,tensor (-1: all remaining devices)')
    elif isinstance(_d, bool):
      flags.DEFINE_bool(_f.name, _d, f'{_cls.__name__}.{_f.name}')
    elif isinstance(_d, int):
      flags.DEFINE_integer(_f.name, _d, f'{_cls.__name__}.{_f.name}')
    elif isinstance(_d, float):
      flags.DEFINE_float(_f.name, _d, f'{_cls.__name__}.{_f.name}')
    else:
      flags.DEFINE_string(_f.name, _d, f'{_cls.__name__}.{_f.name}')


class FlagError(ValueError):
  pass


def parse_mesh(text: str, num_devices: int) -> tuple:
  try:
    sizes = [int(s) for s in text.split(',')]
  except ValueError:
    raise FlagError(f'--mesh={text!r}: expected three integers data,fsdp,tensor') from None
  sizes += [1] * (3 - len(sizes))
  if len(sizes) != 3 or sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise FlagError(f'--mesh={text!r}: expected three positive sizes data,fsdp,tensor (one may be -1)')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise FlagError(f'--mesh={text!r}: {num_devices} devices do not divide by {known}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise FlagError(f'--mesh={text!r} has {math.prod(sizes)} devices, this host sees {num_devices}')
  return tuple(sizes)


def validate(rl: RLConfig, dc: DataConfig, run: RunConfig) -> None:
  """Every check that can fail before anything is compiled or written, with the flag named."""
  def need(ok, msg):
    if not ok:
      raise FlagError(msg)
  need(rl.mode in ('self', 'gt', 'sft'), f'--mode={rl.mode!r}: use self, gt or sft')
  need(rl.label_source in ('policy', 'teacher'), f'--label_source={rl.label_source!r}: use policy or teacher')
  need(rl.advantage in ('rloo', 'grpo'), f'--advantage={rl.advantage!r}: use rloo or grpo')
  need(0.0 <= rl.agreement_threshold <= 1.0, f'--agreement_threshold={rl.agreement_threshold} is not in [0, 1]')
  need(not (rl.soft_reward and rl.label_source == 'teacher'),
       '--soft_reward rewards the share of the policy\'s own vote: it does not combine with --label_source=teacher')
  need(0.0 < rl.easiest_fraction <= 1.0, f'--easiest_fraction={rl.easiest_fraction} is not in (0, 1]')
  need(rl.num_prompts >= 1, f'--num_prompts={rl.num_prompts} must be >= 1')
  need(rl.num_samples >= (1 if rl.mode == 'sft' else 2),
       f'--num_samples={rl.num_samples}: RL needs at least 2 samples per prompt for a vote and an advantage')
  need(rl.max_new_tokens >= 1, f'--max_new_tokens={rl.max_new_tokens} must be >= 1')
  need(rl.temperature >= 0, f'--temperature={rl.temperature} must be >= 0')
  need(rl.temperature > 0 or rl.mode == 'sft', '--temperature=0 gives identical samples: RL needs > 0')
  need(0 < rl.top_p <= 1, f'--top_p={rl.top_p} is not in (0, 1]')
  need(rl.learning_rate > 0, f'--learning_rate={rl.learning_rate} must be > 0')
  need(rl.updates_per_batch >= 1, f'--updates_per_batch={rl.updates_per_batch} must be >= 1')
  need(rl.clip_eps > 0, f'--clip_eps={rl.clip_eps} must be > 0')
  need(rl.kl_coef >= 0 and rl.entropy_coef >= 0, '--kl_coef and --entropy_coef must be >= 0')
  need(rl.steps >= 0, f'--steps={rl.steps} must be >= 0')
  need(dc.eval_samples >= 1, f'--eval_samples={dc.eval_samples} must be >= 1')
  need(run.checkpoint_every >= 1, f'--checkpoint_every={run.checkpoint_every} must be >= 1')
  data_axis, fsdp, _ = run.mesh
  need(rl.num_prompts % data_axis == 0,
       f'--num_prompts={rl.num_prompts} does not divide over the {data_axis}-way data axis of --mesh')
  rows = rl.num_prompts * (rl.num_samples if rl.mode != 'sft' else 1)
  need(rows % (data_axis * fsdp) == 0,
       f'--num_prompts x --num_samples = {rows} rows do not divide over the {data_axis}x{fsdp} data x fsdp axes')
  need(run.micro_batches >= 1 and rows % (run.micro_batches * data_axis * fsdp) == 0,
       f'--micro_batches={run.micro_batches}: {rows} rows do not split into {run.micro_batches} slices that '
       f'each divide over the {data_axis}x{fsdp} data x fsdp axes')
  if dc.model != EMBEDDED:
    need(os.path.isdir(dc.model), f'--model={dc.model!r} is neither {EMBEDDED!r} nor a directory')
    need(os.path.exists(os.path.join(dc.model, 'config.json')), f'--model={dc.model!r}: no config.json there')
  need(bool(dc.data) or dc.model == EMBEDDED, '--data is required with --model other than the embedded default')


def configs_from_flags() -> tuple[RLConfig, DataConfig, RunConfig]:
  over = {}
  if FLAGS.model == EMBEDDED:
    embedded = EMBEDDED_SFT_FLAGS if FLAGS.mode == 'sft' else EMBEDDED_FLAGS
    over = {k: v for k, v in embedded.items() if not FLAGS[k].present}

  def build(cls, **extra):
    return cls(**{f.name: {**over, **extra}.get(f.name, getattr(FLAGS, f.name)) for f in dataclasses.fields(cls)})
  rl = build(RLConfig)
  dc = build(DataConfig)
  run = build(RunConfig, mesh=parse_mesh(FLAGS.mesh, jax.device_count()))
  validate(rl, dc, run)
  return rl, dc, run


# ----------------------------------------------------------------------------------------------------------------
# Sharding: one table from logical axis names to mesh axes, used for parameters, optimizer state and batches.

MESH_AXES = ('data', 'fsdp', 'tensor')
RULES = {
    'batch': ('data', 'fsdp'),        # rows of a batch: data parallel, and FSDP devices take their own rows
    'embed': 'fsdp',                  # FSDP: every weight is split along its model dimension
    'heads': 'tensor', 'kv_heads': 'tensor', 'mlp': 'tensor', 'vocab': 'tensor',
    'layers': None,
}


def make_mesh(sizes) -> jax.sharding.Mesh:
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=jax.devices()[:math.prod(sizes)])


def logical_sharding(mesh, axes, shape, what='array') -> jax.sharding.NamedSharding:
  """NamedSharding for an array whose dims carry logical names; loud when a dim does not divide its mesh axes."""
  spec = []
  for name, size in zip(axes, shape):
    mesh_axes = RULES.get(name) if name else None
    n = math.prod(mesh.shape[a] for a in ((mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes or ()))
    if size % n:
      raise ValueError(f'{what}: dimension {name!r} of size {size} does not divide over mesh axes {mesh_axes} '
                       f'({n} devices); change --mesh')
    spec.append(mesh_axes)
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def param_shardings(cfg, mesh):
  axes, shapes = model.param_axes(cfg), model.param_shapes(cfg)
  is_leaf = lambda x: isinstance(x, tuple)
  return jax.tree.map(lambda a, s: logical_sharding(mesh, a, s, 'parameter'), axes, shapes, is_leaf=is_leaf)


def batch_sharding(mesh, shape):
  return logical_sharding(mesh, ('batch',) + (None,) * (len(shape) - 1), shape, 'batch')


def constrain(x, axes):
  """Pins an activation whose dims carry logical names to the rules' mesh axes, inside a function traced under
  `jax.sharding.use_abstract_mesh` (the step and the scorer); elsewhere (no mesh) it returns x unchanged."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*[RULES.get(a) if a else None
                                                                          for a in axes]))


# Multi-host (--distributed): one process per host, all running this same program. Every process loads the same
# prompts in the same order (same seed), the sampler is one SPMD program over the whole mesh, and each process
# hands the update step only the rows its own devices hold. Checked with two processes on one machine
# (tests/test_scale.py, the step alone); not yet run on a real multi-host pod or cluster. Not yet multi-host:
# eval.py and the Hugging Face export read arrays whole (np.asarray, device_get), which fails for arrays that
# span hosts; every process writes the logs.


def process_rows(mesh, num_rows: int) -> slice:
  """The rows of a (num_rows, ...) batch that this process's devices hold under the batch sharding."""
  index = batch_sharding(mesh, (num_rows,)).addressable_devices_indices_map((num_rows,))
  starts = {i[0].indices(num_rows)[0] for i in index.values()}
  stops = {i[0].indices(num_rows)[1] for i in index.values()}
  lo, hi = min(starts), max(stops)
  if (hi - lo) * jax.process_count() != num_rows:
    raise ValueError(f'the batch rows of process {jax.process_index()} are not one contiguous block '
                     f'({sorted(starts)}); build the mesh with each process\'s devices adjacent')
  return slice(lo, hi)


def global_batch(batch: dict, mesh) -> dict:
  """A batch of host arrays, whole on every process -> global jax arrays sharded over the batch axes.

  Each process contributes its own rows (process_rows) through jax.make_array_from_process_local_data, so no
  host sends another host data; with one process it amounts to a device_put."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    sharding = batch_sharding(mesh, v.shape)
    out[k] = jax.make_array_from_process_local_data(sharding, v[process_rows(mesh, v.shape[0])], v.shape)
  return out


def host_array(x) -> np.ndarray:
  """The whole value of a jax array on this host: a copy when local, an all-gather when it spans hosts."""
  if getattr(x, 'is_fully_addressable', True):
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ----------------------------------------------------------------------------------------------------------------
# The SRT math: small pure functions with explicit masks.


def advantages(rewards: jax.Array, kind: str, eps: float = 1e-6) -> jax.Array:
  """rewards (P, G) -> advantages (P, G). RLOO: R_i - mean_{j != i} R_j. GRPO: (R_i - mean) / (std + eps),
  with the unbiased std, as verl computes it."""
  G = rewards.shape[1]
  if kind == 'rloo':
    return (G * rewards - rewards.sum(1, keepdims=True)) / (G - 1)
  mean = rewards.mean(1, keepdims=True)
  std = jnp.std(rewards, axis=1, keepdims=True, ddof=1)
  return (rewards - mean) / (std + eps)


def shaped_advantages(rewards, seq_kl, rl: RLConfig):
  """rewards, seq_kl (P, G) -> advantages (P, G). For RLOO the KL penalty, summed over each response's tokens,
  is subtracted from the reward before the leave-one-out baseline (verl's kl-in-reward); GRPO keeps it in the loss."""
  if rl.advantage == 'rloo' and rl.kl_coef > 0:
    rewards = rewards - rl.kl_coef * seq_kl
  return advantages(rewards, rl.advantage)


def k3(logp, ref_logp):
  """Schulman's k3 estimator of KL(pi || ref) per token: r - log r - 1 with r = pi_ref / pi. Always >= 0."""
  log_ratio = ref_logp - logp
  return jnp.exp(log_ratio) - log_ratio - 1


def token_mean(x, mask, count=None):
  """Average over every response token of the batch ("token-mean", the paper's loss aggregation: long and short
  responses weigh per token, as in verl's token-mean mode). Masked entries never leak in, not even inf/NaN.
  count: the tokens to divide by, by default this mask's; a micro-batch passes its whole batch's (token_count),
  so that the micro-batches' terms sum to the batch's token-mean."""
  count = jnp.maximum(mask.sum(), 1.0) if count is None else count
  return jnp.where(mask > 0, x, 0.0).sum() / count


def token_count(batch):
  """The denominator of the batch's token-mean: response tokens of rows that count (row_weight, if any)."""
  mask = batch['mask'] * batch['row_weight'][:, None] if 'row_weight' in batch else batch['mask']
  return jnp.maximum(mask.sum(), 1.0)


HEAD_CHUNK = 512   # response tokens per slice of the LM head in token_logprobs


def _token_stats(params, cfg, x, tokens, temperature):
  """Final-normed hidden states x (B, C, D) and the tokens they predict (B, C) -> (log-prob, entropy), (B, C),
  under z = logits / temperature, in one pass over z: log p = z_t - lse, entropy = lse - sum softmax(z) z.
  No log_softmax array is made; the max is a constant to autodiff (lse does not depend on it)."""
  z = model.unembed(params, cfg, x) / temperature                              # (B, C, V) float32
  m = jax.lax.stop_gradient(z.max(-1, keepdims=True))
  e = jnp.exp(z - m)
  s = e.sum(-1)                                                                # (B, C)
  lse = m[..., 0] + jnp.log(s)
  logp = jnp.take_along_axis(z, tokens[..., None], axis=-1)[..., 0] - lse
  entropy = lse - (e * z).sum(-1) / s
  return logp, entropy


def token_logprobs(params, cfg, prompt_tokens, prompt_valid, tokens, mask, temperature):
  """Log-probs (B, N) of the completion tokens and the entropy (B, N) of each next-token distribution, under
  log_softmax(logits / temperature): the distribution the sampler drew from."""
  B, Tp = prompt_tokens.shape
  N = tokens.shape[1]
  seq = jnp.concatenate([prompt_tokens, tokens], axis=1)                       # (B, Tp + N)
  valid = jnp.concatenate([prompt_valid, mask > 0], axis=1)
  x, _ = model.forward(params, cfg, seq, model.positions_from_valid(valid), valid, hidden_only=True,
                       constrain=constrain)
  x = constrain(x[:, Tp - 1:-1], ('batch', None, None))                       # (B, N, D): column n predicts tokens[:, n]
  temperature = max(temperature, 1e-6)
  if N <= HEAD_CHUNK:
    return _token_stats(params, cfg, x, tokens, temperature)
  # Long responses: the LM head in slices of HEAD_CHUNK tokens, each recomputed in the backward pass, so at most
  # a (B, HEAD_CHUNK, V) slice of float32 logits is live instead of (B, N, V) (16 GB per row at 7B x 3072 tokens).
  C, n = HEAD_CHUNK, -(-N // HEAD_CHUNK)
  xs = jnp.pad(x, ((0, 0), (0, n * C - N), (0, 0))).reshape(B, n, C, -1).swapaxes(0, 1)     # (n, B, C, D)
  ts = jnp.pad(tokens, ((0, 0), (0, n * C - N))).reshape(B, n, C).swapaxes(0, 1)          # (n, B, C)
  stats = jax.checkpoint(lambda p, xc, tc: _token_stats(p, cfg, constrain(xc, ('batch', None, None)), tc,
                                                       temperature))
  logp, entropy = jax.lax.map(lambda xt: stats(params, *xt), (xs, ts))                     # (n, B, C) each
  unchunk = lambda a: a.swapaxes(0, 1).reshape(B, n * C)[:, :N]
  return unchunk(logp), unchunk(entropy)


def policy_loss(params, cfg, rl: RLConfig, batch):
  """Token-mean clipped policy gradient, plus the KL penalty in the loss (GRPO) and the entropy bonus."""
  mask = batch['mask'] * batch['row_weight'][:, None]                          # (B, N)
  logp, entropy = token_logprobs(params, cfg, batch['prompt_tokens'], batch['prompt_valid'], batch['tokens'],
                                 batch['mask'], rl.temperature)
  ratio = jnp.exp(logp - batch['old_logp'])
  adv = batch['advantages'][:, None]                                           # (B, 1)
  pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - rl.clip_eps, 1 + rl.clip_eps) * adv)
  kl = k3(logp, batch['ref_logp'])
  mean = lambda x: token_mean(x, mask, batch.get('token_count'))   # set by the micro-batched step
  loss = mean(pg) - rl.entropy_coef * mean(entropy)
  if rl.advantage == 'grpo':
    loss = loss + rl.kl_coef * mean(kl)
  aux = {'entropy': mean(entropy), 'kl': mean(kl),
         'clip_frac': mean((jnp.abs(ratio - 1) > rl.clip_eps).astype(jnp.float32))}
  return loss, aux


def sft_loss(params, cfg, rl: RLConfig, batch):
  logp, entropy = token_logprobs(params, cfg, batch['prompt_tokens'], batch['prompt_valid'], batch['tokens'],
                                 batch['mask'], 1.0)
  mean = lambda x: token_mean(x, batch['mask'], batch.get('token_count'))
  return -mean(logp), {'entropy': mean(entropy)}


def make_optimizer(rl: RLConfig, learning_rate: float):
  return optax.chain(optax.clip_by_global_norm(rl.max_grad_norm),
                     optax.adamw(learning_rate, b1=0.9, b2=0.999, weight_decay=rl.weight_decay))


def make_train_step(cfg, rl, optimizer, loss_fn, state_shardings, mesh, micro_batches=1):
  """One jitted optimizer step over the mesh: state sharded like the rules say, batch rows over data x fsdp.

  micro_batches=M > 1 accumulates the gradient over M slices of the rows (lax.scan), so only one slice's
  activations are live. Every slice divides by the whole batch's token count, so the summed loss and gradient
  are the batch's token-mean: the same update as M=1 up to float rounding (tests/test_scale.py).
  """
  batch_spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(RULES['batch']))

  def loss_and_grads(params, batch):
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, cfg, rl, b), has_aux=True)
    if micro_batches == 1:
      return grad_fn(params, batch)
    count = token_count(batch)
    slices = split_rows(batch, micro_batches)

    def add(acc, b):
      b = jax.lax.with_sharding_constraint(b, batch_spec)
      out = grad_fn(params, dict(b, token_count=count))
      return jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, out), None

    # Float32 sums, the gradient sum sharded like the parameters.
    shapes = jax.eval_shape(grad_fn, params, dict(jax.tree.map(lambda a: a[0], slices), token_count=count))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
    zeros = (zeros[0], jax.lax.with_sharding_constraint(zeros[1], state_shardings['params']))
    (loss_aux, grads), _ = jax.lax.scan(add, zeros, slices)
    return loss_aux, jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)

  def step(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):   # activations pinned by `constrain`
      (loss, aux), grads = loss_and_grads(state['params'], batch)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    aux = dict(aux, loss=loss, grad_norm=optax.global_norm(grads))
    return {'params': params, 'opt_state': opt_state}, aux
  return jax.jit(step, in_shardings=(state_shardings, batch_spec), out_shardings=(state_shardings, None),
                 donate_argnums=0)


def make_scorer(cfg, rl, mesh, micro_batches=1):
  """Jitted log-probs of completions under some parameters (the KL reference), micro_batches slices at a time."""
  batch_spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(RULES['batch']))
  def score_slice(params, b):
    b = jax.lax.with_sharding_constraint(b, batch_spec)
    return token_logprobs(params, cfg, b['prompt_tokens'], b['prompt_valid'], b['tokens'], b['mask'],
                          rl.temperature)[0]
  def score(params, b):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      if micro_batches == 1:
        return score_slice(params, b)
      logp = jax.lax.map(lambda s: score_slice(params, s), split_rows(b, micro_batches))   # (M, B / M, N)
      return jnp.swapaxes(logp, 0, 1).reshape(-1, logp.shape[-1])                          # rows back in order
  return jax.jit(score, in_shardings=(None, batch_spec))


def split_rows(batch, micro_batches):
  """Leaves (B, ...) -> (M, B / M, ...). Slice m takes rows m, m + M, m + 2M, ...: with rows sharded in
  contiguous blocks, every device keeps its own rows, and nothing moves between devices."""
  M = micro_batches
  return jax.tree.map(lambda a: jnp.swapaxes(a.reshape(a.shape[0] // M, M, *a.shape[1:]), 0, 1), batch)


# ----------------------------------------------------------------------------------------------------------------
# Rollouts, labels and rewards (host side: answers are strings).


def decode_completions(tokenizer, tokens, mask):
  return [tokenizer.decode([int(t) for t, m in zip(row, mrow) if m], skip_special_tokens=True)
          for row, mrow in zip(tokens, mask)]


def vote_groups(answers, G):
  """Majority label and share per group of G answers."""
  return [vote.majority_vote(answers[i:i + G]) for i in range(0, len(answers), G)]


class Rollouts:
  """Samples groups, extracts answers and assigns labels and rewards for a list of examples."""

  def __init__(self, cfg, tokenizer, rl, mesh, verifier, chat_template=False):
    self.cfg, self.tok, self.rl, self.mesh, self.verifier = cfg, tokenizer, rl, mesh, verifier
    self.chat_template = chat_template

  def prompt_ids(self, examples):
    ids = []
    for ex in examples:
      text = ex.prompt
      if self.chat_template and getattr(self.tok, 'chat_template', None):
        text = self.tok.apply_chat_template([{'role': 'user', 'content': text}], add_generation_prompt=True,
                                            tokenize=False)
      ids.append(self.tok(text, add_special_tokens=False)['input_ids'])
    return ids

  def sample(self, params, examples, key):
    rl = self.rl
    ro = sample_lib.sample(params, self.cfg, self.prompt_ids(examples), num_samples=rl.num_samples,
                           max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, top_p=rl.top_p,
                           key=key, eos_ids=[self.tok.eos_token_id], pad_id=self.tok.pad_token_id or 0, mesh=self.mesh,
                           batch_axes=RULES['batch'])
    ro = {k: host_array(getattr(ro, k)) for k in ('tokens', 'logprobs', 'mask', 'lengths', 'prompt_tokens',
                                                 'prompt_valid')}
    texts = decode_completions(self.tok, ro['tokens'], ro['mask'])
    return ro, texts, [vote.extract_answer(t) for t in texts]

  def labelled(self, params, teacher_params, examples, key):
    """Steps 1-4 for one set of prompts: sample, vote (or look up), reward. Returns host-side arrays."""
    rl, G = self.rl, self.rl.num_samples
    ro, texts, answers = self.sample(params, examples, jax.random.fold_in(key, 0))
    if rl.mode == 'gt':   # the label is the data set's; the share logged is still the policy's own vote
      labels = [(ex.answer, share) for ex, (_, share) in zip(examples, vote_groups(answers, G))]
    elif rl.label_source == 'teacher':
      _, _, teacher_answers = self.sample(teacher_params, examples, jax.random.fold_in(key, 1))
      labels = vote_groups(teacher_answers, G)
    else:
      labels = vote_groups(answers, G)
    rewards, weight, shares = [], [], []
    for i, (label, share) in enumerate(labels):
      group = answers[i * G:(i + 1) * G]
      shares.append(share)
      ok = label is not None and (rl.mode == 'gt' or share >= rl.agreement_threshold)
      if not ok:
        rewards.append([0.0] * G)
      elif rl.soft_reward and rl.mode != 'gt':   # the share of each answer's own class
        rewards.append(list(vote.self_rewards(group, soft=True)))
      else:
        rewards.append(list(vote.gt_rewards(group, label, verifier=self.verifier if rl.mode == 'gt' else None)))
      weight.append(1.0 if ok else 0.0)
    ro.update(rewards=np.asarray(rewards, np.float32), group_weight=np.asarray(weight, np.float32),
              shares=np.asarray(shares, np.float32))
    return ro, texts, answers, [l for l, _ in labels]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: orbax, written atomically (a half-written step directory is never listed), restored onto any mesh.


def checkpoint_manager(workdir):
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False))


def check_run_identity(workdir, identity: dict):
  """A workdir belongs to one model and mode; resuming it with another is an error, not a silent mix."""
  file = os.path.join(workdir, 'run.json')
  if os.path.exists(file):
    with open(file) as f:
      old = json.load(f)
    for k in identity:
      if old.get(k) != identity[k]:
        raise FlagError(f'--workdir={workdir!r} holds a run with {k}={old.get(k)!r}, not {identity[k]!r}; '
                        'use a new --workdir (nothing there was changed)')
  else:
    os.makedirs(workdir, exist_ok=True)
    with open(file, 'w') as f:
      json.dump(identity, f, indent=1)


def read_jsonl(file) -> list[dict]:
  with open(file) as f:
    return [json.loads(l) for l in f if l.strip()]


def truncate_jsonl(file, last_step):
  """On resume, drop log lines written after the checkpoint, so the history equals an uninterrupted run's."""
  if not os.path.exists(file):
    return
  with open(file) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get('step', -1) <= last_step]
  with open(file + '.tmp', 'w') as f:
    f.writelines(lines)
  os.replace(file + '.tmp', file)


# ----------------------------------------------------------------------------------------------------------------
# The loops.


def load_policy(dc: DataConfig, workdir: str, seed: int):
  """(cfg, params, tokenizer, tokenizer_dir) for --model: a Hugging Face directory, or the embedded tiny policy."""
  if dc.model == EMBEDDED:
    tok_dir = os.path.join(workdir, 'tokenizer')
    if not os.path.exists(os.path.join(tok_dir, 'tokenizer.json')):
      model.build_char_tokenizer(tok_dir)
    cfg = model.PRESETS[EMBEDDED]
    return cfg, model.init_params(cfg, jax.random.key(seed)), model.load_tokenizer(tok_dir), tok_dir
  # Float32 master weights whatever the checkpoint stores: an AdamW step at the paper's 1e-6 is far below
  # bfloat16's rounding of a typical weight (bf16(0.02) + 1e-6 == bf16(0.02)), so a bf16 policy would not move.
  # Matmuls still run in the checkpoint's dtype (cfg.dtype).
  cfg, params = model.load_hf_checkpoint(dc.model, param_dtype='float32')
  return cfg, params, model.load_tokenizer(dc.model), dc.model


def sft_batch(tokenizer, examples, max_new_tokens):
  """Left-padded prompts and right-padded targets (+ EOS) as fixed-shape arrays."""
  prompts = [tokenizer(ex.prompt, add_special_tokens=False)['input_ids'] for ex in examples]
  targets = [tokenizer(ex.target, add_special_tokens=False)['input_ids'][:max_new_tokens - 1]
             + [tokenizer.eos_token_id] for ex in examples]
  # Widths rounded up to multiples of 16: few distinct shapes to compile, little padding to compute on.
  Tp = 16 * -(-max(len(p) for p in prompts) // 16)
  N = min(max_new_tokens, 16 * -(-max(len(t) for t in targets) // 16))
  B = len(examples)
  pt, pv = np.zeros((B, Tp), np.int32), np.zeros((B, Tp), bool)
  tt, tm = np.zeros((B, N), np.int32), np.zeros((B, N), np.float32)
  for i, (p, t) in enumerate(zip(prompts, targets)):
    pt[i, Tp - len(p):], pv[i, Tp - len(p):] = p, True
    tt[i, :len(t)], tm[i, :len(t)] = t, 1.0
  return {'prompt_tokens': pt, 'prompt_valid': pv, 'tokens': tt, 'mask': tm}


class Logger:
  def __init__(self, workdir):
    self.metrics = os.path.join(workdir, 'metrics.jsonl')
    self.trace = os.path.join(workdir, 'trace.jsonl')

  def write(self, file, record):
    with open(file, 'a') as f:
      f.write(json.dumps(record) + '\n')


def progress(step, steps, m, t0):
  keys = [('loss', 'loss'), ('reward', 'pseudo_reward'), ('acc', 'true_accuracy'), ('label_acc', 'label_accuracy'),
          ('share', 'majority_share'), ('kl', 'kl'), ('len', 'response_length')]
  parts = [f'{short} {m[k]:.3f}' for short, k in keys if k in m and m[k] is not None]
  rate = f'{m["step_time"]:.2f} s/step'
  if 'rollout_time' in m:
    rate += f' (rollout {m["rollout_time"]:.2f}, update {m["update_time"]:.2f}, {m["tokens_per_s"]:.0f} tok/s)'
  print(f'step {step}/{steps} | ' + ' | '.join(parts) + f' | {rate} | {time.time() - t0:.0f}s', flush=True)


def load_data(rl: RLConfig, dc: DataConfig):
  """Training, held-out and validation examples and the task's verifier. Runs first: a bad file or task fails
  here, before anything is compiled or written."""
  train_examples = data_lib.load_examples(dc.data, size=dc.data_size, seed=rl.seed)
  if rl.mode == 'sft':
    missing = [i for i, ex in enumerate(train_examples) if not ex.target]
    if missing:
      raise FlagError(f'--data={dc.data!r}: --mode=sft needs worked solutions; record {missing[0] + 1} has none')
  elif rl.mode == 'gt' and any(ex.answer is None for ex in train_examples):
    raise FlagError(f'--data={dc.data!r}: --mode=gt needs an answer for every record')
  eval_examples = (data_lib.load_examples(dc.eval_data or dc.data, size=dc.eval_prompts, seed=rl.seed + 1_000_003)
                   if dc.eval_prompts and rl.mode != 'sft' else [])
  val_examples = (data_lib.load_examples(dc.data, size=dc.val_prompts, seed=rl.seed + 2_000_003)
                  if dc.val_prompts else [])
  # Held-out and validation prompts never appear among the training prompts: a small task (sums of three
  # one-digit numbers has 4,000 prompts) would otherwise train on most of its own test set.
  kept = {ex.question for ex in eval_examples + val_examples}
  train_examples = [ex for ex in train_examples if ex.question not in kept]
  if not train_examples:
    raise FlagError(f'--data={dc.data!r}: every training prompt is also a held-out or validation prompt')
  return train_examples, eval_examples, val_examples, data_lib.make_verifier(dc.data)


def run(rl: RLConfig, dc: DataConfig, run_cfg: RunConfig, datasets, *, log_prefix=''):
  """Trains per the configs; returns (cfg, params, tokenizer_dir, summary). Resumes from the workdir if it can."""
  import eval as eval_lib  # eval.py: the same metrics as the standalone evaluator
  workdir = run_cfg.workdir
  mesh = make_mesh(run_cfg.mesh)   # every array below is placed with an explicit NamedSharding on it

  train_examples, eval_examples, val_examples, verifier = datasets
  cfg, params0, tokenizer, tok_dir = load_policy(dc, workdir, rl.seed)
  cfg = dataclasses.replace(cfg, remat=run_cfg.remat)
  p_shard = param_shardings(cfg, mesh)
  params0 = jax.device_put(params0, p_shard)
  optimizer = make_optimizer(rl, rl.learning_rate)
  # Optimizer state is sharded like the parameters it belongs to (Adam's moments have their shapes); the step
  # count is replicated.
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  opt_shardings = optax.tree_map_params(optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, params0),
                                        p_shard, transform_non_params=lambda _: replicated)
  state_shardings = {'params': p_shard, 'opt_state': opt_shardings}
  # The frozen starting policy (KL reference, teacher) is a copy placed like the live one. RL keeps it even with
  # --kl_coef=0: the KL to it is the metric that shows reward hacking (SRT.md), so it is always logged.
  keep_ref = rl.mode != 'sft'
  live = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=p_shard)(params0) if keep_ref else params0
  state = {'params': live, 'opt_state': jax.jit(optimizer.init, out_shardings=opt_shardings)(live)}
  ref_params = params0 if keep_ref else None

  if rl.mode != 'sft':
    # Start vote.py's math-verify workers now: started later, mid-step, they compete for the CPU with the time
    # limit of the equality checks, and a check that overruns its limit counts as "not equal".
    vote.warmup()
  # Offline curriculum: keep the easiest fraction of prompts, ranked label-free by the starting policy's vote.
  rollouts = Rollouts(cfg, tokenizer, rl, mesh, verifier, dc.chat_template)
  if rl.mode != 'sft' and rl.easiest_fraction < 1.0:
    train_examples = easiest(rollouts, params0, train_examples, rl, mesh)

  mngr = checkpoint_manager(workdir)
  logger = Logger(workdir)
  step, data_pos, history = 0, 0, []
  if run_cfg.resume and mngr.latest_step() is not None:
    step = mngr.latest_step()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state, data_pos = restored['state'], restored['meta']['data_pos']
    truncate_jsonl(logger.metrics, step)
    truncate_jsonl(logger.trace, step)
    print(f'{log_prefix}resumed from step {step} in {workdir}', flush=True)
  else:
    for f in (logger.metrics, logger.trace):
      if os.path.exists(f):
        os.remove(f)

  def save(step):
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave({'data_pos': data_pos, 'step': step})),
              force=True)
    mngr.wait_until_finished()

  def evaluate(params, examples, tag):
    res = eval_lib.evaluate(params, cfg, tokenizer, examples, num_samples=dc.eval_samples,
                            max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                            key=jax.random.key(rl.seed + 7), verifier=verifier, chat_template=dc.chat_template,
                            batch_prompts=min(64, len(examples)))
    print(f'{log_prefix}{tag}: avg@{res["k"]} {res["avg@k"]:.3f}  maj@{res["k"]} {res["maj@k"]:.3f}  '
          f'pass@{res["k"]} {res["pass@k"]:.3f}  parse {res["parse_rate"]:.3f}', flush=True)
    per_prompt[tag] = np.array([np.mean(r['correct']) for r in res['records']])
    return {k: res[k] for k in ('avg@k', 'maj@k', 'pass@k', 'parse_rate')}

  per_prompt = {}

  summary = {'k': dc.eval_samples}
  if eval_examples:
    summary['before'] = evaluate(params0, eval_examples, 'held-out before')
  if val_examples:
    summary['val_before'] = evaluate(params0, val_examples, 'val before')

  loss_fn = sft_loss if rl.mode == 'sft' else policy_loss
  train_step = make_train_step(cfg, rl, optimizer, loss_fn, state_shardings, mesh, run_cfg.micro_batches)
  scorer = make_scorer(cfg, rl, mesh, run_cfg.micro_batches) if keep_ref else None
  base_key = jax.random.key(rl.seed)
  n = len(train_examples)
  order = lambda epoch: np.random.RandomState(rl.seed + epoch).permutation(n)

  def take(count):
    nonlocal data_pos
    out = []
    for _ in range(count):
      epoch, i = divmod(data_pos, n)
      out.append(train_examples[order(epoch)[i]])
      data_pos += 1
    return out

  t0 = time.time()
  while step < rl.steps:
    key = jax.random.fold_in(base_key, step)
    t_start = time.time()
    m = {'step': step + 1}
    if rl.mode == 'sft':
      batch = sft_batch(tokenizer, take(rl.num_prompts), rl.max_new_tokens)
      t_roll = time.time()
    else:
      batch, m_roll, trace = rl_batch(rollouts, state['params'], ref_params, take, key, rl,
                                        run_cfg.trace_prompts)
      m.update(m_roll)
      t_roll = time.time()
      if scorer is not None:
        rows = global_batch({k: batch[k] for k in ('prompt_tokens', 'prompt_valid', 'tokens', 'mask')}, mesh)
        batch['ref_logp'] = host_array(scorer(ref_params, rows))
      else:
        batch['ref_logp'] = batch['old_logp']
      kl_tok = k3(jnp.asarray(batch['old_logp']), jnp.asarray(batch['ref_logp']))
      seq_kl = jnp.where(batch['mask'] > 0, kl_tok, 0.0).sum(1).reshape(rl.num_prompts, rl.num_samples)
      adv = shaped_advantages(jnp.asarray(batch.pop('rewards')), seq_kl, rl)
      batch['advantages'] = np.asarray(adv, np.float32).reshape(-1)
      batch['row_weight'] = np.repeat(batch.pop('group_weight'), rl.num_samples).astype(np.float32)
      for t in trace:
        logger.write(logger.trace, dict(t, step=step + 1))
    batch = global_batch(batch, mesh)
    for _ in range(rl.updates_per_batch):
      state, aux = train_step(state, batch)
    aux = jax.device_get(aux)
    if not all(np.isfinite(float(v)) for v in aux.values()):
      values = {k: float(v) for k, v in aux.items()}
      raise FloatingPointError(f'step {step + 1}: non-finite loss or gradient ({values}); stopping; the last '
                               f'good checkpoint in {workdir}/checkpoints is untouched')
    step += 1
    t_end = time.time()
    m.update({k: float(v) for k, v in aux.items()})
    m.update(step_time=t_end - t_start)
    if rl.mode != 'sft':
      ntok = float(batch['mask'].sum())
      m.update(rollout_time=t_roll - t_start, update_time=t_end - t_roll, tokens_per_s=ntok / (t_end - t_start))
    if dc.eval_every and step % dc.eval_every == 0 and step < rl.steps:
      if eval_examples:
        m.update({f'eval_{k}': v for k, v in evaluate(state['params'], eval_examples, f'step {step}').items()})
      if val_examples:
        m.update({f'val_{k}': v for k, v in evaluate(state['params'], val_examples, f'val {step}').items()})
    logger.write(logger.metrics, m)
    history.append(m)
    progress(step, rl.steps, m, t0)
    if step % run_cfg.checkpoint_every == 0 or step == rl.steps:
      save(step)

  if mngr.latest_step() != step:
    save(step)
  params = state['params']
  if eval_examples:
    summary['after'] = evaluate(params, eval_examples, 'held-out after')
    if val_examples:
      summary['val_after'] = evaluate(params, val_examples, 'val after')
      during = [(h['step'], h['val_avg@k']) for h in read_jsonl(logger.metrics) if 'val_avg@k' in h]
      summary['val_best_step'] = early_stopping_step(
          [(0, summary['val_before']['avg@k'])] + during + [(step, summary['val_after']['avg@k'])])
      print(f'{log_prefix}early stopping on {len(val_examples)} labelled prompts picks step '
            f'{summary["val_best_step"]}', flush=True)
    # The same prompts and sampling key before and after: the per-prompt differences give the gain's standard
    # error, which says whether a change is more than sampling noise.
    diff = per_prompt['held-out after'] - per_prompt['held-out before']
    summary['avg@k_gain'] = {'mean': float(diff.mean()),
                             'paired_se': float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None}
  hf_dir = os.path.join(workdir, 'hf')
  model.save_hf_checkpoint(hf_dir, cfg, params, tokenizer_dir=tok_dir)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return cfg, params, hf_dir, summary


def early_stopping_step(val: list[tuple[int, float]]) -> int:
  """Early stopping (the paper's, on a small labelled split): of (step, validation avg@k) pairs, the step whose
  score is best, the start (step 0) and the end included; ties go to the earliest step."""
  return max(val, key=lambda sv: (sv[1], -sv[0]))[0]


def rl_batch(rollouts, params, ref_params, take, key, rl, trace_prompts=2):
  """Steps 1-4: a batch of P labelled prompt groups (refilled under the agreement threshold) and its metrics."""
  G, P = rl.num_samples, rl.num_prompts
  kept, dropped, rounds = [], [], 0
  texts_all = []
  while len(kept) < P and rounds < (4 if rl.agreement_threshold > 0 else 1):
    examples = take(P)
    ro, texts, answers, labels = rollouts.labelled(params, ref_params, examples, jax.random.fold_in(key, rounds))
    rounds += 1
    for i, ex in enumerate(examples):
      rows = slice(i * G, (i + 1) * G)
      group = {k: v[rows] for k, v in ro.items() if k not in ('rewards', 'group_weight', 'shares')}
      group.update(example=ex, answers=answers[rows], texts=texts[rows], label=labels[i],
                   rewards=ro['rewards'][i], group_weight=ro['group_weight'][i], share=float(ro['shares'][i]))
      (kept if group['group_weight'] > 0 or rl.mode == 'gt' else dropped).append(group)
  groups = (kept + dropped)[:P]   # short of labelled prompts: fill with unlabelled ones (zero weight)
  Tp = max(g['prompt_tokens'].shape[1] for g in groups)
  pad = lambda a, fill: np.concatenate([np.full((a.shape[0], Tp - a.shape[1]), fill, a.dtype), a], axis=1)
  batch = {
      'prompt_tokens': np.concatenate([pad(g['prompt_tokens'], 0) for g in groups]),
      'prompt_valid': np.concatenate([pad(g['prompt_valid'], False) for g in groups]),
      'tokens': np.concatenate([g['tokens'] for g in groups]).astype(np.int32),
      'mask': np.concatenate([g['mask'] for g in groups]).astype(np.float32),
      'old_logp': np.concatenate([g['logprobs'] for g in groups]).astype(np.float32),
      'rewards': np.stack([g['rewards'] for g in groups]).astype(np.float32),
      'group_weight': np.asarray([g['group_weight'] for g in groups], np.float32),
  }
  # Metrics: what the learner sees (pseudo-reward, share) and what it does not (true accuracy, label accuracy).
  answers = [a for g in groups for a in g['answers']]
  correct = [[float(x) for x in vote.gt_rewards(g['answers'], g['example'].answer, verifier=rollouts.verifier)]
             if g['example'].answer is not None else None for g in groups]
  labelled = [g for g in groups if g['group_weight'] > 0]
  m = {
      'pseudo_reward': float(batch['rewards'].mean()),
      'majority_share': float(np.mean([g['share'] for g in groups])),
      'labelled_fraction': float(np.mean([g['group_weight'] > 0 for g in groups])),
      'parse_rate': vote.parse_rate(answers),
      'response_length': float(batch['mask'].sum(1).mean()),
      'refill_rounds': rounds,
  }
  if all(c is not None for c in correct):
    m['true_accuracy'] = float(np.mean(correct))
    m['label_accuracy'] = (float(np.mean([g['label'] is not None and vote.equivalent(g['label'], g['example'].answer)
                                          for g in labelled])) if labelled else 0.0)
  trace = [{'question': g['example'].question, 'answer': g['example'].answer, 'label': g['label'],
            'share': g['share'], 'samples': [{'text': t, 'extracted': a, 'reward': float(r)} for t, a, r in
                                             zip(g['texts'], g['answers'], g['rewards'])]}
           for g in groups[:trace_prompts]]
  return batch, m, trace


def easiest(rollouts, params, examples, rl, mesh):
  """Rank prompts by the starting policy's majority share (no labels used) and keep the easiest fraction."""
  shares = []
  P = rl.num_prompts
  for start in range(0, len(examples), P):
    chunk = examples[start:start + P]
    chunk = chunk + [chunk[-1]] * (P - len(chunk))
    _, _, answers = rollouts.sample(params, chunk, jax.random.fold_in(jax.random.key(rl.seed + 11), start))
    shares += [s for _, s in vote_groups(answers, rl.num_samples)]
  shares = shares[:len(examples)]
  keep = np.argsort(-np.asarray(shares), kind='stable')[:max(1, int(len(examples) * rl.easiest_fraction))]
  print(f'offline curriculum: kept {len(keep)} of {len(examples)} prompts, majority share >= '
        f'{min(shares[i] for i in keep):.2f}', flush=True)
  return [examples[i] for i in sorted(keep)]


def plot(workdir):
  """training_curves.png: the curves a user looks at instead of reading metrics.jsonl. Per-step metrics of 16
  prompts are noisy: each is drawn faint, with its 10-step moving average on top. The held-out panel adds the
  before/after evaluations of summary.json at the first and last step."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  summary_file = os.path.join(workdir, 'summary.json')
  summary = json.load(open(summary_file)) if os.path.exists(summary_file) else {}
  last = rows[-1]['step'] if rows else 0
  for when, step in (('before', 0), ('after', last)):
    if when in summary:
      rows.append({'step': step, **{f'eval_{k}': v for k, v in summary[when].items()}})
  panels = [('pseudo_reward', 'true_accuracy', 'label_accuracy'), ('eval_avg@k', 'eval_maj@k', 'val_avg@k'),
            ('kl',), ('entropy',), ('response_length',), ('majority_share', 'parse_rate')]
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  for ax, keys in zip(axes.flat, panels):
    for k in keys:
      pts = sorted((r['step'], r[k]) for r in rows if r.get(k) is not None)
      if not pts:
        continue
      x, y = map(np.asarray, zip(*pts))
      if k.startswith(('eval', 'val')):
        ax.plot(x, y, marker='o', ms=4, label=k.replace('@k', f'@{summary.get("k", "k")}'))
      else:
        line, = ax.plot(x, y, alpha=0.3, lw=0.8)
        w = min(10, len(y))
        ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode='valid'), color=line.get_color(), label=k)
    ax.set_xlabel('step')
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'training_curves.png'), dpi=90)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every file it writes at INFO
  if FLAGS.distributed:
    # One process per host; the coordinator, process count and id come from the environment (TPU pod metadata,
    # SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID). Before any device use.
    jax.distributed.initialize()
  try:
    rl, dc, run_cfg = configs_from_flags()
    datasets = load_data(rl, dc)
    check_run_identity(run_cfg.workdir, {'model': dc.model, 'mode': rl.mode, 'data': dc.data})
    if dc.model == EMBEDDED and rl.mode != 'sft':   # RL starts from the shipped warm start
      dc = dataclasses.replace(dc, model=EMBEDDED_WARMSTART)
    _, _, hf_dir, summary = run(rl, dc, run_cfg, datasets)
  except (FlagError, ValueError, FileNotFoundError, FloatingPointError) as e:
    sys.exit(f'error: {e}')
  if rl.mode != 'sft':
    plot(run_cfg.workdir)
  if 'before' in summary and 'after' in summary:
    k = summary['k']
    print(f'\nheld-out, k={k}     ' + '  '.join(f'{m:>10}' for m in ('avg@k', 'maj@k', 'pass@k', 'parse_rate')))
    for when in ('before', 'after'):
      print(f'{when:<18}' + '  '.join(f'{summary[when][m]:>10.3f}' for m in ('avg@k', 'maj@k', 'pass@k', 'parse_rate')))
    gain = summary['avg@k_gain']
    if gain['paired_se']:
      print(f'avg@{k} gain {gain["mean"]:+.3f} (paired standard error {gain["paired_se"]:.3f} over '
            f'{dc.eval_prompts} prompts)')
  made = 'metrics.jsonl, summary.json' + (', trace.jsonl, training_curves.png' if rl.mode != 'sft' else '')
  print(f'\nwrote {made} in {run_cfg.workdir}, and a Hugging Face export in {hf_dir}')


if __name__ == '__main__':
  app.run(main)
