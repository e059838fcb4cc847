"""Sampling G completions per prompt from the policy: one jitted prefill + `lax.while_loop` decode.

    rollout = sample(params, cfg, [[5, 9, 2], [7, 7]], num_samples=4, max_new_tokens=64, temperature=1.0,
                     key=jax.random.key(0), eos_ids=[1])
    rollout.tokens[i * 4 + g]                          # sample g of prompt i, (N,) int32, pad_id after EOS
    texts = generate(params, cfg, hf.Text.load(model_dir), ['What is 2+3?'], num_samples=4, max_new_tokens=64,
                     temperature=1.0, key=jax.random.key(0))   # [[4 strings]]

How it works (one compiled function per bucket of prompt length and batch shape):
  1) The P prompts are left-padded to a bucket length Tp (a power of two >= 16), so that a new prompt length
     reuses the compiled loop, and every prompt's last token sits in the last column.
  2) Prefill: `model.forward` runs the P prompts once, all but that last column, into a KV cache.
  3) The cache is repeated G times along the batch axis (rows of one prompt stay adjacent: i*G .. i*G+G-1),
     so a prompt is prefilled once however many samples it gets, with room for the first segment's steps.
  4) Decode: a `lax.while_loop` over a `_State` feeds each row's last token (the last prompt token first; its
     position = prompt length - 1 + step), samples the next with a uniform drawn with key `fold_in(key, step)`,
     and stops as soon as every row has emitted an EOS id or N tokens. (The state has no key: the uniforms of
     all N steps are drawn up front.) The loop runs in up to 4 segments (`segment_ends`); each grows the cache
     only to the slots its steps can fill, so early steps do not attend over empty slots.
The decode step is `decode_step`, the model's arithmetic rewritten for one token per row (tests hold it to
`model.forward`): per-layer weight and cache buffers so the loop reads them in place and writes one cache slot
per step, fused q/k/v and gate/up matmuls. XLA CPU otherwise copies a layer's weights and cache on every
step; the price is a second copy of the layer weights for the duration of the call.
Sampling: temperature 0 is greedy (argmax); otherwise the tempered softmax, optionally restricted to the exact
top-p nucleus, drawn by inverse CDF from one uniform per row and step. The log-prob stored for each token is
that of the tempered full distribution, log_softmax(logits / temperature) (log_softmax(logits) when greedy),
what the RL loss rescores. From the same tempered distribution p, each token also gets its entropy
-sum_v p_v log p_v and its self-certainty -mean_v log p_v (Intuitor's: KL(uniform || p) + log V), for free: no
second pass over the completions.

To rescore a rollout with `model.forward`: tokens = concat([prompt_tokens, tokens], 1),
valid = concat([prompt_valid, mask], 1), positions = model.positions_from_valid(valid); the logits at column
Tp - 1 + n predict completion token n.

With a `mesh` (a `jax.sharding.Mesh` with a 'data' axis), prompts are split over the data axis and each
prompt's G samples stay on the prompt's device; P must divide over the axis. `batch_axes` (training and
evaluation pass sharding.RULES['batch'], ('data', 'fsdp')) splits the B rows, and so the KV cache, over more
axes: on an FSDP mesh a prompt's prefill is repeated on the devices of its data shard and each takes its own rows
of the group, instead of every device holding every row's cache.

Dimension letters (model.py's, plus): P prompts, G samples per prompt, B = P * G rows, Tp padded prompt length,
N max new tokens, S = Tp - 1 + N cache slots. (Inside decode_step, G is the query heads per kv head.)
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import hf
import model
import sharding

TRACES = 0       # times `_sample` was traced (compiled); tests read it to check one compile per bucket
MIN_BUCKET = 16  # shortest padded prompt length; buckets are powers of two from here


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rollout:
  """G completions for each of P prompts; row i*G + g is sample g of prompt i. B = P * G."""
  tokens: jax.Array         # (B, N) int32, sampled tokens; pad_id after the EOS
  logprobs: jax.Array       # (B, N) float32, log-prob of each token under the tempered distribution; 0 if masked
  entropy: jax.Array        # (B, N) float32, entropy of the tempered distribution the token was drawn from; 0 if masked
  self_certainty: jax.Array  # (B, N) float32, -mean_v log p_v of that distribution; 0 if masked
  mask: jax.Array           # (B, N) bool, True for real tokens: those before the first EOS, and the EOS itself
  lengths: jax.Array        # (B,) int32, number of real tokens (mask.sum(1))
  prompt_tokens: jax.Array  # (B, Tp) int32, the prompt of each row, left-padded with pad_id
  prompt_valid: jax.Array   # (B, Tp) bool, True where prompt_tokens holds a real token


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeCache:
  """The KV cache as the decode loop keeps it: one buffer per layer, batch and kv heads merged.

  One buffer per layer (not model.Cache's stacked (L, ...) array) so that each step writes its slot in place
  and each layer's attention reads its buffer directly: slicing layer l out of a stacked cache inside the loop
  makes XLA (CPU) copy the whole layer, several times per step. K is (B*K, Q, S) and V (B*K, S, Q), the
  layouts the two attention matmuls read without a transpose; B and K merged so that no axis is 1 at batch 1
  (XLA drops such an axis with a bitcast, and then copies the cache again).
  """
  k: tuple[jax.Array, ...]   # L x (B*K, Q, S)
  v: tuple[jax.Array, ...]   # L x (B*K, S, Q)
  valid: jax.Array           # (B, S) bool, slot s holds a real token
  index: jax.Array           # () int32, the slot the next token is written to


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _State:
  step: jax.Array       # () int32, index of the token sampled next
  done: jax.Array       # (B,) bool, the row has emitted an EOS
  token: jax.Array      # (B,) int32, the token sampled last (fed to the model next)
  tokens: jax.Array     # (B, N) int32
  logprobs: jax.Array   # (B, N) float32
  entropy: jax.Array    # (B, N) float32
  self_certainty: jax.Array   # (B, N) float32
  lengths: jax.Array    # (B,) int32
  cache: DecodeCache


def segment_ends(N: int) -> list[int]:
  """The decode loop runs in up to 4 segments of at least 32 steps; segment j's cache has only the slots its
  steps can fill, so early steps attend over fewer empty slots (at 128 rows, attention is a third of a step)."""
  n = max(32, -(-N // 4))
  return list(range(n, N, n)) + [N]


def bucket(length: int) -> int:
  """The padded prompt length: the smallest power of two >= length, at least MIN_BUCKET."""
  return max(MIN_BUCKET, 1 << (length - 1).bit_length())


def pad_prompts(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads P prompts to their bucket: (tokens (P, Tp) int32, valid (P, Tp) bool)."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError(f'need at least one prompt and no empty prompt; got lengths {[len(p) for p in prompts]}')
  Tp = bucket(max(len(p) for p in prompts))
  tokens = np.full((len(prompts), Tp), pad_id, np.int32)
  valid = np.zeros((len(prompts), Tp), bool)
  for i, p in enumerate(prompts):
    tokens[i, Tp - len(p):], valid[i, Tp - len(p):] = p, True
  return tokens, valid


def sample_token(logits, u, temperature, top_p, *, greedy: bool, nucleus: bool):
  """logits (B, V) float32, u (B,) uniform in (0, 1] -> (token (B,) int32, its log-prob (B,) under the tempered
  full distribution p, the entropy of p (B,), the self-certainty -mean_v log p_v of p (B,)). Greedy: p is the
  softmax of the logits (temperature 1).

  Inverse-CDF sampling: the token whose cumulative probability interval holds u * (total mass); zero-probability
  tokens have empty intervals. One uniform per row, drawn before the loop, instead of the V Gumbel variates per
  row of jax.random.categorical (threefry over B x V per step: the largest sampling cost on CPU).
  nucleus: keep the smallest set of most likely tokens whose mass reaches top_p (the top token always), and
  draw from it renormalised. Done in sorted order, so ties at the boundary cannot let an extra token in.
  """
  if greedy:
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logp = jax.nn.log_softmax(logits, axis=-1)
  else:
    logp = jax.nn.log_softmax(logits / temperature, axis=-1)                   # (B, V)
    if nucleus:
      order = jnp.argsort(-logp, axis=-1)                                      # (B, V) most likely first
      cdf = jnp.cumsum(jnp.exp(jnp.take_along_axis(logp, order, axis=-1)), axis=-1)
      before = jnp.concatenate([jnp.zeros_like(cdf[:, :1]), cdf[:, :-1]], axis=-1)   # mass of better tokens
      size = jnp.sum(before < top_p, axis=-1)                                  # (B,) tokens in the nucleus, >= 1
      total = jnp.take_along_axis(cdf, size[:, None] - 1, axis=-1)             # (B, 1) their mass
      pick = jnp.minimum(jnp.sum(cdf < u[:, None] * total, axis=-1), size - 1)   # the min only guards rounding
      token = jnp.take_along_axis(order, pick[:, None], axis=-1)[:, 0].astype(jnp.int32)
    else:
      cdf = jnp.cumsum(jnp.exp(logp), axis=-1)                                 # (B, V)
      token = jnp.sum(cdf < u[:, None] * cdf[:, -1:], axis=-1).astype(jnp.int32)
  probs = jnp.exp(logp)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * logp, 0.0), axis=-1)   # 0 log 0 = 0 (tokens at -inf logits)
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0], entropy, -jnp.mean(logp, axis=-1)


def decode_weights(params, cfg: model.Config) -> list[dict]:
  """The layer weights as the decode loop reads them: a list of L per-layer dicts, projections fused.

  Per layer, not stacked: a slice of the stacked weights inside the loop body is copied on every step (XLA CPU
  sinks loop-invariant slices into the loop), which triples the bytes a memory-bound step moves. Since a copy
  is paid anyway, q, k, v are fused into one matmul and gate, up into another (fewer, larger matmuls), already
  in cfg.dtype. The price: a second copy of the layer weights while sampling.
  """
  dt = jnp.dtype(cfg.dtype)
  D, H, K, Q = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  # jnp.concatenate(parts, axis=-1) as in-place writes into one buffer: XLA CPU would copy each layer's slice
  # first and then concatenate the copies, twice the memory traffic (and page faults) of this.
  def columns(*parts):
    out = jnp.zeros((*parts[0].shape[:-1], sum(p.shape[-1] for p in parts)), dt,
                    out_sharding=jax.typeof(parts[0]).sharding)   # an Explicit mesh asks it to match the parts
    for i, p in enumerate(parts):
      out = jax.lax.dynamic_update_slice_in_dim(out, p.astype(dt), sum(q.shape[-1] for q in parts[:i]), axis=-1)
    return out

  out = []
  for l in range(cfg.num_layers):
    w = jax.tree.map(lambda a: a[l], params['layers'])
    layer = dict(attn_norm=w['attn_norm'], mlp_norm=w['mlp_norm'],
                 qkv=columns(w['q'].reshape(D, H * Q), w['k'].reshape(D, K * Q), w['v'].reshape(D, K * Q)),
                 o=w['o'].reshape(H * Q, D).astype(dt),                  # (H Q, D)
                 gate_up=columns(w['gate'], w['up']),                     # (D, 2F)
                 down=w['down'].astype(dt))                               # (F, D)
    if cfg.qkv_bias:                                                      # ((H + 2K) Q,)
      layer['qkv_bias'] = columns(w['q_bias'].reshape(-1), w['k_bias'].reshape(-1), w['v_bias'].reshape(-1))
    if cfg.o_bias:
      layer['o_bias'] = w['o_bias'].astype(dt)                            # (D,)
    if cfg.qk_norm:   # the q heads' and the k heads' norm weights as one (H + K, Q) weight: one norm per step
      layer['qk_norm'] = jnp.concatenate([jnp.broadcast_to(w['q_norm'], (H, Q)), jnp.broadcast_to(w['k_norm'], (K, Q))])
    out.append(layer)
  return out


@functools.partial(jax.jit, static_argnums=1)
def sampler_weights(params, cfg: model.Config) -> tuple[list[dict], list[dict]]:
  """(prefill, decode): the layer weights of a model of at most model.UNROLL_LAYERS layers as one sampler call
  reads them, made by a jitted call of their own. prefill: each layer's weights in a buffer of its own
  (model.forward's per-layer form); decode: decode_weights(params, cfg).

  Why a call of their own: XLA CPU gives a program's scratch fresh memory on every call. As the sampler's
  scratch, these copies (made anyway: the unrolled prefill slices every layer out of the stacks) page-faulted
  in on every call, which made a batch-1 call of 128 tokens 1.2x slower at 23.6M parameters
  (bench/sample_bench.py); as outputs of a call of their own, they live in buffers the allocator reuses. Same
  values, same arithmetic: the samples are identical bit for bit. Deeper models (sample: weights=None) make
  the decode copies inside the sampler, where XLA overlaps them with the prefill's scratch: as inputs they
  would be live during the prefill too, a copy of the layer weights more at the peak (0.85 GiB per device for
  Qwen3-4B on 8 chips, bench/plan.py).
  """
  per_layer = [jax.tree.map(lambda a: a[l], params['layers']) for l in range(cfg.num_layers)]
  return per_layer, decode_weights(params, cfg)


def weights_apart(cfg: model.Config) -> bool:
  """Whether a sampler call takes its weight copies from sampler_weights (True) or makes them inside."""
  return cfg.num_layers <= model.UNROLL_LAYERS


def decode_step(params, layers: list[dict], cfg: model.Config, token, position, cache: DecodeCache):
  """One token per row through the policy: token, position (B,) -> (logits (B, V) float32, updated cache).

  layers: decode_weights(params, cfg). The same arithmetic as model.forward with T = 1 (tests check it against
  the full forward pass), written for the decode loop: layers unrolled over per-layer buffers, fused
  projections, the mask and the rotary angles computed once per step, no T axis.
  """
  dt = jnp.dtype(cfg.dtype)
  B = token.shape[0]
  H, K, Q, F = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  G = H // K   # query heads per kv head (here G is not samples per prompt)
  # Keys: every slot written so far, this token's included. An additive mask, built once per step.
  valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, jnp.ones((B, 1), bool), cache.index, axis=1)
  bias = jnp.where(jnp.repeat(valid, K, axis=0), 0.0, -1e30)[:, None, :]      # (B*K, 1, S)
  # Rotary embedding of model.rope (rotate-half: halves x1, x2 -> x1 cos - x2 sin, x2 cos + x1 sin), angles
  # computed once for all layers, written without a concatenate (which XLA CPU emits slowly): the halves as an
  # axis of 2, swapped by a flip.
  angles = position.astype(jnp.float32)[:, None, None, None] * model.rope_frequencies(cfg)   # (B, 1, 1, Q/2)
  cos, sin = jnp.cos(angles), jnp.sin(angles) * jnp.array([-1.0, 1.0])[:, None]   # (B, 1, 1 | 2, Q/2)
  cos, sin = jax.lax.optimization_barrier((cos, sin))   # else XLA recomputes them inside every use, per element

  def rope(x):   # (B, N, Q)
    halves = x.astype(jnp.float32).reshape(*x.shape[:-1], 2, Q // 2)
    return (halves * cos + jnp.flip(halves, axis=-2) * sin).reshape(x.shape).astype(x.dtype)

  x = params['embed'].astype(dt)[token]                                       # (B, D)
  ks, vs = [], []
  for l, w in enumerate(layers):   # unrolled: per-layer weights and cache buffers, no slicing inside the loop
    h = model.rms_norm(x, w['attn_norm'], cfg.rms_eps)
    qkv = h @ w['qkv']                                                         # (B, (H + 2K) Q)
    if cfg.qkv_bias:
      qkv = qkv + w['qkv_bias']
    qkv = qkv.reshape(B, H + 2 * K, Q)
    qk, v = qkv[:, :H + K], qkv[:, H + K:]                                    # (B, H + K, Q), (B, K, Q)
    if cfg.qk_norm:   # Qwen3: every q and k head over its Q dims, in one norm, before the rotation
      qk = model.rms_norm(qk, w['qk_norm'], cfg.rms_eps)
    qk = rope(qk)
    q, k = qk[:, :H], qk[:, H:]
    # Write the new slot in place, then attend over all slots. The barrier keeps the write a buffer of its own
    # (else XLA fuses the write into each reader and copies the whole layer cache, per step). K is kept as
    # (B*K, Q, S) and V as (B*K, S, Q): the layouts the two attention matmuls read without a transpose.
    kc = jax.lax.dynamic_update_slice(cache.k[l], k.reshape(B * K, Q, 1).astype(cache.k[l].dtype),
                                      (0, 0, cache.index))
    vc = jax.lax.dynamic_update_slice(cache.v[l], v.reshape(B * K, 1, Q).astype(cache.v[l].dtype),
                                      (0, cache.index, 0))
    kc, vc = jax.lax.optimization_barrier((kc, vc))
    ks.append(kc)
    vs.append(vc)
    q = q.reshape(B * K, G, Q) / np.sqrt(Q)
    scores = jnp.einsum('ngq,nqs->ngs', q, kc, preferred_element_type=jnp.float32) + bias   # (B*K, G, S)
    probs = jax.nn.softmax(scores, axis=-1).astype(vc.dtype)
    a = jnp.einsum('ngs,nsq->ngq', probs, vc).reshape(B, H * Q)
    x = x + (a @ w['o'] + w['o_bias'] if cfg.o_bias else a @ w['o'])
    h = model.rms_norm(x, w['mlp_norm'], cfg.rms_eps)
    gu = h @ w['gate_up']                                                      # (B, 2F)
    x = x + (jax.nn.silu(gu[:, :F]) * gu[:, F:]) @ w['down']
  x = model.rms_norm(x, params['final_norm'], cfg.rms_eps)
  if cfg.tie_embeddings:   # contract against (V, D) directly rather than materialise its transpose
    logits = jnp.einsum('bd,vd->bv', x, params['embed'].astype(dt), preferred_element_type=jnp.float32)
  else:
    logits = jnp.einsum('bd,dv->bv', x, params['lm_head'].astype(dt), preferred_element_type=jnp.float32)
  return logits, DecodeCache(k=tuple(ks), v=tuple(vs), valid=valid, index=cache.index + 1)


def _pin_batch(mesh, x, axis: int = 0, axes=('data',)):
  """Pins x's `axis` to the mesh axes `axes`; a no-op without a mesh. (Inside `_sample` the mesh is all-Auto.)"""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*[None] * axis, axes)))


@functools.partial(jax.jit, static_argnames=('cfg', 'num_samples', 'max_new_tokens', 'greedy', 'nucleus', 'mesh',
                                             'batch_axes'), keep_unused=True)
def _sample(params, weights, cfg, tokens, valid, key, temperature, top_p, eos_table, pad_id, *, num_samples,
            max_new_tokens, greedy, nucleus, mesh, batch_axes=('data',)):
  """tokens, valid: (P, Tp) left-padded prompts; eos_table (V,) bool; weights:
  sampler_weights(params, cfg) where weights_apart(cfg), else None.
  Returns a Rollout of B = P * G rows.

  The cache is created inside, so there is no input buffer worth donating; the while_loop carries it and
  XLA updates it in place, step to step. Every input is kept, used or not (the stacked layer weights are not,
  when `weights` carries copies), so that the compiled program's argument size (memory.py) counts the
  parameters, which stay on the devices during the call.
  """
  global TRACES
  TRACES += 1
  rollout = functools.partial(_rollout, cfg=cfg, num_samples=num_samples, max_new_tokens=max_new_tokens,
                              greedy=greedy, nucleus=nucleus, batch_axes=batch_axes)
  if mesh is None:
    return rollout(params, weights, tokens, valid, key, temperature, top_p, eos_table, pad_id, mesh=None)
  # model.forward indexes the embedding with batch-sharded tokens, which an Explicit mesh refuses to resolve
  # on its own; so the rollout runs with the mesh's axes as Auto, pinned by sharding constraints.
  auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
  rollout = functools.partial(rollout, mesh=auto)
  if AxisType.Explicit in mesh.axis_types:
    rollout = jax.sharding.auto_axes(rollout, out_sharding=NamedSharding(mesh, PartitionSpec(batch_axes)))
  return rollout(params, weights, tokens, valid, key, temperature, top_p, eos_table, pad_id)


def _rollout(params, weights, tokens, valid, key, temperature, top_p, eos_table, pad_id, *, cfg, num_samples,
             max_new_tokens, greedy, nucleus, mesh, batch_axes):
  G, N = num_samples, max_new_tokens
  P, Tp = tokens.shape
  B = P * G
  pin = functools.partial(_pin_batch, mesh)                       # P prompt rows: over 'data'
  rows = functools.partial(_pin_batch, mesh, axes=batch_axes)     # B = P * G rows: over the batch axes

  # 1) Prefill the P prompts once, all but their last token (the last column: prompts are left-padded). The
  #    logits of these Tp - 1 columns are unused, so XLA drops the LM head; the decode loop's first step feeds
  #    the last prompt token and samples from its logits, so the sampling code is compiled once, not twice.
  positions = model.positions_from_valid(valid)                                # (P, Tp)
  prefill = model.init_cache(cfg, P, Tp - 1)
  prefill = model.Cache(k=pin(prefill.k, 1), v=pin(prefill.v, 1), valid=pin(prefill.valid), index=prefill.index)
  if weights is None:   # made here; the barrier keeps them L buffers made once (not slices copied every step)
    prefill_params, layers = params, jax.lax.optimization_barrier(decode_weights(params, cfg))
  else:
    prefill_params, layers = dict(params, layers=weights[0]), weights[1]
  with jax.named_scope('prefill'):   # its ops carry the name (bench/sample_profile.py groups them by it)
    _, prefill = model.forward(prefill_params, cfg, tokens[:, :-1], positions[:, :-1], valid[:, :-1], prefill)

  # 2) Repeat for the G samples (rows of one prompt are adjacent, so they stay on the prompt's device), in the
  #    decode layout with room for the first segment's slots (the last prompt token, then sampled ones); each
  #    later segment grows it by its own steps, up to Tp - 1 + N slots.
  rep = lambda a, axis=0: rows(jnp.repeat(a, G, axis=axis), axis)
  def grow(a, order, n):   # (P, Tp - 1, K, Q) -> (B*K, Q, Tp - 1 + n) for keys, (B*K, Tp - 1 + n, Q) for values
    a = rep(jnp.pad(a, ((0, 0), (0, n), (0, 0), (0, 0))).transpose(order))
    return rows(a.reshape(B * cfg.num_kv_heads, *a.shape[2:]))
  ends = segment_ends(N)
  cache = DecodeCache(k=tuple(grow(a, (0, 2, 3, 1), ends[0]) for a in prefill.k),
                      v=tuple(grow(a, (0, 2, 1, 3), ends[0]) for a in prefill.v),
                      valid=rep(jnp.pad(prefill.valid, ((0, 0), (0, ends[0])))), index=prefill.index)
  last_position = rep(positions[:, -1])                                         # (B,) prompt length - 1
  state = _State(
      step=jnp.zeros((), jnp.int32), done=rows(jnp.zeros((B,), bool)), token=rep(tokens[:, -1]),
      tokens=rows(jnp.full((B, N), pad_id, jnp.int32)), logprobs=rows(jnp.zeros((B, N), jnp.float32)),
      entropy=rows(jnp.zeros((B, N), jnp.float32)), self_certainty=rows(jnp.zeros((B, N), jnp.float32)),
      lengths=rows(jnp.zeros((B,), jnp.int32)), cache=cache)
  # The randomness of every step, drawn here with the per-step keys fold_in(key, step): one uniform in (0, 1] per
  # row and step. Inside the loop, XLA CPU runs each threefry call as a rolled loop of ~80 small ops.
  draw = lambda step: 1.0 - jax.random.uniform(jax.random.fold_in(key, step), (B,))
  uniforms = rows(jax.vmap(draw)(jnp.arange(N)), 1)                            # (N, B)

  # 3) Decode: feed the last token, sample the next, until every row is done or has N tokens.
  def cond(s: _State, end):
    return (s.step < end) & ~jnp.all(s.done)

  def body(s: _State):
    pos = last_position + s.step                                                # (B,) position of s.token
    logits, cache = decode_step(params, layers, cfg, s.token, pos, s.cache)
    token, logp, entropy, certainty = sample_token(logits, uniforms[s.step], temperature, top_p,
                                                   greedy=greedy, nucleus=nucleus)   # (B,) each
    live = ~s.done                                                               # rows still writing
    token = jnp.where(live, token, pad_id)
    put = lambda a, x: a.at[:, s.step].set(jnp.where(live, x, 0.0))
    return _State(
        step=s.step + 1, done=s.done | (live & eos_table[token]), token=token,
        tokens=s.tokens.at[:, s.step].set(token), logprobs=put(s.logprobs, logp), entropy=put(s.entropy, entropy),
        self_certainty=put(s.self_certainty, certainty), lengths=s.lengths + live, cache=cache)

  for i, end in enumerate(ends):
    if i:   # room for the next segment's slots
      c, more = state.cache, end - ends[i - 1]
      pad = lambda a, axis: rows(jnp.pad(a, [(0, more) if d == axis else (0, 0) for d in range(a.ndim)]))
      state = dataclasses.replace(state, cache=DecodeCache(
          k=tuple(pad(a, 2) for a in c.k), v=tuple(pad(a, 1) for a in c.v), valid=pad(c.valid, 1), index=c.index))
    state = jax.lax.while_loop(functools.partial(cond, end=end), body, state)
  mask = jnp.arange(N)[None, :] < state.lengths[:, None]                        # (B, N)
  return Rollout(tokens=state.tokens, logprobs=state.logprobs, entropy=state.entropy,
                 self_certainty=state.self_certainty, mask=mask, lengths=state.lengths, prompt_tokens=rep(tokens),
                 prompt_valid=rep(valid))


def sample(params, cfg: model.Config, prompts: list[list[int]], *, num_samples: int, max_new_tokens: int,
           temperature: float, top_p: float = 1.0, key: jax.Array, eos_ids, pad_id: int = 0,
           mesh: jax.sharding.Mesh | None = None, batch_axes=('data',)) -> Rollout:
  """Samples num_samples completions of up to max_new_tokens for each prompt (lists of token ids).

  Returns a Rollout of jax arrays with P * G rows (sharded over mesh's data axis when a mesh is given).
  """
  if num_samples < 1 or max_new_tokens < 1:
    raise ValueError(f'num_samples={num_samples} and max_new_tokens={max_new_tokens} must be >= 1')
  if temperature < 0:
    raise ValueError(f'temperature={temperature} must be >= 0 (0 means greedy)')
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p={top_p} must be in (0, 1]')
  tokens, valid = pad_prompts(prompts, pad_id)
  if mesh is not None:
    if 'data' not in mesh.axis_names:
      raise ValueError(f'the mesh has axes {mesh.axis_names}; sampling needs a "data" axis')
    ways = mesh.shape['data']
    if len(prompts) % ways:
      raise ValueError(f'{len(prompts)} prompts do not divide over the {ways}-way data axis of the mesh')
    batch_axes = tuple(batch_axes)
    row_ways = math.prod(mesh.shape[a] for a in batch_axes)
    if len(prompts) * num_samples % row_ways:
      raise ValueError(f'{len(prompts)} prompts x {num_samples} samples do not divide over the {row_ways}-way '
                       f'{" x ".join(batch_axes)} axes of the mesh')
    tokens, valid = (jax.device_put(a, NamedSharding(mesh, PartitionSpec('data'))) for a in (tokens, valid))
  # EOS ids as a (V,) table: the compiled loop does not depend on how many there are.
  eos_ids = [int(i) for i in eos_ids]
  if any(not 0 <= i < cfg.vocab_size for i in eos_ids):
    raise ValueError(f'eos_ids={eos_ids} must lie in [0, vocab_size={cfg.vocab_size})')
  eos_table = np.zeros(cfg.vocab_size, bool)
  eos_table[eos_ids] = True
  weights = sampler_weights(params, cfg) if weights_apart(cfg) else None
  return _sample(params, weights, cfg, tokens, valid, key, jnp.float32(max(temperature, 1e-6)),
                 jnp.float32(top_p), eos_table, jnp.int32(pad_id),
                 num_samples=num_samples, max_new_tokens=max_new_tokens, greedy=temperature == 0,
                 nucleus=top_p < 1.0, mesh=mesh, batch_axes=tuple(batch_axes))


def generate(params, cfg: model.Config, text: hf.Text, prompts: list[str], *, num_samples: int,
             max_new_tokens: int, temperature: float, top_p: float = 1.0, key: jax.Array, mesh=None,
             batch_axes=('data',), return_rollout: bool = False):
  """Text in, text out: for each prompt its num_samples completions, decoded without the stop token.

  text: the tokenizer boundary (hf.Text): its encode (chat template or not), stop_ids, pad_id and decode.
  mesh, batch_axes: as `sample`'s (eval.py passes sharding.RULES['batch'], as training samples).
  return_rollout=True returns (texts, rollout, prompt_ids) for token-level use.
  """
  prompt_ids = text.encode(prompts)
  rollout = sample(params, cfg, prompt_ids, num_samples=num_samples, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_p=top_p, key=key, eos_ids=text.stop_ids, pad_id=text.pad_id,
                   mesh=mesh, batch_axes=batch_axes)
  # host_array: on several hosts the rows are spread over processes; every process gets every text.
  flat = text.decode(sharding.host_array(rollout.tokens), sharding.host_array(rollout.mask))
  texts = [flat[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
  return (texts, rollout, prompt_ids) if return_rollout else texts
