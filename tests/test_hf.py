"""hf.py against the reference: transformers' own Qwen2 / Qwen3 / Llama classes on random weights they write
(save_pretrained), read with hf.load_checkpoint; our exports read back by transformers; the public config.json of
the paper's models read to model.PRESETS; every unsupported setting and unused tensor refused by name; Llama 3.1's
and Qwen3's published chat templates on byte-level tokenizers with their special tokens. No network: hub lookups
run with HF_HUB_OFFLINE=1 on an empty cache, or against a mocked huggingface_hub."""
import dataclasses
import json
import os

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hf
import model
import sample

forward = jax.jit(model.forward, static_argnums=1)
CLASSES = {'qwen2': (transformers.Qwen2ForCausalLM, transformers.Qwen2Config),
           'qwen3': (transformers.Qwen3ForCausalLM, transformers.Qwen3Config),
           'llama': (transformers.LlamaForCausalLM, transformers.LlamaConfig)}
LLAMA3 = dict(rope_type='llama3', rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=8)   # sequences here are up to 21 long: the scaling bites
# Small configs that differ in family, GQA ratio, head dim (also != hidden / heads), tied / untied embeddings,
# biases and RoPE.
CASES = {
    'qwen2_gqa2_tied': ('qwen2', dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      tie_word_embeddings=True, rope_theta=10000.0)),
    'qwen2_mha_untied': ('qwen2', dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=3, head_dim=16,
                                       tie_word_embeddings=False, rope_theta=1e6)),
    'qwen2_gqa4_wide_head': ('qwen2', dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                                           head_dim=32, tie_word_embeddings=False, rope_theta=500.0)),
    'qwen2_mqa': ('qwen2', dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                tie_word_embeddings=True, rope_theta=10000.0)),
    'qwen3_tied': ('qwen3', dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 tie_word_embeddings=True, rope_theta=1e6)),
    'qwen3_untied_bias': ('qwen3', dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                        tie_word_embeddings=False, attention_bias=True)),
    'llama3_scaled': ('llama', dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                    tie_word_embeddings=False, rope_parameters=LLAMA3)),
    'llama_deepseek': ('llama', dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                                     tie_word_embeddings=False, rope_theta=10000.0)),
    'llama_tied_bias': ('llama', dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=True, attention_bias=True)),
}
MEASURED = {}   # case -> max |logit diff| against transformers, printed at the end of the module (pytest -s)


def make_hf(tmp_path, name, seed=0, **save_kw):
  family, kw = CASES[name]
  cls, config = CLASSES[family]
  kw = dict(vocab_size=97, intermediate_size=80, num_hidden_layers=2, rms_norm_eps=1e-6,
            max_position_embeddings=256, **kw)
  torch.manual_seed(seed)
  ref = cls(config(**kw)).eval()
  with torch.no_grad():   # weights of std 0.1 (peaked logits, clear argmaxes), norms 1 + noise, random biases
    for n, p in ref.named_parameters():
      p.copy_(('norm' in n) + 0.1 * torch.randn_like(p))
  path = str(tmp_path / name)
  ref.save_pretrained(path, **save_kw)
  return ref, path


def left_padded(lengths, T, seed=0):
  rng = np.random.RandomState(seed)
  tokens, valid = np.zeros((len(lengths), T), np.int64), np.zeros((len(lengths), T), bool)
  for i, n in enumerate(lengths):
    tokens[i, T - n:], valid[i, T - n:] = rng.randint(3, 97, size=n), True
  return tokens, valid


def hf_logits(ref, tokens, valid):
  positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
  with torch.no_grad():
    return ref(torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64)),
               position_ids=torch.tensor(positions)).logits.float().numpy()


def our_logits(params, cfg, tokens, valid):
  valid = jnp.asarray(valid)
  return np.asarray(forward(params, cfg, jnp.asarray(tokens), model.positions_from_valid(valid), valid)[0])


TOKENS, VALID = left_padded([21, 13, 6, 1], 21)


@pytest.mark.parametrize('name', sorted(CASES))
def test_logits_equal_transformers(tmp_path, name):
  ref, path = make_hf(tmp_path, name)
  cfg, params = hf.load_checkpoint(path)
  family, kw = CASES[name]
  assert (cfg.family, cfg.tie_embeddings, cfg.qk_norm) == (family, kw['tie_word_embeddings'], family == 'qwen3')
  ours, want = our_logits(params, cfg, TOKENS, VALID)[VALID], hf_logits(ref, TOKENS, VALID)[VALID]
  MEASURED[name] = diff = np.abs(ours - want).max()
  assert diff < 1e-4, diff
  if name == 'llama3_scaled':   # the test can fail: without the scaling the logits are far off
    plain = dataclasses.replace(cfg, rope_scaling=None)
    assert np.abs(our_logits(params, plain, TOKENS, VALID)[VALID] - want).max() > 100 * 1e-4


@pytest.mark.parametrize('name', ['qwen2_gqa2_tied', 'qwen3_tied', 'qwen3_untied_bias', 'llama3_scaled',
                                  'llama_deepseek'])
def test_greedy_equals_transformers_generate(tmp_path, name):
  """sample.sample at temperature 0 (prefill + decode_step) against transformers' greedy generate, prompts of
  mixed lengths left-padded with an attention mask, up to 21 tokens (past llama3's original length 8)."""
  ref, path = make_hf(tmp_path, name)
  cfg, params = hf.load_checkpoint(path)
  tokens, valid = left_padded([11, 4, 7, 1], 11, seed=1)
  N = 10
  r = sample.sample(params, cfg, [t[v].tolist() for t, v in zip(tokens, valid)], num_samples=1,
                    max_new_tokens=N, temperature=0.0, key=jax.random.key(0), eos_ids=[])
  ref.generation_config.eos_token_id = None   # LlamaConfig's default EOS (2) would stop or, with min_new_tokens, ban it
  with torch.no_grad():
    out = ref.generate(torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64)), do_sample=False,
                       max_new_tokens=N, pad_token_id=0)
  assert out.shape == (len(tokens), tokens.shape[1] + N)
  np.testing.assert_array_equal(np.asarray(r.tokens), out[:, tokens.shape[1]:].numpy())


def test_sharded_index(tmp_path):
  ref, path = make_hf(tmp_path, 'qwen3_untied_bias', max_shard_size='40KB')
  index = json.load(open(os.path.join(path, 'model.safetensors.index.json')))
  assert len(set(index['weight_map'].values())) > 2 and not os.path.exists(os.path.join(path, 'model.safetensors'))
  cfg, params = hf.load_checkpoint(path)
  assert np.abs(our_logits(params, cfg, TOKENS, VALID) - hf_logits(ref, TOKENS, VALID))[VALID].max() < 1e-4


@pytest.mark.parametrize('name', ['qwen3_tied', 'llama3_scaled'])
def test_bfloat16_storage(tmp_path, name):
  """A bf16 checkpoint: read as float32 master weights it equals transformers in float32 on the same (rounded)
  weights to 1e-4; read as is (bf16 storage and matmuls) it stays within bf16 rounding of that (8-bit mantissa per
  op, compounded over 2 layers: a few 1e-2), and so does transformers' own bf16 model."""
  ref, path = make_hf(tmp_path, name)
  ref.to(torch.bfloat16).save_pretrained(path)
  # Read back, not ref.float(): .to(bfloat16) also rounds the rotary inv_freq buffer, which loading recomputes.
  load = lambda dtype: transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
  want = hf_logits(load(torch.float32).eval(), TOKENS, VALID)[VALID]
  cfg, params = hf.load_checkpoint(path, param_dtype='float32', dtype='float32')
  assert np.abs(our_logits(params, cfg, TOKENS, VALID)[VALID] - want).max() < 1e-4
  cfg16, params16 = hf.load_checkpoint(path)
  assert (cfg16.param_dtype, cfg16.dtype, params16['embed'].dtype) == ('bfloat16', 'bfloat16', jnp.bfloat16)
  ours16 = our_logits(params16, cfg16, TOKENS, VALID)[VALID]
  theirs16 = hf_logits(load(torch.bfloat16).eval(), TOKENS, VALID)[VALID]
  for got in (ours16, theirs16):
    diff = np.abs(got - want)
    assert diff.max() < 0.1 and diff.mean() < 0.02, (diff.max(), diff.mean())
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95


# ---- our exports, read by transformers

EXPORTS = {
    'qwen2_untied': dict(tie_embeddings=False, rope_theta=1e5),
    'qwen3_tied': dict(family='qwen3', qkv_bias=False, qk_norm=True, tie_embeddings=True, head_dim=16),
    'qwen3_bias': dict(family='qwen3', qkv_bias=True, o_bias=True, qk_norm=True),
    'llama3_scaled': dict(family='llama', qkv_bias=False, rope_theta=5e5, rope_scaling=(8.0, 1.0, 4.0, 8)),
    'llama_tied': dict(family='llama', qkv_bias=False, num_kv_heads=4, tie_embeddings=True),
}
ARCH = {'qwen2': 'Qwen2ForCausalLM', 'qwen3': 'Qwen3ForCausalLM', 'llama': 'LlamaForCausalLM'}


def tiny_cfg(**kw):
  return model.Config(**{**dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                mlp_dim=48), **kw})


def random_params(cfg, seed=0):
  rng = np.random.RandomState(seed)
  leaf = lambda path, shape: jnp.asarray(('norm' in jax.tree_util.keystr(path)) + 0.1 * rng.standard_normal(shape),
                                         jnp.dtype(cfg.param_dtype))
  return jax.tree_util.tree_map_with_path(leaf, model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


@pytest.mark.parametrize('name', sorted(EXPORTS))
def test_export_round_trip(tmp_path, name):
  cfg = tiny_cfg(**EXPORTS[name])
  params = random_params(cfg)
  path = str(tmp_path / 'ours')
  hf.save_checkpoint(path, cfg, params)
  ref = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
  assert type(ref).__name__ == ARCH[cfg.family]
  assert np.abs(hf_logits(ref, TOKENS, VALID) - our_logits(params, cfg, TOKENS, VALID))[VALID].max() < 1e-4
  cfg2, params2 = hf.load_checkpoint(path)
  assert cfg2 == cfg
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)
  ref.save_pretrained(str(tmp_path / 'again'))   # transformers' own config.json of it reads to the same Config
  assert hf.config_from_hf(str(tmp_path / 'again')) == cfg


def test_bfloat16_round_trip(tmp_path):
  cfg = tiny_cfg(param_dtype='bfloat16', dtype='bfloat16', **EXPORTS['qwen3_bias'])
  params = random_params(cfg)
  hf.save_checkpoint(str(tmp_path), cfg, params)
  assert json.load(open(tmp_path / 'config.json'))['torch_dtype'] == 'bfloat16'
  cfg2, params2 = hf.load_checkpoint(str(tmp_path))
  assert cfg2 == cfg and params2['embed'].dtype == jnp.bfloat16
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)



def test_bf16_model_exports_bf16(tmp_path):
  """A bf16 model trained with float32 master weights (the Config load_policy gives a bf16 checkpoint) exports its
  weights in bf16 with torch_dtype bfloat16, at half the float32 size: a run that starts from the export (load_policy
  again, as a recipe's second stage does) gets the same Config back, so its matmuls stay bf16, and the master
  weights rounded to bf16. A float32 model (the embedded default) exports float32, bit for bit, as before."""
  tok = str(tmp_path / 'tok')
  hf.build_char_tokenizer(tok)
  sizes = {}
  for dtype in ('bfloat16', 'float32'):
    cfg = tiny_cfg(vocab_size=len(hf.CHAR_VOCAB), param_dtype='float32', dtype=dtype, **EXPORTS['qwen3_tied'])
    params = random_params(cfg)
    path = str(tmp_path / dtype)
    hf.save_checkpoint(path, cfg, params, tokenizer_dir=tok)
    config = json.load(open(os.path.join(path, 'config.json')))
    assert config['torch_dtype'] == config['dtype'] == dtype
    stored = hf.read_safetensors(os.path.join(path, 'model.safetensors'))
    assert {a.dtype for a in stored.values()} == {np.dtype(jnp.dtype(dtype))}
    sizes[dtype] = os.path.getsize(os.path.join(path, 'model.safetensors'))
    cfg2, params2, _, _ = hf.load_policy(path)
    assert cfg2 == cfg and params2['embed'].dtype == np.float32
    rounded = jax.tree.map(lambda a: np.asarray(a).astype(jnp.dtype(dtype)).astype(np.float32), params)
    jax.tree.map(np.testing.assert_array_equal, params2, rounded)   # float32: the identity, bit for bit
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert ref.dtype == getattr(torch, dtype)   # transformers too reads it as a model of that dtype
  assert sizes['bfloat16'] < 0.52 * sizes['float32']


# ---- config.json: the paper's models, the variants written by transformers 4 and 5, what is refused

PUBLIC = {   # their config.json on the hub (the keys that matter, as published)
    'qwen2.5-math-7b': dict(architectures=['Qwen2ForCausalLM'], model_type='qwen2', hidden_size=3584,
                            intermediate_size=18944, max_position_embeddings=4096, max_window_layers=28,
                            num_attention_heads=28, num_hidden_layers=28, num_key_value_heads=4, rms_norm_eps=1e-6,
                            rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False,
                            torch_dtype='bfloat16', use_sliding_window=False, vocab_size=152064),
    'qwen3-4b-base': dict(architectures=['Qwen3ForCausalLM'], model_type='qwen3', attention_bias=False,
                          head_dim=128, hidden_act='silu', hidden_size=2560, intermediate_size=9728,
                          max_position_embeddings=32768, max_window_layers=36, num_attention_heads=32,
                          num_hidden_layers=36, num_key_value_heads=8, rms_norm_eps=1e-6, rope_scaling=None,
                          rope_theta=1000000, sliding_window=None, tie_word_embeddings=True, torch_dtype='bfloat16',
                          use_sliding_window=False, vocab_size=151936),
    'qwen3-14b-base': dict(architectures=['Qwen3ForCausalLM'], model_type='qwen3', attention_bias=False,
                           head_dim=128, hidden_act='silu', hidden_size=5120, intermediate_size=17408,
                           max_position_embeddings=32768, max_window_layers=40, num_attention_heads=40,
                           num_hidden_layers=40, num_key_value_heads=8, rms_norm_eps=1e-6, rope_scaling=None,
                           rope_theta=1000000, sliding_window=None, tie_word_embeddings=False,
                           torch_dtype='bfloat16', use_sliding_window=False, vocab_size=151936),
    'llama-3.1-8b': dict(architectures=['LlamaForCausalLM'], model_type='llama', attention_bias=False,
                         hidden_act='silu', hidden_size=4096, intermediate_size=14336, max_position_embeddings=131072,
                         mlp_bias=False, num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=8,
                         pretraining_tp=1, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                         rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192, rope_type='llama3'),
                         torch_dtype='bfloat16', vocab_size=128256),
    'deepseek-math-7b': dict(architectures=['LlamaForCausalLM'], model_type='llama', hidden_act='silu',
                             hidden_size=4096, intermediate_size=11008, max_position_embeddings=4096,
                             num_attention_heads=32, num_hidden_layers=30, num_key_value_heads=32, pretraining_tp=1,
                             rms_norm_eps=1e-6, rope_scaling=None, rope_theta=10000.0, tie_word_embeddings=False,
                             torch_dtype='bfloat16', vocab_size=102400),
}


def write_config(tmp_path, config: dict) -> str:
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(config, f)
  return str(tmp_path)


@pytest.mark.parametrize('name', sorted(PUBLIC))
def test_public_configs_read_to_presets(tmp_path, name):
  assert hf.config_from_hf(write_config(tmp_path, PUBLIC[name])) == model.PRESETS[name]


def test_rope_settings_of_transformers_4_and_5_agree(tmp_path):
  v4 = PUBLIC['llama-3.1-8b']
  v5 = {k: v for k, v in v4.items() if k not in ('rope_theta', 'rope_scaling')}
  v5['rope_parameters'] = dict(v4['rope_scaling'], rope_theta=500000.0)
  assert hf.config_from_hf(write_config(tmp_path, v5)) == model.PRESETS['llama-3.1-8b']
  # original_max_position_embeddings absent from the dict: the model's maximum, as transformers falls back
  v5['rope_parameters'].pop('original_max_position_embeddings')
  v5['max_position_embeddings'] = 8192
  assert hf.config_from_hf(write_config(tmp_path, v5)).rope_scaling == (8.0, 1.0, 4.0, 8192)
  # only a model_type, no head_dim: hidden / heads
  bare = {k: v for k, v in PUBLIC['deepseek-math-7b'].items() if k != 'architectures'}
  assert hf.config_from_hf(write_config(tmp_path, bare)).head_dim == 128


REFUSED = [   # (family, config.json edits, what the error names)
    ('qwen2', dict(architectures=['MistralForCausalLM'], model_type='mistral'), 'MistralForCausalLM'),
    ('qwen3', dict(architectures=['Qwen3MoeForCausalLM'], model_type='qwen3_moe'), 'Qwen3MoeForCausalLM'),
    ('llama', dict(model_type='qwen2'), 'do not match model_type'),
    ('llama', dict(rope_parameters=dict(rope_type='linear', factor=2.0, rope_theta=1e4)),
     r'rope_parameters.rope_type=.linear'),
    ('llama', dict(rope_scaling=dict(type='dynamic', factor=2.0)), r'rope_scaling.rope_type=.dynamic'),
    ('qwen3', dict(rope_scaling=dict(rope_type='yarn', factor=4.0, original_max_position_embeddings=32768)), 'yarn'),
    ('llama', dict(rope_scaling=dict(rope_type='llama3', factor=8.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=8)), 'low_freq_factor'),
    ('qwen3', dict(rope_parameters={'full_attention': dict(rope_type='default', rope_theta=1e4)}),
     'one rope setting'),
    ('llama', dict(partial_rotary_factor=0.5), 'partial_rotary_factor'),
    ('qwen2', dict(use_sliding_window=True, sliding_window=4, max_window_layers=1), 'sliding_window=4'),
    ('qwen3', dict(use_sliding_window=True, sliding_window=4, layer_types=['full_attention', 'sliding_attention']),
     'layer_types'),
    ('llama', dict(mlp_bias=True), 'mlp_bias'),
    ('qwen2', dict(hidden_act='gelu'), 'hidden_act'),
    ('qwen3', dict(quantization_config=dict(quant_method='awq', bits=4)), 'quantization_config'),
]


@pytest.mark.parametrize('family,edits,key', REFUSED)
def test_unsupported_settings_are_refused_by_name(tmp_path, family, edits, key):
  flags = {'qwen2': {}, 'qwen3': EXPORTS['qwen3_tied'], 'llama': EXPORTS['llama_tied']}[family]
  config = {**hf.config_to_hf(tiny_cfg(**flags)), **edits}
  with pytest.raises(ValueError, match=f'config.json: .*{key}'):
    hf.config_from_hf(write_config(tmp_path, config))


def test_sliding_window_that_does_not_bind_is_accepted(tmp_path):
  """Qwen2.5's configs carry a sliding_window with use_sliding_window false: every layer attends fully."""
  config = {**hf.config_to_hf(tiny_cfg()), 'use_sliding_window': False, 'sliding_window': 4, 'max_window_layers': 0}
  assert hf.config_from_hf(write_config(tmp_path, config)) == tiny_cfg()


# ---- bad checkpoint directories: errors that name the file and the tensor


def test_missing_directory_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    hf.load_checkpoint(str(tmp_path))
  _, path = make_hf(tmp_path, 'qwen2_mqa')
  os.remove(os.path.join(path, 'model.safetensors'))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    hf.load_checkpoint(path)


def test_wrong_shape_names_file_and_tensor(tmp_path):
  _, path = make_hf(tmp_path, 'qwen3_tied')
  config = json.load(open(os.path.join(path, 'config.json')))
  config['intermediate_size'] = 64
  json.dump(config, open(os.path.join(path, 'config.json'), 'w'))
  with pytest.raises(ValueError, match=r'model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape'):
    hf.load_checkpoint(path)


def test_missing_tensor_and_hand_made_shards(tmp_path):
  cfg = tiny_cfg(**EXPORTS['qwen3_tied'])
  params = random_params(cfg)
  path = str(tmp_path)
  hf.save_checkpoint(path, cfg, params)
  tensors = hf.read_safetensors(os.path.join(path, 'model.safetensors'))
  names = sorted(tensors)
  half = len(names) // 2
  hf.write_safetensors(os.path.join(path, 'model-1.safetensors'), {n: tensors[n] for n in names[:half]})
  hf.write_safetensors(os.path.join(path, 'model-2.safetensors'), {n: tensors[n] for n in names[half:]})
  os.remove(os.path.join(path, 'model.safetensors'))
  weight_map = {n: 'model-1.safetensors' if i < half else 'model-2.safetensors' for i, n in enumerate(names)}
  json.dump({'weight_map': weight_map}, open(os.path.join(path, 'model.safetensors.index.json'), 'w'))
  _, params2 = hf.load_checkpoint(path)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)
  gone = 'model.layers.1.self_attn.q_norm.weight'   # drop a Qwen3 q-norm weight: the error names it
  hf.write_safetensors(os.path.join(path, 'model-2.safetensors'), {n: tensors[n] for n in names[half:] if n != gone})
  with pytest.raises(ValueError, match=f'tensor {gone} is missing'):
    hf.load_checkpoint(path)
  os.remove(os.path.join(path, 'model-2.safetensors'))
  with pytest.raises(FileNotFoundError, match='model-2.safetensors'):
    hf.load_checkpoint(path)


def test_truncated_safetensors(tmp_path):
  cfg = tiny_cfg()
  hf.save_checkpoint(str(tmp_path), cfg, random_params(cfg))
  file = os.path.join(tmp_path, 'model.safetensors')
  data = open(file, 'rb').read()
  open(file, 'wb').write(data[:len(data) // 2])
  with pytest.raises(ValueError, match='model.safetensors: tensor .* truncated'):
    hf.load_checkpoint(str(tmp_path))



def test_unused_tensors_are_refused(tmp_path):
  """Tensors config.json has no place for are an error naming them (transformers only warns, its unexpected keys,
  and loads a different model): biases the config says are absent, layers past num_hidden_layers, experts. What
  transformers drops itself loads: a stale per-layer rotary inv_freq, a tied checkpoint's head equal to the embedding;
  a tied checkpoint whose head differs is refused (transformers would untie it)."""
  cfg = tiny_cfg(**EXPORTS['qwen3_tied'])
  params = random_params(cfg)
  path, file = str(tmp_path), os.path.join(tmp_path, 'model.safetensors')
  hf.save_checkpoint(path, cfg, params)
  tensors, config = hf.read_safetensors(file), json.load(open(os.path.join(path, 'config.json')))
  embed = tensors['model.embed_tokens.weight']
  bias = {f'model.layers.{i}.self_attn.{p}_proj.bias': np.zeros(n, np.float32) for i in range(2)
          for p, n in (('q', 64), ('k', 32), ('v', 32), ('o', 32))}

  def write(extra, **edits):
    hf.write_safetensors(file, {**tensors, **extra})
    json.dump({**config, **edits}, open(os.path.join(path, 'config.json'), 'w'))
    _, info = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, output_loading_info=True)
    return sorted(info['unexpected_keys'], key=lambda n: [(0, int(p), '') if p.isdigit() else (1, 0, p)
                                                          for p in n.split('.')])

  accepted = [{'model.layers.0.self_attn.rotary_emb.inv_freq': np.ones(4, np.float32),
               'model.layers.1.self_attn.rotary_emb.inv_freq': np.ones(4, np.float32)},
              {'lm_head.weight': embed.copy()}]
  for extra in accepted:
    assert write(extra) == []
    _, params2 = hf.load_checkpoint(path)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, params2)
  refused = [(bias, {}), ({}, dict(num_hidden_layers=1)),
             ({'model.layers.0.mlp.experts.0.down_proj.weight': np.zeros((32, 48), np.float32)}, {})]
  for extra, edits in refused:
    unexpected = write(extra, **edits)
    assert unexpected
    more = f' and {len(unexpected) - 5} more' if len(unexpected) > 5 else ''
    with pytest.raises(ValueError, match=f'model.safetensors: {len(unexpected)} tensor.s. that config.json has no '
                                         f'place for: {", ".join(unexpected[:5])}{more}. '):
      hf.load_checkpoint(path)
  write({'lm_head.weight': embed + 1})
  with pytest.raises(ValueError, match='tie_word_embeddings=true, but lm_head.weight differs'):
    hf.load_checkpoint(path)


# ---- tokenizers, stop ids, the Text boundary


def test_char_tokenizer_round_trip_and_export(tmp_path):
  hf.build_char_tokenizer(str(tmp_path / 'tok'))
  json.dump({'eos_token_id': [1, 5]}, open(tmp_path / 'tok' / 'generation_config.json', 'w'))
  cfg = tiny_cfg(vocab_size=len(hf.CHAR_VOCAB))
  # Also through an export: next to a qwen2 config.json the tokenizer must still keep every character.
  hf.save_checkpoint(str(tmp_path / 'hf'), cfg, random_params(cfg), tokenizer_dir=str(tmp_path / 'tok'))
  text = 'Compute 12 - 7 + 3.\n12 - 7 = 5, 5 + 3 = 8. \\boxed{8}'
  for d in ('tok', 'hf'):
    tok = hf.load_tokenizer(str(tmp_path / d))
    ids = tok(text, add_special_tokens=False)['input_ids']
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert hf.stop_ids(tok, str(tmp_path / d)) == [1, 5]   # generation_config.json copied with the export
  assert hf.stop_ids(tok) == [1]


def test_stop_ids_take_chat_markers_and_generation_config(tmp_path):
  tok = hf.build_char_tokenizer(str(tmp_path))
  tok.add_special_tokens({'additional_special_tokens': ['<|im_end|>', '<|eot_id|>']})
  json.dump({'eos_token_id': 7}, open(tmp_path / 'generation_config.json', 'w'))
  vocab = tok.get_vocab()
  assert hf.stop_ids(tok, str(tmp_path)) == sorted([1, 7, vocab['<|im_end|>'], vocab['<|eot_id|>']])


def test_text_encode_and_decode(tmp_path):
  from tokenizers import processors
  tok = hf.build_char_tokenizer(str(tmp_path))
  text = hf.Text.load(str(tmp_path))
  assert (text.stop_ids, text.pad_id, text.chat_template) == ([1], 0, False)
  assert text.encode(['ab', 'c']) == [[hf.CHAR_VOCAB.index(c) for c in 'ab'], [hf.CHAR_VOCAB.index('c')]]
  # A tokenizer that adds a BOS (here '<unk>', id 2): kept on raw prompts, not on a rendered chat template.
  tok._tokenizer.post_processor = processors.TemplateProcessing(single='<unk> $A', special_tokens=[('<unk>', 2)])
  tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
  assert hf.Text(tok, [1]).encode(['ab'])[0][0] == 2
  assert hf.Text(tok, [1], chat_template=True).encode(['ab']) == [tok('[ab]', add_special_tokens=False)['input_ids']]
  # decode: only real tokens, stop ids and special tokens dropped
  ids = lambda s: [hf.CHAR_VOCAB.index(c) for c in s]
  tokens = np.array([ids('hi') + [1, 0], ids('yo!') + [2]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  assert text.decode(tokens, mask) == ['hi', 'yo']


# ---- the published chat templates of the paper's models, on byte-level tokenizers with their special tokens

# Llama-3.1-8B-Instruct's chat template (its tokenizer_config.json) and Qwen3's (Qwen/Qwen3-8B's), as published
# except that lines over 120 characters are wrapped inside their tags (Jinja joins adjacent string literals and
# ignores whitespace in a tag: the renderings are the same).
LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function "
        "call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim +
            '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""
QWEN3_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
        "<args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and
          not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1]
                    .lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') +
                    '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""
CHAT_MODELS = {   # the tokenizer_config.json, generation_config.json and rendered prompt of each, ids renumbered
    'llama3.1-instruct': dict(
        template=LLAMA31_TEMPLATE, tokenizer_class='PreTrainedTokenizerFast', bos='<|begin_of_text|>',
        eos='<|eot_id|>', pad=None, config='llama-3.1-8b',
        special=['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eom_id|>',
                 '<|eot_id|>', '<|python_tag|>'],
        generation_eos=['<|end_of_text|>', '<|eom_id|>', '<|eot_id|>'],
        rendered='<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December '
                 '2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>'
                 '<|start_header_id|>assistant<|end_header_id|>\n\n',
        header='<|start_header_id|>assistant<|end_header_id|>\n\n',
        stops=['<|end_of_text|>', '<|eom_id|>', '<|eot_id|>']),
    'qwen3-base': dict(
        template=QWEN3_TEMPLATE, tokenizer_class='Qwen2Tokenizer', bos=None, eos='<|endoftext|>',
        pad='<|endoftext|>', config='qwen3-4b-base', special=['<|endoftext|>', '<|im_start|>', '<|im_end|>'],
        generation_eos='<|endoftext|>', rendered='<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n',
        header='<|im_start|>assistant\n', stops=['<|endoftext|>', '<|im_end|>']),
}


def make_chat_tokenizer(path: str, m: dict) -> str:
  """A byte-level BPE tokenizer (every byte a token, no merges) with the model's special tokens, saved with its
  chat template and tokenizer class, a generation_config.json with its end tokens, and its config.json."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
  tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                             merges=[]))
  tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
  tok.add_special_tokens(m['special'])
  if m['bos']:   # as Llama 3's tokenizer.json: every encoding starts with <|begin_of_text|>
    tok.post_processor = processors.TemplateProcessing(single=f'{m["bos"]} $A',
                                                       special_tokens=[(m['bos'], tok.token_to_id(m['bos']))])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=m['bos'], eos_token=m['eos'],
                                              pad_token=m['pad'])
  fast.chat_template = m['template']
  fast.save_pretrained(path)
  file = os.path.join(path, 'tokenizer_config.json')
  json.dump({**json.load(open(file)), 'tokenizer_class': m['tokenizer_class']}, open(file, 'w'))
  eos = m['generation_eos']
  eos = [tok.token_to_id(t) for t in eos] if isinstance(eos, list) else tok.token_to_id(eos)
  json.dump({'eos_token_id': eos}, open(os.path.join(path, 'generation_config.json'), 'w'))
  json.dump(PUBLIC[m['config']], open(os.path.join(path, 'config.json'), 'w'))
  return path


@pytest.mark.parametrize('name', sorted(CHAT_MODELS))
def test_published_chat_templates(tmp_path, name):
  """--chat_template with Llama-3.1-Instruct's and Qwen3's own templates: the prompt is the template's rendering of
  one user turn, ending at the assistant header, with exactly one BOS for Llama (the template writes it, so the
  tokenizer must not add another) and none for Qwen. Qwen3's template gets no enable_thinking (the project passes
  none), so it opens no empty <think> block: Qwen3 thinks, as its default. Without --chat_template the prompt is
  plain text with the tokenizer's own BOS. Sampling stops at every end token the model may emit: Llama 3.1's
  <|eom_id|> comes only from generation_config.json's list, Qwen3-Base's <|im_end|> (its EOS is <|endoftext|>)
  only from the chat end markers."""
  m = CHAT_MODELS[name]
  path = make_chat_tokenizer(str(tmp_path), m)
  tok = hf.load_tokenizer(path)
  enc = lambda s: tok(s, add_special_tokens=False)['input_ids']
  special = {t: tok.convert_tokens_to_ids(t) for t in m['special']}
  chat, plain = hf.Text.load(path, chat_template=True), hf.Text.load(path)
  prompt = 'What is 2+3? Answer in \\boxed{}.'
  (ids,) = chat.encode([prompt])
  assert tok.decode(ids) == m['rendered'].format(prompt) and ids == enc(m['rendered'].format(prompt))
  assert ids[-len(enc(m['header'])):] == enc(m['header'])          # ends at the assistant header
  bos = [special[m['bos']]] if m['bos'] else []
  assert tok.bos_token_id == (bos[0] if bos else None)
  assert ids[:len(bos)] == bos and [i for i in ids if i in bos] == bos   # one BOS, first (Llama); none (Qwen)
  assert plain.encode([prompt]) == [bos + enc(prompt)]
  stops = sorted(special[t] for t in m['stops'])
  assert chat.stop_ids == plain.stop_ids == stops
  assert chat.decode(np.array([enc('5') + stops[-1:]]), np.ones((1, 2), bool)) == ['5']

# ---- hub ids, never on the network


def test_resolve_model(tmp_path, offline):
  assert hf.resolve_model(str(tmp_path)) == str(tmp_path)
  with pytest.raises(ValueError, match=r"'meta-llama/Llama-3.1-8B-Instruct' is not a local directory.*--local-dir DIR.*"
                                       r"gated.*`hf auth login`.*HF_TOKEN"):
    hf.resolve_model('meta-llama/Llama-3.1-8B-Instruct')
  with pytest.raises(ValueError, match=r"'no such dir/or/id' is neither a directory nor .* ORG/NAME"):
    hf.resolve_model('no such dir/or/id')
  # A snapshot already in the cache is found offline.
  snapshot = offline / 'models--org--name' / 'snapshots' / ('a' * 40)
  snapshot.mkdir(parents=True)
  (snapshot / 'config.json').write_text('{}')
  (offline / 'models--org--name' / 'refs').mkdir()
  (offline / 'models--org--name' / 'refs' / 'main').write_text('a' * 40)
  assert hf.resolve_model('org/name') == str(snapshot)


def test_resolve_data(offline):
  assert hf.resolve_data('data/train.jsonl') == 'data/train.jsonl'
  with pytest.raises(ValueError, match=r"'hf:org/name': .* hf:ORG/NAME/path/in/repo.jsonl"):
    hf.resolve_data('hf:org/name')
  with pytest.raises(ValueError, match=r"'hf:org/name/dir/x.jsonl'.*'dir/x.jsonl' of dataset 'org/name'.*--repo-type"):
    hf.resolve_data('hf:org/name/dir/x.jsonl')


def test_hub_ids_fetch_what_is_read(tmp_path, offline, monkeypatch):
  """resolve_model and resolve_data call huggingface_hub (mocked here) with the repository and files, and use the
  directory / file it returns. The model patterns, applied as huggingface_hub applies them (fnmatch, whose '*' also
  matches '/'), pick from the files of Llama-3.1-8B-Instruct's repository (and a made-up subfolder of weights in
  another format) the config, weights, tokenizer and generation config at the top level, and nothing else."""
  snapshot = str(tmp_path / 'snapshot')
  cfg = tiny_cfg(vocab_size=len(hf.CHAR_VOCAB))
  hf.save_checkpoint(snapshot, cfg, random_params(cfg))
  hf.build_char_tokenizer(snapshot)
  calls = []
  monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda *a, **kw: calls.append((a, kw)) or snapshot)
  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', lambda *a, **kw: calls.append((a, kw)) or 'local.jsonl')
  cfg2, _, _, path = hf.load_policy('meta-llama/Llama-3.1-8B-Instruct')
  assert path == snapshot and cfg2 == cfg
  (args, kw), = calls
  assert args == ('meta-llama/Llama-3.1-8B-Instruct',) and kw['local_files_only'] is True   # HF_HUB_OFFLINE=1
  shards = [f'model-0000{i}-of-00004.safetensors' for i in range(1, 5)]
  repo = ['.gitattributes', 'LICENSE', 'README.md', 'USE_POLICY.md', 'config.json', 'generation_config.json',
          *shards, 'model.safetensors.index.json', 'original/consolidated.00.pth', 'original/params.json',
          'original/tokenizer.model', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json',
          'onnx/model.safetensors']
  pick = lambda **patterns: list(huggingface_hub.utils.filter_repo_objects(repo, **patterns))
  assert pick(allow_patterns=kw['allow_patterns'], ignore_patterns=kw['ignore_patterns']) == [
      'config.json', 'generation_config.json', *shards, 'model.safetensors.index.json', 'special_tokens_map.json',
      'tokenizer.json', 'tokenizer_config.json']
  assert 'onnx/model.safetensors' in pick(allow_patterns=kw['allow_patterns'])   # why the subfolders are ignored
  calls.clear()
  assert hf.resolve_data('hf:HuggingFaceH4/MATH-500/test.jsonl') == 'local.jsonl'
  assert hf.resolve_data('hf:org/name/data/train-00000-of-00001.parquet') == 'local.jsonl'
  assert calls == [(('HuggingFaceH4/MATH-500', 'test.jsonl'), dict(repo_type='dataset', local_files_only=True)),
                   (('org/name', 'data/train-00000-of-00001.parquet'), dict(repo_type='dataset',
                                                                           local_files_only=True))]


def test_zz_print_measured():
  """Last in the module: the measured max |logit diff| per case (pytest -s shows it)."""
  for name, diff in sorted(MEASURED.items()):
    print(f'{name:22s} max |logit diff| vs transformers = {diff:.2e}')
