"""Hugging Face directories in and out: config.json <-> model.Config, safetensors <-> parameters, tokenizers, the
text boundary (`Text`) and hub ids.

    path = hf.resolve_model('Qwen/Qwen3-4B-Base')        # a local directory as is; a hub id -> the cached snapshot
    cfg, params = hf.load_checkpoint(path, param_dtype='float32')   # float32 master weights of a bf16 checkpoint
    text = hf.Text.load(path, chat_template=True)         # tokenizer + stop ids (generation_config.json, markers)
    ids = text.encode(['What is 2+3?'])                   # -> sample.sample; text.decode(tokens, mask) -> strings
    hf.save_checkpoint('out/hf', cfg, params, tokenizer_dir=path)   # transformers loads it as the same family

Read: config.json of the families model.py implements, dispatched on `architectures` / `model_type`:
Qwen2ForCausalLM (qwen2), Qwen3ForCausalLM (qwen3), LlamaForCausalLM (llama), with the rope settings either as
transformers 4 writes them (rope_theta, rope_scaling) or as transformers 5 does (rope_parameters). Whatever the
math here would not reproduce (another architecture, a rope type other than default or llama3, a sliding window
that binds, an MLP bias, an activation other than silu, quantized weights) is a ValueError naming the key and the
file: a silently different model is never loaded. Weights: model.safetensors or the shards of
model.safetensors.index.json, read with numpy (no torch), F32 / F16 / BF16.
Tensors in the safetensors files that the config does not use (biases it says are absent, more layers, experts)
are an error naming them, except those transformers also drops for these classes (a stale rotary inv_freq buffer,
a tied checkpoint's lm_head.weight equal to the embedding).
Written: config.json of the family (the keys transformers 4 and 5 read), model.safetensors in the compute dtype
cfg.dtype (float32 master weights of a bf16 model are exported as bf16, as Hugging Face checkpoints are), the
tokenizer files and generation_config.json of `tokenizer_dir`.
"""
import dataclasses
import json
import os
import re
import shutil
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import model

# ----------------------------------------------------------------------------------------------------------------
# config.json <-> model.Config

ARCHITECTURES = {'Qwen2ForCausalLM': 'qwen2', 'Qwen3ForCausalLM': 'qwen3', 'LlamaForCausalLM': 'llama'}


def _read_json(file: str) -> dict:
  try:
    with open(file) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{file}: not valid JSON ({e})') from None


def _family(hf: dict, file: str) -> str:
  archs, model_type = hf.get('architectures') or [], hf.get('model_type')
  families = {ARCHITECTURES.get(a) for a in archs}
  if None in families or len(families) > 1 or (model_type and model_type not in ARCHITECTURES.values()):
    raise ValueError(f'{file}: architectures {archs} / model_type {model_type!r} is not supported; this project '
                     f'implements {", ".join(ARCHITECTURES)} (model_type {", ".join(ARCHITECTURES.values())})')
  if families and model_type and families != {model_type}:
    raise ValueError(f'{file}: architectures {archs} do not match model_type {model_type!r}')
  if not families and not model_type:
    raise ValueError(f'{file}: neither architectures nor model_type is set')
  return families.pop() if families else model_type


def _rope(hf: dict, file: str) -> tuple[float, tuple | None]:
  """(rope_theta, Config.rope_scaling), read as transformers 5 reads them: a non-empty rope_scaling (transformers
  4's key) takes precedence over rope_parameters; the theta inside the dict over a top-level rope_theta."""
  key = 'rope_scaling' if hf.get('rope_scaling') else 'rope_parameters'
  rope = hf.get(key) or {}
  if not isinstance(rope, dict) or any(isinstance(v, dict) for v in rope.values()):
    raise ValueError(f'{file}: {key}={rope!r}: only one rope setting for all layers is supported')
  theta = float(rope.get('rope_theta') or hf.get('rope_theta') or 10000.0)
  partial = rope.get('partial_rotary_factor', hf.get('partial_rotary_factor', 1.0))
  if partial not in (None, 1, 1.0):
    raise ValueError(f'{file}: partial_rotary_factor={partial} is not supported (the rotation covers the head)')
  kind = rope.get('rope_type', rope.get('type', 'default'))
  if kind == 'default':
    return theta, None
  if kind != 'llama3':
    raise ValueError(f'{file}: {key}.rope_type={kind!r} is not supported (only "default" and "llama3")')
  rope = dict(rope)
  # As transformers: a top-level original_max_position_embeddings wins, then the dict's, then the model's maximum.
  original = hf.get('original_max_position_embeddings') or rope.get('original_max_position_embeddings') or \
      hf.get('max_position_embeddings')
  rope['original_max_position_embeddings'] = original
  for name in model.LLAMA3_SCALING:
    if rope.get(name) is None:
      raise ValueError(f'{file}: {key} of rope_type "llama3" has no {name}')
  factor, low, high, original = (rope[n] for n in model.LLAMA3_SCALING)
  return theta, (float(factor), float(low), float(high), int(original))


def config_from_hf(path: str) -> model.Config:
  """Reads a Hugging Face `config.json` (a directory or the file itself) into a model.Config."""
  file = os.path.join(path, 'config.json') if os.path.isdir(path) else path
  if not os.path.exists(file):
    raise FileNotFoundError(f'{file}: no config.json (is {path!r} a Hugging Face checkpoint directory?)')
  hf = _read_json(file)
  family = _family(hf, file)
  unsupported = {'hidden_act': hf.get('hidden_act', 'silu') != 'silu', 'mlp_bias': bool(hf.get('mlp_bias')),
                 'quantization_config': bool(hf.get('quantization_config'))}
  for name, bad in unsupported.items():
    if bad:
      raise ValueError(f'{file}: {name}={hf[name]!r} is not supported (SwiGLU with silu, no MLP bias, '
                       'unquantized weights)')
  if family in ('qwen2', 'qwen3'):
    # As transformers' Qwen2Config / Qwen3Config: the window exists only with use_sliding_window, and applies to the
    # layers layer_types marks (by default those from max_window_layers on).
    window = hf.get('sliding_window') if hf.get('use_sliding_window') else None
    layers = hf.get('layer_types') or ['sliding_attention' if window is not None and i >= hf.get('max_window_layers',
                                       28) else 'full_attention' for i in range(hf.get('num_hidden_layers', 0))]
    if any(t != 'full_attention' for t in layers):
      raise ValueError(f'{file}: sliding-window attention (use_sliding_window={hf.get("use_sliding_window")}, '
                       f'sliding_window={hf.get("sliding_window")}, layer_types {sorted(set(layers))}) is not '
                       'supported: every layer attends to the whole sequence here')
  theta, scaling = _rope(hf, file)
  bias = True if family == 'qwen2' else bool(hf.get('attention_bias', False))
  try:
    heads = hf['num_attention_heads']
    dtype = 'bfloat16' if (hf.get('dtype') or hf.get('torch_dtype')) == 'bfloat16' else 'float32'
    return model.Config(
        vocab_size=hf['vocab_size'], d_model=hf['hidden_size'], num_layers=hf['num_hidden_layers'],
        num_heads=heads, num_kv_heads=hf.get('num_key_value_heads') or heads,
        head_dim=hf.get('head_dim') or hf['hidden_size'] // heads, mlp_dim=hf['intermediate_size'],
        rms_eps=hf.get('rms_norm_eps', 1e-6), rope_theta=theta, rope_scaling=scaling, family=family,
        qkv_bias=bias, o_bias=bias and family != 'qwen2', qk_norm=family == 'qwen3',
        tie_embeddings=bool(hf.get('tie_word_embeddings', False)), param_dtype=dtype, dtype=dtype)
  except KeyError as e:
    raise ValueError(f'{file}: missing field {e}') from None


def config_to_hf(cfg: model.Config) -> dict:
  """The config.json of cfg's family. Rope settings both ways: rope_theta / rope_scaling (transformers 4, vLLM) and
  rope_parameters (transformers 5), the same numbers. torch_dtype / dtype is the compute dtype cfg.dtype, which
  save_checkpoint stores the weights in and config_from_hf reads back as the compute dtype."""
  arch = {v: k for k, v in ARCHITECTURES.items()}[cfg.family]
  scaling = None if cfg.rope_scaling is None else dict(zip(model.LLAMA3_SCALING, cfg.rope_scaling), rope_type='llama3')
  out = {
      'architectures': [arch], 'model_type': cfg.family, 'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model,
      'num_hidden_layers': cfg.num_layers, 'num_attention_heads': cfg.num_heads,
      'num_key_value_heads': cfg.num_kv_heads, 'head_dim': cfg.head_dim, 'intermediate_size': cfg.mlp_dim,
      'rms_norm_eps': cfg.rms_eps, 'hidden_act': 'silu', 'tie_word_embeddings': cfg.tie_embeddings,
      # Informational (the math has no maximum); above the llama3 original length as transformers expects, 16 x
      # it as Llama 3.1 has (131072).
      'max_position_embeddings': max(32768, 16 * (cfg.rope_scaling or (0, 0, 0, 0))[3]),
      'rope_theta': cfg.rope_theta, 'rope_scaling': scaling,
      'rope_parameters': {**(scaling or {'rope_type': 'default'}), 'rope_theta': cfg.rope_theta},
      'torch_dtype': cfg.dtype, 'dtype': cfg.dtype, 'attention_dropout': 0.0}
  if cfg.family in ('qwen2', 'qwen3'):
    out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
  if cfg.family in ('qwen3', 'llama'):
    out['attention_bias'] = cfg.qkv_bias
  if cfg.family == 'llama':
    out['mlp_bias'] = False
  return out


# ----------------------------------------------------------------------------------------------------------------
# safetensors, read and written with numpy

_ST_DTYPES = {'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16, 'F64': np.float64}


def read_safetensors(file: str) -> dict[str, np.ndarray]:
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


def write_safetensors(file: str, tensors: dict[str, np.ndarray]):
  """Writes tensors as a .safetensors file, under a temporary name renamed at the end (no half file is left)."""
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


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def _hf_names(cfg: model.Config):
  """(our path, HF name pattern, to_hf(array of ours) -> HF array, from_hf(HF array) -> ours) per layer leaf."""
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
  if cfg.o_bias:
    spec.append(('o_bias', pre + 'self_attn.o_proj.bias', None, None))
  if cfg.qk_norm:
    spec += [('q_norm', pre + 'self_attn.q_norm.weight', None, None),
             ('k_norm', pre + 'self_attn.k_norm.weight', None, None)]
  return spec


# Tensors transformers drops on load for these classes: the rotary inverse frequencies that checkpoints saved before
# transformers 4.31 hold in every layer (PreTrainedModel._adjust_missing_and_unexpected_keys ignores them; the
# frequencies are recomputed from the config).
IGNORED_TENSORS = re.compile(r'rotary_emb\.inv_freq$')


def _check_unused(cfg: model.Config, tensors: dict, where: dict):
  """Refuses a checkpoint with tensors cfg has no place for: loading without them would be a different model from
  the one the checkpoint holds (its biases, extra layers, experts), and nothing else would notice."""
  used = {'model.embed_tokens.weight', 'model.norm.weight'} | {
      pattern.format(i=i) for _, pattern, _, _ in _hf_names(cfg) for i in range(cfg.num_layers)}
  if not cfg.tie_embeddings:
    used.add('lm_head.weight')
  elif 'lm_head.weight' in tensors and 'model.embed_tokens.weight' in tensors:
    # Some tied checkpoints also store the head. transformers keeps it tied when it equals the embedding; when it
    # differs it unties the two, i.e. the checkpoint is really an untied model.
    used.add('lm_head.weight')
    if not np.array_equal(tensors['lm_head.weight'], tensors['model.embed_tokens.weight']):
      raise ValueError(f'{where["lm_head.weight"]}: config.json says tie_word_embeddings=true, but lm_head.weight '
                       'differs from model.embed_tokens.weight (transformers would use it as a separate head); '
                       'set tie_word_embeddings to false in config.json to load it as an untied model')
  unused = sorted((n for n in tensors if n not in used and not IGNORED_TENSORS.search(n)),
                  key=lambda n: [(0, int(p), '') if p.isdigit() else (1, 0, p) for p in n.split('.')])
  if unused:
    more = f' and {len(unused) - 5} more' if len(unused) > 5 else ''
    raise ValueError(f'{where[unused[0]]}: {len(unused)} tensor(s) that config.json has no place for: '
                     f'{", ".join(unused[:5])}{more}. The checkpoint holds a different model than its config.json '
                     f'describes ({cfg.family}, {cfg.num_layers} layers, {"with" if cfg.qkv_bias else "no"} '
                     f'attention biases, {"tied" if cfg.tie_embeddings else "untied"} embeddings); loading '
                     'without them would be silently wrong')


def load_checkpoint(path: str, param_dtype: str | None = None, dtype: str | None = None) -> tuple[model.Config, dict]:
  """Reads config.json and model.safetensors (or the shards listed in model.safetensors.index.json) -> (cfg, the
  parameter pytree as numpy arrays). param_dtype / dtype override the checkpoint's (e.g. float32 master weights of
  a bfloat16 checkpoint)."""
  cfg = config_from_hf(path)
  cfg = dataclasses.replace(cfg, param_dtype=param_dtype or cfg.param_dtype, dtype=dtype or cfg.dtype)
  index = os.path.join(path, 'model.safetensors.index.json')
  if os.path.exists(index):
    try:
      files = sorted(set(_read_json(index)['weight_map'].values()))
    except (KeyError, AttributeError) as e:
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
    for k, v in read_safetensors(file).items():
      tensors[k], where[k] = v, file
  _check_unused(cfg, tensors, where)
  np_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
  shapes = model.param_shapes(cfg)

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
  # Host (numpy) arrays: the caller places them (jax.device_put with the sharding rules), so each device receives
  # only its share instead of the whole model landing on device 0 first (28 GB for 7B in float32).
  return cfg, params


def save_checkpoint(path: str, cfg: model.Config, params: dict, tokenizer_dir: str | None = None):
  """Writes config.json + model.safetensors that transformers' from_pretrained loads as the same family; with
  tokenizer_dir, also its tokenizer and generation_config.json (the stop ids). Files are written under temporary
  names and renamed, so an interrupted save leaves no half file behind.

  The weights are stored in the compute dtype cfg.dtype, which config.json records as torch_dtype, as Hugging Face
  checkpoints are: a bf16 model trained with float32 master weights exports bf16 (half the size), and a run that
  starts from the export (load_policy) computes in bf16 again instead of silently in float32. The rounding drops
  what the master weights hold below bf16's resolution: the matmuls never saw it (they cast the weights to bf16),
  but the norm weights, applied in float32, lose it (at a learning rate of 1e-6 their updates rarely add up to
  bf16's spacing near 1, 2^-8 to 2^-7). To continue training exactly, resume from the run's checkpoints. A float32
  model exports float32, unchanged."""
  os.makedirs(path, exist_ok=True)
  np_dtype = np.dtype(jnp.dtype(cfg.dtype))
  params = jax.tree.map(lambda a: np.asarray(jax.device_get(a)).astype(np_dtype, copy=False), params)
  tensors = {'model.embed_tokens.weight': params['embed'], 'model.norm.weight': params['final_norm']}
  if not cfg.tie_embeddings:
    tensors['lm_head.weight'] = params['lm_head'].T
  for ours, pattern, to_hf, _ in _hf_names(cfg):
    for i in range(cfg.num_layers):
      a = params['layers'][ours][i]
      tensors[pattern.format(i=i)] = to_hf(a) if to_hf else a
  write_safetensors(os.path.join(path, 'model.safetensors'), tensors)
  with open(os.path.join(path, 'config.json.tmp'), 'w') as f:
    json.dump(config_to_hf(cfg), f, indent=2)
  os.replace(os.path.join(path, 'config.json.tmp'), os.path.join(path, 'config.json'))
  if tokenizer_dir and os.path.abspath(tokenizer_dir) != os.path.abspath(path):
    load_tokenizer(tokenizer_dir).save_pretrained(path)
    generation = os.path.join(tokenizer_dir, 'generation_config.json')
    if os.path.exists(generation):
      shutil.copyfile(generation, os.path.join(path, 'generation_config.json.tmp'))
      os.replace(os.path.join(path, 'generation_config.json.tmp'), os.path.join(path, 'generation_config.json'))


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers and the text boundary: transformers' AutoTokenizer on a local directory; the embedded policy's is
# character-level.

CHAR_VOCAB = ['<pad>', '<eos>', '<unk>'] + [chr(c) for c in range(32, 127)] + ['\n']
CHAT_END_MARKERS = ('<|im_end|>', '<|endoftext|>', '<|eot_id|>', '<|end_of_text|>')   # Qwen, Llama 3


def load_policy(spec: str, chat_template: bool = False):
  """(cfg, float32 params, Text, directory) of a Hugging Face directory or hub id, as training starts from it.

  Float32 master weights whatever the checkpoint stores: an AdamW step at the paper's 1e-6 is far below bfloat16's
  rounding of a typical weight (bf16(0.02) + 1e-6 == bf16(0.02)), so a bf16 policy would not move. The matmuls
  still run in the checkpoint's dtype (cfg.dtype)."""
  path = resolve_model(spec)
  cfg, params = load_checkpoint(path, param_dtype='float32')
  return cfg, params, Text.load(path, chat_template=chat_template), path


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


def stop_ids(tokenizer, model_dir: str | None = None) -> list[int]:
  """The token ids that end a completion: the eos_token_id(s) of <model_dir>/generation_config.json (Llama 3
  Instruct lists three), the tokenizer's EOS, and the chat end markers its vocabulary has."""
  ids = [tokenizer.eos_token_id]
  file = os.path.join(model_dir, 'generation_config.json') if model_dir else None
  if file and os.path.exists(file):
    eos = _read_json(file).get('eos_token_id')
    ids += eos if isinstance(eos, list) else [eos]
  vocab = tokenizer.get_vocab()
  ids += [vocab.get(t) for t in CHAT_END_MARKERS]
  return sorted({int(i) for i in ids if i is not None})


class Text:
  """The one text boundary of training, eval and generate: prompts to token ids, sampled ids back to text."""

  def __init__(self, tokenizer, stop_ids: list[int], chat_template: bool = False):
    self.tokenizer = tokenizer
    self.stop_ids = sorted(int(i) for i in stop_ids)
    self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.chat_template = chat_template

  @classmethod
  def load(cls, path: str, chat_template: bool = False) -> 'Text':
    tokenizer = load_tokenizer(path)
    return cls(tokenizer, stop_ids(tokenizer, path), chat_template)

  def encode(self, prompts: list[str]) -> list[list[int]]:
    """Token ids per prompt. With chat_template (and a tokenizer that has one) each prompt is a user turn followed
    by the assistant's generation prompt; the rendered template holds its own special tokens, so none are added.
    Without, the tokenizer's own (a BOS for Llama and DeepSeek tokenizers; none for Qwen's) are added, as the
    models saw in pretraining."""
    templated = self.chat_template and bool(getattr(self.tokenizer, 'chat_template', None))
    if templated:
      prompts = [self.tokenizer.apply_chat_template([{'role': 'user', 'content': p}], add_generation_prompt=True,
                                                    tokenize=False) for p in prompts]
    return [self.tokenizer(p, add_special_tokens=not templated)['input_ids'] for p in prompts]

  def decode(self, tokens, mask) -> list[str]:
    """(B, N) ids and (B, N) real-token mask -> B texts of the real tokens, stop ids and special tokens dropped."""
    tokens, mask, stop = np.asarray(tokens), np.asarray(mask), set(self.stop_ids)
    return [self.tokenizer.decode([int(t) for t, m in zip(row, keep) if m and int(t) not in stop],
                                  skip_special_tokens=True) for row, keep in zip(tokens, mask)]


# ----------------------------------------------------------------------------------------------------------------
# Hub ids: fetched into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE); offline, only the cache is read.

HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*')
MODEL_FILES = ['config.json', 'generation_config.json', '*.safetensors', 'model.safetensors.index.json',
               'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt',
               'tokenizer.model', 'added_tokens.json', 'chat_template.jinja']
# huggingface_hub matches these patterns with fnmatch, whose '*' also matches '/': '*.safetensors' alone would also
# fetch weights kept in subfolders (other formats, originals). Only the repository's top level is read here.
MODEL_IGNORE = ['*/*']
GATED = ('A gated repository also needs its license accepted on its hub page and a login: `hf auth login`, or the '
         'HF_TOKEN environment variable')


def _offline() -> bool:
  # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it again so a later setting is honoured. The
  # submodule is imported by name: huggingface_hub loads its attributes lazily, so `huggingface_hub.constants` exists
  # only once something has imported it.
  from huggingface_hub import constants
  flag = os.environ.get('HF_HUB_OFFLINE') or os.environ.get('TRANSFORMERS_OFFLINE') or ''
  return constants.HF_HUB_OFFLINE or flag.strip().upper() in ('1', 'ON', 'YES', 'TRUE')


def resolve_model(spec: str) -> str:
  """A model directory for spec: an existing directory as is; a hub id ORG/NAME fetched (config, weights,
  tokenizer) into the Hugging Face cache, with a progress bar, and the snapshot directory returned."""
  if os.path.isdir(spec):
    return spec
  if not HUB_ID.fullmatch(spec):
    raise ValueError(f'model {spec!r} is neither a directory nor a Hugging Face hub id ORG/NAME')
  import huggingface_hub
  try:
    return huggingface_hub.snapshot_download(spec, allow_patterns=MODEL_FILES, ignore_patterns=MODEL_IGNORE,
                                             local_files_only=_offline())
  except Exception as e:   # offline, unknown or gated id, no network: all the same advice
    raise ValueError(f'model {spec!r} is not a local directory, and as a Hugging Face hub id it could not be '
                     f'fetched ({type(e).__name__}: {e}). On a machine with internet run `hf download '
                     f'{spec} --local-dir DIR`, copy DIR here and pass --model=DIR. {GATED} '
                     "(Meta's Llama models are gated)") from None


def resolve_data(spec: str) -> str:
  """A data spec: 'hf:ORG/NAME/path/in/repo.jsonl' -> the local file of that dataset repository (fetched into the
  Hugging Face cache); any other spec is returned unchanged."""
  if not spec.startswith('hf:'):
    return spec
  parts = spec[3:].split('/', 2)
  if len(parts) < 3 or not HUB_ID.fullmatch('/'.join(parts[:2])) or not parts[2]:
    raise ValueError(f'data {spec!r}: write a Hugging Face dataset file as hf:ORG/NAME/path/in/repo.jsonl')
  import huggingface_hub
  repo, filename = '/'.join(parts[:2]), parts[2]
  try:
    return huggingface_hub.hf_hub_download(repo, filename, repo_type='dataset', local_files_only=_offline())
  except Exception as e:
    raise ValueError(f'data {spec!r}: file {filename!r} of dataset {repo!r} could not be fetched '
                     f'({type(e).__name__}: {e}). On a machine with internet run `hf download {repo} '
                     f'{filename} --repo-type dataset --local-dir DIR`, copy it here and pass the local file. '
                     f'{GATED}') from None
