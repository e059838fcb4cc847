"""The decoder of the paper's model families as a pytree of parameters plus pure functions. Math only: Hugging Face
directories are read and written by hf.py.

    cfg, params = hf.load_checkpoint('path/to/Qwen3-4B-Base')        # a local Hugging Face directory
    logits = model.logits(params, cfg, tokens)                         # (B, T, V) float32
    params = model.init_params(model.PRESETS['tiny'], jax.random.key(0))   # or a fresh random policy

Families (`Config.family`; the same numbers as transformers' classes, tests hold them to it):
  qwen2   Qwen2ForCausalLM (Qwen2, Qwen2.5, Qwen2.5-Math): biases on q, k, v.
  qwen3   Qwen3ForCausalLM: RMSNorm over the head dim on each q and k head before the rotary embedding; no biases
          (biases on q, k, v and o when config.json sets attention_bias).
  llama   LlamaForCausalLM (Llama 3.x, DeepSeek-Math): no biases; rotary frequencies optionally rescaled the Llama 3
          way (`rope_scaling`).
Each is: token embedding; L blocks of RMSNorm -> grouped-query attention with rotary positions (rotate-half form)
-> residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm; LM head (tied to the embedding or not).

The layers are stacked on a leading axis and run with `lax.scan`, so compile time does not grow with depth
(models of at most UNROLL_LAYERS layers have the scan unrolled: faster on XLA CPU, see `forward`).
One `forward` serves training (full sequence) and sampling (prefill into a KV cache, then decode): every row
carries its own positions and a mask of real tokens, so left- or right-padded rows give the logits they would
give alone.

Dimension letters used in einsum strings and comments:
  B batch, T time (this call's tokens), S cache length, D model, H query heads, K kv heads, Q head dim,
  F mlp, V vocab, L layers, G samples per prompt.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Config

FAMILIES = ('qwen2', 'qwen3', 'llama')
# The Llama 3 rotary scaling, in the order Config.rope_scaling holds it (the keys of config.json's rope_scaling).
LLAMA3_SCALING = ('factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings')


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int          # V
  d_model: int             # D, hidden size
  num_layers: int          # L
  num_heads: int           # H, query heads
  num_kv_heads: int        # K, key/value heads (grouped-query attention: H % K == 0)
  head_dim: int            # Q (need not be d_model / num_heads: Qwen3)
  mlp_dim: int             # F, SwiGLU inner size
  rms_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple | None = None   # Llama 3 scaling: values in LLAMA3_SCALING order; None: plain rotary
  family: str = 'qwen2'    # one of FAMILIES: the Hugging Face architecture hf.save_checkpoint writes
  qkv_bias: bool = True    # biases on q, k, v (Qwen2 always; Qwen3 and Llama with attention_bias)
  o_bias: bool = False     # bias on o (Qwen3 and Llama with attention_bias)
  qk_norm: bool = False    # RMSNorm over the head dim of each q and k head, before the rotary embedding (Qwen3)
  tie_embeddings: bool = False
  param_dtype: str = 'float32'   # storage dtype of the parameters
  dtype: str = 'float32'         # compute dtype of matmuls (norms, softmax and logits stay float32)
  remat: bool = False            # recompute each layer's activations in the backward pass (long responses)

  def __post_init__(self):
    for name in ('vocab_size', 'd_model', 'num_layers', 'num_heads', 'num_kv_heads', 'head_dim', 'mlp_dim'):
      if getattr(self, name) <= 0:
        raise ValueError(f'Config.{name}={getattr(self, name)} must be positive')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'Config.num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}')
    if self.head_dim % 2:
      raise ValueError(f'Config.head_dim={self.head_dim} must be even for rotary embeddings')
    for name in ('param_dtype', 'dtype'):
      if getattr(self, name) not in ('float32', 'bfloat16'):
        raise ValueError(f'Config.{name}={getattr(self, name)!r}: use float32 or bfloat16')
    # Each family's export must load in transformers as the same model, so its flags are those the class can hold.
    allowed = {'qwen2': self.qkv_bias and not self.o_bias and not self.qk_norm,
               'qwen3': self.qk_norm and self.qkv_bias == self.o_bias,
               'llama': not self.qk_norm and self.qkv_bias == self.o_bias}
    if self.family not in allowed:
      raise ValueError(f'Config.family={self.family!r}: use one of {FAMILIES}')
    if not allowed[self.family]:
      raise ValueError(f'Config.family={self.family!r} with qkv_bias={self.qkv_bias}, o_bias={self.o_bias}, '
                       f'qk_norm={self.qk_norm}: qwen2 has q/k/v biases and no q/k norm; qwen3 has the q/k norm; '
                       'qwen3 and llama have biases on all of q, k, v, o or on none')
    if self.rope_scaling is not None:
      if not isinstance(self.rope_scaling, tuple) or len(self.rope_scaling) != len(LLAMA3_SCALING):
        raise ValueError(f'Config.rope_scaling={self.rope_scaling!r}: a tuple of {LLAMA3_SCALING} or None')
      factor, low, high, original = self.rope_scaling
      if not (factor > 0 and 0 < low < high and original > 0):
        raise ValueError(f'Config.rope_scaling={self.rope_scaling!r}: need factor > 0, 0 < low_freq_factor < '
                         'high_freq_factor, original_max_position_embeddings > 0')


PRESETS = {
    # The embedded default: a small policy trained from scratch on a character-level vocabulary.
    'tiny': Config(vocab_size=128, d_model=128, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32,
                   mlp_dim=384, tie_embeddings=True),
    # The shapes of the paper's models, from their config.json (weights come from a local directory).
    'qwen2.5-math-1.5b': Config(vocab_size=151936, d_model=1536, num_layers=28, num_heads=12, num_kv_heads=2,
                                head_dim=128, mlp_dim=8960, rope_theta=10000.0, tie_embeddings=True,
                                param_dtype='bfloat16', dtype='bfloat16'),
    'qwen2.5-math-7b': Config(vocab_size=152064, d_model=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                              head_dim=128, mlp_dim=18944, rope_theta=10000.0, tie_embeddings=False,
                              param_dtype='bfloat16', dtype='bfloat16'),
    'qwen3-4b-base': Config(vocab_size=151936, d_model=2560, num_layers=36, num_heads=32, num_kv_heads=8,
                            head_dim=128, mlp_dim=9728, rope_theta=1e6, family='qwen3', qkv_bias=False,
                            qk_norm=True, tie_embeddings=True, param_dtype='bfloat16', dtype='bfloat16'),
    'qwen3-14b-base': Config(vocab_size=151936, d_model=5120, num_layers=40, num_heads=40, num_kv_heads=8,
                             head_dim=128, mlp_dim=17408, rope_theta=1e6, family='qwen3', qkv_bias=False,
                             qk_norm=True, tie_embeddings=False, param_dtype='bfloat16', dtype='bfloat16'),
    # Llama-3.1-8B and its Instruct model share these shapes.
    'llama-3.1-8b': Config(vocab_size=128256, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                           head_dim=128, mlp_dim=14336, rms_eps=1e-5, rope_theta=500000.0,
                           rope_scaling=(8.0, 1.0, 4.0, 8192), family='llama', qkv_bias=False,
                           tie_embeddings=False, param_dtype='bfloat16', dtype='bfloat16'),
    # DeepSeek-Math-7B (base, Instruct, RL): the plain Llama layout, kv heads = heads.
    'deepseek-math-7b': Config(vocab_size=102400, d_model=4096, num_layers=30, num_heads=32, num_kv_heads=32,
                               head_dim=128, mlp_dim=11008, rms_eps=1e-6, rope_theta=10000.0, family='llama',
                               qkv_bias=False, tie_embeddings=False, param_dtype='bfloat16', dtype='bfloat16'),
}

# ----------------------------------------------------------------------------------------------------------------
# Parameters: a dict pytree; `param_axes` gives each leaf's logical axis names (for the sharding rules).


def param_axes(cfg: Config) -> dict:
  axes = {
      'embed': ('vocab', 'embed'),                      # (V, D)
      'final_norm': ('embed',),                         # (D,)
      'layers': {
          'attn_norm': ('layers', 'embed'),             # (L, D)
          'q': ('layers', 'embed', 'heads', None),      # (L, D, H, Q)
          'k': ('layers', 'embed', 'kv_heads', None),   # (L, D, K, Q)
          'v': ('layers', 'embed', 'kv_heads', None),   # (L, D, K, Q)
          'o': ('layers', 'heads', None, 'embed'),      # (L, H, Q, D)
          'mlp_norm': ('layers', 'embed'),              # (L, D)
          'gate': ('layers', 'embed', 'mlp'),           # (L, D, F)
          'up': ('layers', 'embed', 'mlp'),             # (L, D, F)
          'down': ('layers', 'mlp', 'embed'),           # (L, F, D)
      },
  }
  if cfg.qkv_bias:
    axes['layers'].update(q_bias=('layers', 'heads', None), k_bias=('layers', 'kv_heads', None),
                          v_bias=('layers', 'kv_heads', None))
  if cfg.o_bias:
    axes['layers']['o_bias'] = ('layers', 'embed')      # (L, D)
  if cfg.qk_norm:
    axes['layers'].update(q_norm=('layers', None), k_norm=('layers', None))   # (L, Q) each
  if not cfg.tie_embeddings:
    axes['lm_head'] = ('embed', 'vocab')                # (D, V)
  return axes


def param_shapes(cfg: Config) -> dict:
  L, D, H, K, Q, F, V = (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.mlp_dim, cfg.vocab_size)
  sizes = {'layers': L, 'embed': D, 'heads': H, 'kv_heads': K, 'mlp': F, 'vocab': V}
  axes = param_axes(cfg)
  shapes = jax.tree.map(lambda a: tuple(sizes.get(n, Q) for n in a), axes, is_leaf=lambda x: isinstance(x, tuple))
  return shapes


@functools.partial(jax.jit, static_argnums=0)
def init_params(cfg: Config, key: jax.Array) -> dict:
  """Random init: normal(0, 0.02) for matrices (as transformers does), ones for norms, zeros for biases."""
  shapes = param_shapes(cfg)
  is_shape = lambda x: isinstance(x, tuple)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(shapes, is_leaf=is_shape)[0]]
  keys = jax.random.split(key, len(leaves))
  dtype = jnp.dtype(cfg.param_dtype)
  out = []
  for path, shape, k in zip(paths, leaves, keys):
    if 'norm' in path:
      out.append(jnp.ones(shape, dtype))
    elif 'bias' in path:
      out.append(jnp.zeros(shape, dtype))
    else:
      out.append((0.02 * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------------------------------------------
# Forward


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Cache:
  """KV cache for sampling. Slot s of row b holds a real token iff valid[b, s]."""
  k: jax.Array       # (L, B, S, K, Q)
  v: jax.Array       # (L, B, S, K, Q)
  valid: jax.Array   # (B, S) bool
  index: jax.Array   # () int32, the next slot to write (the same for all rows)


def init_cache(cfg: Config, batch: int, length: int) -> Cache:
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  dtype = jnp.dtype(cfg.dtype)
  return Cache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), valid=jnp.zeros((batch, length), bool),
               index=jnp.zeros((), jnp.int32))


@jax.named_scope('norm')   # the scopes name the ops in profiles (bench/train_profile.py)
def rms_norm(x, w, eps):
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * w.astype(jnp.float32)).astype(x.dtype)


def rope_frequencies(cfg: Config) -> np.ndarray:
  """The rotary inverse frequencies (Q/2,) float32, the numbers of transformers' rotary embedding (float32
  arithmetic, as torch does it); with cfg.rope_scaling, rescaled as transformers' `llama3` rope type does:
  wavelengths above original / low_freq_factor are stretched by `factor`, those below original / high_freq_factor
  kept, those between interpolated. Numpy on the static config: a constant of the compiled program."""
  Q = cfg.head_dim
  inv_freq = (1.0 / cfg.rope_theta ** (np.arange(0, Q, 2, dtype=np.float32) / np.float32(Q))).astype(np.float32)
  if cfg.rope_scaling is None:
    return inv_freq
  factor, low, high, original = cfg.rope_scaling
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > original / low, inv_freq / factor, inv_freq)
  smooth = (original / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < original / high) & ~(wavelen > original / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


@jax.named_scope('rope')
def rope(x, positions, inv_freq):
  """Rotary embedding, rotate-half form (transformers'): halves x1, x2 -> (x1 cos - x2 sin, x2 cos + x1 sin).
  x: (B, T, N, Q), positions: (B, T), inv_freq: (Q/2,).

  The halves are an axis of 2, swapped by a flip, with the sign in sin: the same numbers as slicing and
  concatenating, and a gradient without the slices' pads and adds (1.2x faster forward + backward on XLA CPU).
  """
  half = x.shape[-1] // 2
  angles = positions[..., None].astype(jnp.float32) * inv_freq                            # (B, T, Q/2)
  cos = jnp.cos(angles)[:, :, None, None, :]                                              # (B, T, 1, 1, Q/2)
  sin = jnp.sin(angles)[:, :, None, None, :] * jnp.array([-1.0, 1.0])[:, None]            # (B, T, 1, 2, Q/2)
  halves = x.astype(jnp.float32).reshape(*x.shape[:-1], 2, half)                          # (B, T, N, 2, Q/2)
  return (halves * cos + jnp.flip(halves, axis=-2) * sin).reshape(x.shape).astype(x.dtype)


UNROLL_LAYERS = 8  # models with at most this many layers run the layer scan unrolled (forward)
ATTN_CHUNK = 512   # queries per block when a call has more (training on long responses)


@jax.named_scope('attention')
def attention(q, k, v, mask):
  """q: (B, T, H, Q); k, v: (B, S, K, Q); mask: (B, T, S) bool. Grouped heads share their kv head.

  Longer than ATTN_CHUNK queries, the queries go in blocks, each recomputed in the backward pass: the (T, S)
  scores of a head are never all live (1.75 GiB per row per layer at 7B x 4096 tokens), only a block's. Each
  query still sees every key at once, so the result is the plain softmax attention.
  """
  T = q.shape[1]
  if T <= ATTN_CHUNK:
    return _attention(q, k, v, mask)
  C, n = ATTN_CHUNK, -(-T // ATTN_CHUNK)
  pad = lambda a: jnp.pad(a, [(0, 0), (0, n * C - T)] + [(0, 0)] * (a.ndim - 2))   # padded queries: sliced off
  blocks = lambda a: pad(a).reshape(a.shape[0], n, C, *a.shape[2:]).swapaxes(0, 1)   # (n, B, C, ...)
  block_fn = jax.checkpoint(lambda qm: _attention(qm[0], k, v, qm[1]))
  out = jax.lax.map(block_fn, (blocks(q), blocks(mask)))                             # (n, B, C, H, Q)
  return out.swapaxes(0, 1).reshape(q.shape[0], n * C, *q.shape[2:])[:, :T]


def _attention(q, k, v, mask):
  """The G = H / K query heads that share a kv head are stacked along the query axis (i = g * T + t), so QK^T and
  PV are each one matmul per row and kv head, (G*T, Q) x (Q, S), with k and v read as they are: 1.3-1.4x faster
  forward + backward on XLA CPU than the (B, K, G, T, S) einsum, around which XLA transposes."""
  B, T, H, Q = q.shape
  S, K = k.shape[1], k.shape[2]
  G = H // K
  q = q.reshape(B, T, K, G, Q).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, Q)          # (B, K, G*T, Q)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)                                # (B, K, S, Q)
  scores = jnp.einsum('bkiq,bksq->bkis', q, k, preferred_element_type=jnp.float32) / np.sqrt(Q)
  scores = jnp.where(mask[:, None, None], scores.reshape(B, K, G, T, S), -1e30)          # (B, K, G, T, S)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(B, K, G * T, S)
  out = jnp.einsum('bkis,bksq->bkiq', probs, v).reshape(B, K, G, T, Q)
  return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Q)


def dense(x, w, n_in: int = 1):
  """x (B, T, *in) times w (*in, *out) -> (B, T, *out), as one 2-D matmul over the B*T rows. The same product as
  the einsum ('btd,dhq->bthq' for n_in=1, 'bthq,hqd->btd' for n_in=2), but XLA CPU runs the einsum's gradient
  slower: its weight gradient contracts over two axes (b, t), and XLA transposes the activations for it
  (forward + backward of the SwiGLU MLP: 1.3x faster as 2-D matmuls)."""
  rows, n = x.shape[:x.ndim - n_in], math.prod(w.shape[:n_in])
  return (x.reshape(-1, n) @ w.reshape(n, -1)).reshape(*rows, *w.shape[n_in:])


def block(cfg: Config, x, w, positions, k_cache, v_cache, mask, index):
  """One decoder layer. Without a cache (k_cache is None) the T tokens attend among themselves."""
  dt = jnp.dtype(cfg.dtype)
  h = rms_norm(x, w['attn_norm'], cfg.rms_eps)
  q = dense(h, w['q'].astype(dt))                         # (B, T, H, Q)
  k = dense(h, w['k'].astype(dt))                         # (B, T, K, Q)
  v = dense(h, w['v'].astype(dt))                         # (B, T, K, Q)
  if cfg.qkv_bias:
    q, k, v = q + w['q_bias'].astype(dt), k + w['k_bias'].astype(dt), v + w['v_bias'].astype(dt)
  if cfg.qk_norm:   # each head over its Q dims (weights (Q,)), before the rotation
    q, k = rms_norm(q, w['q_norm'], cfg.rms_eps), rms_norm(k, w['k_norm'], cfg.rms_eps)
  inv_freq = rope_frequencies(cfg)
  q, k = rope(q, positions, inv_freq), rope(k, positions, inv_freq)
  if k_cache is not None:
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
    k, v = k_cache, v_cache                               # (B, S, K, Q)
  a = attention(q, k, v, mask)                            # (B, T, H, Q)
  out = dense(a, w['o'].astype(dt), n_in=2)               # (B, T, D)
  x = x + (out + w['o_bias'].astype(dt) if cfg.o_bias else out)
  h = rms_norm(x, w['mlp_norm'], cfg.rms_eps)
  g, u = dense(h, w['gate'].astype(dt)), dense(h, w['up'].astype(dt))   # (B, T, F) each
  x = x + dense(jax.nn.silu(g) * u, w['down'].astype(dt))                 # (B, T, D)
  return x, k_cache, v_cache


def forward(params: dict, cfg: Config, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
            cache: Cache | None = None, hidden_only: bool = False,
            constrain=None) -> tuple[jax.Array, Cache | None]:
  """The one forward pass. Returns (logits (B, T, V) float32, updated cache or None).

  hidden_only=True returns the final-normed hidden states (B, T, D) instead of the logits, for callers that
  apply `unembed` to a few positions or in chunks (train.py: a (B, T, V) float32 array is the largest thing
  a long-response training step would otherwise hold).
  constrain(x, logical axis names) pins the residual stream's sharding (train.py passes its rules: rows over
  the batch axes). Without it, XLA's propagation takes the FSDP-split embedding's layout for the activations
  and all-reduces every activation instead of gathering each weight.

  params['layers'] is the stacked (L, ...) pytree, or a list of L per-layer dicts (the same leaves without the
  L axis), which run unrolled.
  tokens, positions: (B, T) int; valid: (B, T) bool, False for padding (padding never serves as a key).
  Without a cache, token t attends to real tokens t' <= t of the same row (training, scoring).
  With a cache, the T tokens are written at slots cache.index .. cache.index+T-1 and attend to every real slot
  written so far (prefill when T > 1, decode when T = 1).
  """
  dt = jnp.dtype(cfg.dtype)
  pin = constrain or (lambda a, axes: a)
  x = pin(params['embed'].astype(dt)[tokens], ('batch', None, None))   # (B, T, D)
  T = tokens.shape[1]
  if cache is None:
    causal = jnp.tril(jnp.ones((T, T), bool))
    mask = causal[None] & valid[:, None, :]                            # (B, T, T)
    index, new_valid = 0, None
  else:
    S = cache.valid.shape[1]
    index = cache.index
    new_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, index, axis=1)   # (B, S)
    slot = jnp.arange(S)
    causal = slot[None, :] <= (index + jnp.arange(T))[:, None]         # (T, S)
    mask = causal[None] & new_valid[:, None, :]                        # (B, T, S)

  def layer(x, xs):
    w, kc, vc = xs
    x, kc, vc = block(cfg, x, w, positions, kc, vc, mask, index)
    return pin(x, ('batch', None, None)), (kc, vc)

  if cfg.remat:
    layer = jax.checkpoint(layer)
  kv = (cache.k, cache.v) if cache is not None else (None, None)
  # Unrolled for few layers: XLA CPU then keeps each layer's saved activations and gradients in buffers of
  # their own instead of writing them into, and slicing them out of, (L, ...) stacks (1.2x faster forward +
  # backward at 8 layers, bench/train_bench.py). Deep models keep the loop: compile time stays flat.
  if isinstance(params['layers'], list):   # per-layer buffers (sample.sampler_weights): no slices to copy
    kvs = []
    for l, w in enumerate(params['layers']):
      x, kv_l = layer(x, (w, *(a if a is None else a[l] for a in kv)))
      kvs.append(kv_l)
    k_new, v_new = (None, None) if cache is None else (jnp.stack([k for k, _ in kvs]), jnp.stack([v for _, v in kvs]))
  else:
    x, (k_new, v_new) = jax.lax.scan(layer, x, (params['layers'], *kv), unroll=cfg.num_layers <= UNROLL_LAYERS)
  x = rms_norm(x, params['final_norm'], cfg.rms_eps)
  out = x if hidden_only else unembed(params, cfg, x)
  if cache is None:
    return out, None
  return out, Cache(k=k_new, v=v_new, valid=new_valid, index=index + T)


def unembed(params: dict, cfg: Config, x: jax.Array) -> jax.Array:
  """Final-normed hidden states (..., D) -> logits (..., V) float32 (the LM head, tied or not)."""
  head = params['embed'].T if cfg.tie_embeddings else params['lm_head']   # (D, V)
  return jnp.einsum('...d,dv->...v', x, head.astype(jnp.dtype(cfg.dtype)), preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=1)
def logits(params: dict, cfg: Config, tokens: jax.Array) -> jax.Array:
  """The plain full-sequence pass: tokens (B, T) -> logits (B, T, V) float32, no padding."""
  B, T = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(T), (B, T))
  return forward(params, cfg, tokens, positions, jnp.ones((B, T), bool))[0]


def positions_from_valid(valid: jax.Array) -> jax.Array:
  """Positions of a padded batch: each real token's index among the real tokens of its row."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
