"""hf.py against the reference: transformers' own Qwen2 / Qwen3 / Llama classes on random weights they write
(save_pretrained), read with hf.load_checkpoint; our exports read back by transformers; the public config.json of
the paper's models read to model.PRESETS; every unsupported setting refused by name. No network: hub lookups run
with HF_HUB_OFFLINE=1 on an empty cache."""
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


@pytest.mark.parametrize('name', ['qwen2_gqa2_tied', 'qwen3_untied_bias', 'llama3_scaled', 'llama_deepseek'])
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


# ---- hub ids, never on the network


@pytest.fixture
def offline(tmp_path, monkeypatch):
  """HF_HUB_OFFLINE=1 and an empty cache; huggingface_hub reads its constants at import, so they are set too."""
  cache = tmp_path / 'hf_home' / 'hub'
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)   # resolve_model must read the env itself
  return cache


def test_resolve_model(tmp_path, offline):
  assert hf.resolve_model(str(tmp_path)) == str(tmp_path)
  with pytest.raises(ValueError, match=r"'Qwen/Qwen3-4B-Base' is not a local directory.*--local-dir DIR"):
    hf.resolve_model('Qwen/Qwen3-4B-Base')
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


def test_zz_print_measured():
  """Last in the module: the measured max |logit diff| per case (pytest -s shows it)."""
  for name, diff in sorted(MEASURED.items()):
    print(f'{name:22s} max |logit diff| vs transformers = {diff:.2e}')
