"""The jitted update: log-probs of sampled tokens, the policy-gradient loss, AdamW, micro-batching, the scorer.

    loss_fn = functools.partial(policy_loss, temperature=1.0, clip_eps=0.2, kl_coef=0.0, entropy_coef=0.0)
    step = make_train_step(cfg, loss_fn, make_optimizer(1e-6), shardings, mesh)
    state, aux = step(state, sharding.global_batch(batch, mesh))   # state: {'params', 'opt_state'}

A batch holds B = P * G rows: `prompt_tokens`, `prompt_valid` (B, Tp) left-padded prompts; `tokens`, `mask`
(B, N) completions; `old_logp` (B, N) the sampler's log-probs; `ref_logp` (B, N) the reference policy's;
`advantages` (B,); `row_weight` (B,) 0 for rows of prompts that carry no gradient (unlabelled ones).

The loss is the token-level clipped policy gradient, averaged over every response token of the batch
("token-mean", the paper's aggregation: each token weighs the same whatever its response's length). Fully
on-policy (one update per batch, the paper's setting) the ratio is 1 and the clip never binds; with several
updates per batch it is PPO's. The KL to the reference policy (k3 estimator) enters the loss only with a non-zero
`kl_coef` here (--kl_in=loss); with --kl_in=reward the caller folds it into the rewards and passes 0.
"""
import jax
import jax.numpy as jnp
import optax

import model
from sharding import RULES, constrain


def k3(logp, ref_logp):
  """Schulman's k3 estimator of KL(pi || ref) per token: r - log r - 1 with r = pi_ref / pi. Always >= 0."""
  log_ratio = ref_logp - logp
  return jnp.exp(log_ratio) - log_ratio - 1


def token_mean(x, mask, count=None):
  """Average over every response token of the batch ("token-mean", as verl's token-mean mode). Masked entries
  never leak in, not even inf/NaN. count: the tokens to divide by, by default this mask's; a micro-batch passes
  its whole batch's (token_count), so that the micro-batches' terms sum to the batch's token-mean."""
  count = jnp.maximum(mask.sum(), 1.0) if count is None else count
  return jnp.where(mask > 0, x, 0.0).sum() / count


def token_count(batch):
  """The denominator of the batch's token-mean: response tokens of rows that count (row_weight, if any)."""
  mask = batch['mask'] * batch['row_weight'][:, None] if 'row_weight' in batch else batch['mask']
  return jnp.maximum(mask.sum(), 1.0)


HEAD_CHUNK = 512   # response tokens per slice of the LM head in token_logprobs


@jax.named_scope('head')   # names the ops in profiles (bench/train_profile.py)
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
  x = constrain(x[:, Tp - 1:-1], ('batch', None, None))                # (B, N, D): column n predicts tokens[:, n]
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


def policy_loss(params, cfg, batch, *, temperature, clip_eps, kl_coef, entropy_coef):
  """Token-mean clipped policy gradient + kl_coef * k3 KL to the reference - entropy_coef * entropy."""
  mask = batch['mask'] * batch['row_weight'][:, None]                          # (B, N)
  logp, entropy = token_logprobs(params, cfg, batch['prompt_tokens'], batch['prompt_valid'], batch['tokens'],
                                 batch['mask'], temperature)
  ratio = jnp.exp(logp - batch['old_logp'])
  adv = batch['advantages'][:, None]                                           # (B, 1)
  pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
  kl = k3(logp, batch['ref_logp'])
  mean = lambda x: token_mean(x, mask, batch.get('token_count'))   # set by the micro-batched step
  loss = mean(pg) - entropy_coef * mean(entropy)
  if kl_coef:   # a Python float: with the KL in the reward (or off) the term is not even traced
    loss = loss + kl_coef * mean(kl)
  aux = {'entropy': mean(entropy), 'kl': mean(kl),
         'clip_frac': mean((jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32))}
  return loss, aux


def sft_loss(params, cfg, batch):
  """Supervised warm start: token-mean negative log-likelihood of the targets."""
  logp, entropy = token_logprobs(params, cfg, batch['prompt_tokens'], batch['prompt_valid'], batch['tokens'],
                                 batch['mask'], 1.0)
  mean = lambda x: token_mean(x, batch['mask'], batch.get('token_count'))
  return -mean(logp), {'entropy': mean(entropy)}


def make_optimizer(learning_rate: float, max_grad_norm: float = 1.0, weight_decay: float = 0.01):
  """AdamW (0.9, 0.999) at a constant learning rate with global gradient-norm clipping: the paper's."""
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(learning_rate, b1=0.9, b2=0.999, weight_decay=weight_decay))


def split_rows(batch, micro_batches):
  """Leaves (B, ...) -> (M, B / M, ...). Slice m takes rows m, m + M, m + 2M, ...: with rows sharded in
  contiguous blocks, every device keeps its own rows, and nothing moves between devices."""
  M = micro_batches
  return jax.tree.map(lambda a: jnp.swapaxes(a.reshape(a.shape[0] // M, M, *a.shape[1:]), 0, 1), batch)


def compiler_options(mesh):
  """XLA's options for the update's program. On the CPU, XLA's own fused kernels instead of YNNPACK's: with them
  the step took 0.93 of the defaults' time on one CPU we measured, 1.08 on another, an AMD EPYC
  (bench/train_bench.py --compare); the findings were measured with them, and gradients differ in their last
  bits. The sampler keeps YNNPACK, which serves its decode steps better. None on accelerators."""
  if all(d.platform == 'cpu' for d in mesh.devices.flat):
    return {'xla_cpu_experimental_ynn_fusion_type': ''}
  return None


def _batch_spec(mesh):
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(RULES['batch']))


def make_train_step(cfg, loss_fn, optimizer, shardings, mesh, micro_batches=1):
  """One jitted optimizer step over the mesh: state ({'params', 'opt_state'}, and any other entries, passed
  through) sharded like `shardings`, batch rows over the batch axes. loss_fn(params, cfg, batch) -> (loss, aux).

  micro_batches=M > 1 accumulates the gradient over M slices of the rows (lax.scan), so only one slice's
  activations are live. Every slice divides by the whole batch's token count, so the summed loss and gradient
  are the batch's token-mean: the same update as M=1 up to float rounding (tests/test_scale.py).
  """
  batch_spec = _batch_spec(mesh)

  def loss_and_grads(params, batch):
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, cfg, b), has_aux=True)
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
    zeros = (zeros[0], jax.lax.with_sharding_constraint(zeros[1], shardings['params']))
    (loss_aux, grads), _ = jax.lax.scan(add, zeros, slices)
    return loss_aux, jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)

  def step(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):   # activations pinned by `constrain`
      (loss, aux), grads = loss_and_grads(state['params'], batch)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    aux = dict(aux, loss=loss, grad_norm=optax.global_norm(grads))
    return dict(state, params=params, opt_state=opt_state), aux   # other entries (the EMA teacher) pass through
  return jax.jit(step, in_shardings=(shardings, batch_spec), out_shardings=(shardings, None), donate_argnums=0,
                 compiler_options=compiler_options(mesh))


def make_scorer(cfg, temperature, mesh, micro_batches=1):
  """Jitted log-probs (B, N) of completions under some parameters (the KL reference), micro_batches slices at a
  time."""
  batch_spec = _batch_spec(mesh)

  def score_slice(params, b):
    b = jax.lax.with_sharding_constraint(b, batch_spec)
    return token_logprobs(params, cfg, b['prompt_tokens'], b['prompt_valid'], b['tokens'], b['mask'],
                          temperature)[0]

  def score(params, b):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      if micro_batches == 1:
        return score_slice(params, b)
      logp = jax.lax.map(lambda s: score_slice(params, s), split_rows(b, micro_batches))   # (M, B / M, N)
      return jnp.swapaxes(logp, 0, 1).reshape(-1, logp.shape[-1])                          # rows back in order
  return jax.jit(score, in_shardings=(None, batch_spec))


def make_ema_update(p_shard):
  """teacher <- decay * teacher + (1 - decay) * params, leaf by leaf in float32, placed like the policy: the
  slowly moving teacher of Co-rewarding-II (arXiv 2508.00410). The old teacher's buffers are reused."""
  def ema(teacher, params, decay):
    return jax.tree.map(lambda t, p: (decay * t.astype(jnp.float32) + (1 - decay) * p.astype(jnp.float32)
                                      ).astype(t.dtype), teacher, params)
  return jax.jit(ema, in_shardings=(p_shard, p_shard, None), out_shardings=p_shard, donate_argnums=0)
