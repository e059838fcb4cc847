"""A Qwen2-family decoder (Qwen2, Qwen2.5, Qwen2.5-Math) as a pytree of parameters plus pure functions.

    cfg, params = load_hf_checkpoint('path/to/Qwen2.5-Math-1.5B')   # a local Hugging Face directory
    logits = logits(params, cfg, tokens)                             # (B, T, V) float32
    save_hf_checkpoint('out/', cfg, params)                          # loads in transformers again

Architecture (same numbers as transformers' Qwen2ForCausalLM): token embedding; L blocks of
RMSNorm -> grouped-query attention with rotary positions (rotate-half form) and q/k/v bias -> residual,
RMSNorm -> SwiGLU MLP -> residual; final RMSNorm; LM head (tied to the embedding or not).

The layers are stacked on a leading axis and run with `lax.scan`, so compile time does not grow with depth.
One `forward` serves training (full sequence) and sampling (prefill into a KV cache, then decode): every row
carries its own positions and a mask of real tokens, so left- or right-padded rows give the logits they would
give alone. Checkpoints are read and written as safetensors with numpy (no torch).

Dimension letters used in einsum strings and comments:
  B batch, T time (this call's tokens), S cache length, D model, H query heads, K kv heads, Q head dim,
  F mlp, V vocab, L layers, G samples per prompt.
"""
import dataclasses
import functools
import json
import os
import struct
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int          # V
  d_model: int             # D, hidden size
  num_layers: int          # L
  num_heads: int           # H, query heads
  num_kv_heads: int        # K, key/value heads (grouped-query attention: H % K == 0)
  head_dim: int            # Q
  mlp_dim: int             # F, SwiGLU inner size
  rms_eps: float = 1e-6
  rope_theta: float = 10000.0
  qkv_bias: bool = True    # Qwen2 has biases on q, k, v (not on o)
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

  @staticmethod
  def from_hf(path: str) -> 'Config':
    """Reads a Hugging Face `config.json` (a directory or the file itself)."""
    file = os.path.join(path, 'config.json') if os.path.isdir(path) else path
    if not os.path.exists(file):
      raise FileNotFoundError(f'{file}: no config.json (is {path!r} a Hugging Face checkpoint directory?)')
    try:
      with open(file) as f:
        hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{file}: not valid JSON ({e})') from None
    archs = hf.get('architectures') or [hf.get('model_type', '?')]
    if hf.get('model_type') != 'qwen2' and 'Qwen2ForCausalLM' not in archs:
      raise ValueError(f'{file}: architecture {archs} (model_type {hf.get("model_type")!r}) is not supported; '
                       'this project implements the Qwen2 family (model_type "qwen2")')
    try:
      heads = hf['num_attention_heads']
      dtype = 'bfloat16' if (hf.get('dtype') or hf.get('torch_dtype')) == 'bfloat16' else 'float32'
      return Config(
          vocab_size=hf['vocab_size'], d_model=hf['hidden_size'], num_layers=hf['num_hidden_layers'],
          num_heads=heads, num_kv_heads=hf.get('num_key_value_heads', heads),
          head_dim=hf.get('head_dim') or hf['hidden_size'] // heads, mlp_dim=hf['intermediate_size'],
          rms_eps=hf.get('rms_norm_eps', 1e-6),
          rope_theta=float(hf.get('rope_theta') or (hf.get('rope_parameters') or {}).get('rope_theta', 1e4)),
          qkv_bias=True, tie_embeddings=bool(hf.get('tie_word_embeddings', False)), param_dtype=dtype, dtype=dtype)
    except KeyError as e:
      raise ValueError(f'{file}: missing field {e}') from None

  def to_hf(self) -> dict:
    return {
        'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', 'vocab_size': self.vocab_size,
        'hidden_size': self.d_model, 'num_hidden_layers': self.num_layers, 'num_attention_heads': self.num_heads,
        'num_key_value_heads': self.num_kv_heads, 'head_dim': self.head_dim, 'intermediate_size': self.mlp_dim,
        'rms_norm_eps': self.rms_eps, 'rope_theta': self.rope_theta, 'tie_word_embeddings': self.tie_embeddings,
        'hidden_act': 'silu', 'max_position_embeddings': 32768, 'torch_dtype': self.param_dtype, 'dtype': self.param_dtype,
        'use_sliding_window': False, 'attention_dropout': 0.0}


PRESETS = {
    # The embedded default: a small policy trained from scratch on a character-level vocabulary.
    'tiny': Config(vocab_size=128, d_model=128, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32,
                   mlp_dim=384, tie_embeddings=True),
    # The shapes of the paper's math models (weights come from a local directory).
    'qwen2.5-math-1.5b': Config(vocab_size=151936, d_model=1536, num_layers=28, num_heads=12, num_kv_heads=2,
                                head_dim=128, mlp_dim=8960, rope_theta=10000.0, tie_embeddings=True,
                                param_dtype='bfloat16', dtype='bfloat16'),
    'qwen2.5-math-7b': Config(vocab_size=152064, d_model=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                              head_dim=128, mlp_dim=18944, rope_theta=10000.0, tie_embeddings=False,
                              param_dtype='bfloat16', dtype='bfloat16'),
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
  """Random init: normal(0, 0.02) for matrices (as transformers' Qwen2 does), ones for norms, zeros for biases."""
  shapes = param_shapes(cfg)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]]
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


def rms_norm(x, w, eps):
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * w.astype(jnp.float32)).astype(x.dtype)


def rope(x, positions, theta):
  """Rotary embedding, rotate-half form (transformers' Qwen2). x: (B, T, N, Q), positions: (B, T)."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(0, half, dtype=jnp.float32) * 2 / x.shape[-1]))  # (Q/2,)
  angles = positions[..., None].astype(jnp.float32) * inv_freq                            # (B, T, Q/2)
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


ATTN_CHUNK = 512   # queries per block when a call has more (training on long responses)


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
  B, T, H, Q = q.shape
  K = k.shape[2]
  q = q.reshape(B, T, K, H // K, Q)
  scores = jnp.einsum('btkgq,bskq->bkgts', q, k, preferred_element_type=jnp.float32) / np.sqrt(Q)
  scores = jnp.where(mask[:, None, None], scores, -1e30)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum('bkgts,bskq->btkgq', probs, v)
  return out.reshape(B, T, H, Q)


def block(cfg: Config, x, w, positions, k_cache, v_cache, mask, index):
  """One decoder layer. Without a cache (k_cache is None) the T tokens attend among themselves."""
  dt = jnp.dtype(cfg.dtype)
  h = rms_norm(x, w['attn_norm'], cfg.rms_eps)
  q = jnp.einsum('btd,dhq->bthq', h, w['q'].astype(dt))   # (B, T, H, Q)
  k = jnp.einsum('btd,dkq->btkq', h, w['k'].astype(dt))   # (B, T, K, Q)
  v = jnp.einsum('btd,dkq->btkq', h, w['v'].astype(dt))   # (B, T, K, Q)
  if cfg.qkv_bias:
    q, k, v = q + w['q_bias'].astype(dt), k + w['k_bias'].astype(dt), v + w['v_bias'].astype(dt)
  q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
  if k_cache is not None:
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
    k, v = k_cache, v_cache                               # (B, S, K, Q)
  a = attention(q, k, v, mask)                            # (B, T, H, Q)
  x = x + jnp.einsum('bthq,hqd->btd', a, w['o'].astype(dt))
  h = rms_norm(x, w['mlp_norm'], cfg.rms_eps)
  g = jnp.einsum('btd,df->btf', h, w['gate'].astype(dt))
  u = jnp.einsum('btd,df->btf', h, w['up'].astype(dt))
  x = x + jnp.einsum('btf,fd->btd', jax.nn.silu(g) * u, w['down'].astype(dt))
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
  x, (k_new, v_new) = jax.lax.scan(layer, x, (params['layers'], *kv))
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


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints: safetensors read and written with numpy.

_ST_DTYPES = {'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16, 'F64': np.float64}


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file (8-byte header size, JSON header, raw little-endian data)."""
  try:
    with open(file, 'rb') as f:
      (n,) = struct.unpack('<Q', f.read(8))
      header = json.loads(f.read(n))
      data = f.read()
  except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{file}: not a readable safetensors file ({e})') from None
  out = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in _ST_DTYPES:
      raise ValueError(f'{file}: tensor {name} has unsupported dtype {info["dtype"]}')
    start, end = info['data_offsets']
    arr = np.frombuffer(data[start:end], dtype=_ST_DTYPES[info['dtype']])
    if arr.size != int(np.prod(info['shape'])):
      raise ValueError(f'{file}: tensor {name} is truncated ({arr.size} values for shape {info["shape"]})')
    out[name] = arr.reshape(info['shape'])
  return out


def _write_safetensors(file: str, tensors: dict[str, np.ndarray]):
  names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
  header, offset = {'__metadata__': {'format': 'pt'}}, 0
  for name, arr in tensors.items():
    header[name] = {'dtype': names[arr.dtype], 'shape': list(arr.shape), 'data_offsets': [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  blob = json.dumps(header).encode()
  blob += b' ' * (-len(blob) % 8)
  tmp = file + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(struct.pack('<Q', len(blob)) + blob)
    for arr in tensors.values():
      f.write(np.ascontiguousarray(arr).tobytes())
  os.replace(tmp, file)


def _hf_names(cfg: Config):
  """(our path, HF name pattern, to_hf(array of ours) -> HF array, from_hf(HF array) -> ours) per leaf."""
  D, H, K, Q = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  pre = 'model.layers.{i}.'
  t = lambda a: a.T
  spec = [
      ('attn_norm', pre + 'input_layernorm.weight', None, None),
      ('mlp_norm', pre + 'post_attention_layernorm.weight', None, None),
      ('q', pre + 'self_attn.q_proj.weight', lambda a: a.reshape(D, H * Q).T, lambda a: a.T.reshape(D, H, Q)),
      ('k', pre + 'self_attn.k_proj.weight', lambda a: a.reshape(D, K * Q).T, lambda a: a.T.reshape(D, K, Q)),
      ('v', pre + 'self_attn.v_proj.weight', lambda a: a.reshape(D, K * Q).T, lambda a: a.T.reshape(D, K, Q)),
      ('o', pre + 'self_attn.o_proj.weight', lambda a: a.reshape(H * Q, D).T, lambda a: a.T.reshape(H, Q, D)),
      ('gate', pre + 'mlp.gate_proj.weight', t, t),
      ('up', pre + 'mlp.up_proj.weight', t, t),
      ('down', pre + 'mlp.down_proj.weight', t, t),
  ]
  if cfg.qkv_bias:
    spec += [('q_bias', pre + 'self_attn.q_proj.bias', lambda a: a.reshape(-1), lambda a: a.reshape(H, Q)),
             ('k_bias', pre + 'self_attn.k_proj.bias', lambda a: a.reshape(-1), lambda a: a.reshape(K, Q)),
             ('v_bias', pre + 'self_attn.v_proj.bias', lambda a: a.reshape(-1), lambda a: a.reshape(K, Q))]
  return spec


def load_hf_checkpoint(path: str, param_dtype: str | None = None, dtype: str | None = None) -> tuple[Config, dict]:
  """Reads config.json and model.safetensors (or shards listed in model.safetensors.index.json)."""
  cfg = Config.from_hf(path)
  cfg = dataclasses.replace(cfg, param_dtype=param_dtype or cfg.param_dtype, dtype=dtype or cfg.dtype)
  index = os.path.join(path, 'model.safetensors.index.json')
  if os.path.exists(index):
    try:
      with open(index) as f:
        files = sorted(set(json.load(f)['weight_map'].values()))
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
      raise ValueError(f'{index}: not a valid safetensors index ({e})') from None
  elif os.path.exists(os.path.join(path, 'model.safetensors')):
    files = ['model.safetensors']
  else:
    raise FileNotFoundError(f'{path}: no model.safetensors or model.safetensors.index.json '
                            '(only safetensors checkpoints are read)')
  tensors, where = {}, {}
  for name in files:
    file = os.path.join(path, name)
    if not os.path.exists(file):
      raise FileNotFoundError(f'{file}: listed in {index} but missing')
    for k, v in _read_safetensors(file).items():
      tensors[k], where[k] = v, file
  np_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
  shapes = param_shapes(cfg)

  def take(name, expect_hf_shape):
    if name not in tensors:
      raise ValueError(f'{path}: tensor {name} is missing from {", ".join(files)}')
    a = tensors[name]
    if tuple(a.shape) != tuple(expect_hf_shape):
      raise ValueError(f'{where[name]}: tensor {name} has shape {tuple(a.shape)}, config.json implies '
                       f'{tuple(expect_hf_shape)}')
    return a

  params = {'embed': take('model.embed_tokens.weight', shapes['embed']).astype(np_dtype),
            'final_norm': take('model.norm.weight', shapes['final_norm']).astype(np_dtype), 'layers': {}}
  if not cfg.tie_embeddings:
    params['lm_head'] = take('lm_head.weight', shapes['lm_head'][::-1]).T.astype(np_dtype)
  for ours, pattern, to_hf, from_hf in _hf_names(cfg):
    ours_shape = shapes['layers'][ours][1:]
    hf_shape = to_hf(np.empty(ours_shape, np.int8)).shape if to_hf else ours_shape
    per_layer = [take(pattern.format(i=i), hf_shape) for i in range(cfg.num_layers)]
    per_layer = [from_hf(a) if from_hf else a for a in per_layer]
    params['layers'][ours] = np.stack(per_layer).astype(np_dtype)
  return cfg, jax.tree.map(jnp.asarray, params)


def save_hf_checkpoint(path: str, cfg: Config, params: dict, tokenizer_dir: str | None = None):
  """Writes config.json + model.safetensors (in cfg.param_dtype) that transformers' from_pretrained loads.
  Files are written under temporary names and renamed, so an interrupted save leaves no half file behind."""
  os.makedirs(path, exist_ok=True)
  params = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), params)
  tensors = {'model.embed_tokens.weight': params['embed'], 'model.norm.weight': params['final_norm']}
  if not cfg.tie_embeddings:
    tensors['lm_head.weight'] = params['lm_head'].T
  for ours, pattern, to_hf, _ in _hf_names(cfg):
    for i in range(cfg.num_layers):
      a = params['layers'][ours][i]
      tensors[pattern.format(i=i)] = to_hf(a) if to_hf else a
  _write_safetensors(os.path.join(path, 'model.safetensors'), tensors)
  with open(os.path.join(path, 'config.json.tmp'), 'w') as f:
    json.dump(cfg.to_hf(), f, indent=2)
  os.replace(os.path.join(path, 'config.json.tmp'), os.path.join(path, 'config.json'))
  if tokenizer_dir and os.path.abspath(tokenizer_dir) != os.path.abspath(path):
    load_tokenizer(tokenizer_dir).save_pretrained(path)


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers: transformers' AutoTokenizer on the same local directory; the embedded policy's is character-level.

CHAR_VOCAB = ['<pad>', '<eos>', '<unk>'] + [chr(c) for c in range(32, 127)] + ['\n']


def build_char_tokenizer(path: str):
  """A character-level tokenizer (printable ASCII + newline), saved in the Hugging Face layout."""
  from tokenizers import Tokenizer, models, pre_tokenizers, decoders
  from transformers import PreTrainedTokenizerFast
  vocab = {c: i for i, c in enumerate(CHAR_VOCAB)}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token='<unk>'))
  tok.pre_tokenizer = pre_tokenizers.Split(pattern='', behavior='isolated')
  tok.decoder = decoders.Fuse()
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='<eos>', unk_token='<unk>')
  fast.save_pretrained(path)
  return fast


def load_tokenizer(path: str):
  """transformers' tokenizer for a local directory. The character tokenizer (a WordLevel tokenizer.json) is loaded
  as a plain fast tokenizer: next to a qwen2 config.json, AutoTokenizer would wrap it in Qwen2Tokenizer, whose
  pre-tokenizer drops the spaces."""
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  file = os.path.join(path, 'tokenizer.json')
  try:
    if os.path.exists(file):
      with open(file) as f:
        if json.load(f).get('model', {}).get('type') == 'WordLevel':
          return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: no usable tokenizer files ({e})') from None
