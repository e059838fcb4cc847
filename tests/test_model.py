"""model.py against the reference: transformers' PyTorch Qwen2ForCausalLM on the same random weights."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import model

forward = jax.jit(model.forward, static_argnums=1)

# Small configs that differ in GQA ratio, head dim, tied/untied embeddings, q/k/v bias and RoPE theta.
HF_CONFIGS = {
    'gqa2_tied': dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      tie_word_embeddings=True, rope_theta=10000.0),
    'mha_untied': dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=3, head_dim=16,
                       tie_word_embeddings=False, rope_theta=1e6),
    'gqa4_wide_head': dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                           tie_word_embeddings=False, rope_theta=500.0),
    'mqa': dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                tie_word_embeddings=True, rope_theta=10000.0),
}


def make_hf(tmp_path, name, seed=0, **overrides):
  kw = dict(vocab_size=97, intermediate_size=80, num_hidden_layers=2, rms_norm_eps=1e-6,
            max_position_embeddings=256, use_sliding_window=False)
  kw.update(HF_CONFIGS[name])
  kw.update(overrides)
  torch.manual_seed(seed)
  hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw)).eval()
  with torch.no_grad():  # the default init leaves biases at zero: randomise them so the bias path is checked
    for n, p in hf.named_parameters():
      if n.endswith('bias') or 'norm' in n:
        p.add_(0.1 * torch.randn_like(p))
  path = str(tmp_path / name)
  hf.save_pretrained(path)
  return hf, path


def hf_logits(hf, tokens, attention_mask=None):
  with torch.no_grad():
    kw = {} if attention_mask is None else {'attention_mask': torch.tensor(attention_mask)}
    return hf(torch.tensor(tokens), **kw).logits.float().numpy()


TOKENS = np.random.RandomState(0).randint(0, 97, size=(3, 21))


@pytest.mark.parametrize('name', sorted(HF_CONFIGS))
def test_logits_equal_transformers(tmp_path, name):
  hf, path = make_hf(tmp_path, name)
  cfg, params = model.load_hf_checkpoint(path)
  assert cfg.tie_embeddings == HF_CONFIGS[name]['tie_word_embeddings']
  ours = np.asarray(model.logits(params, cfg, jnp.asarray(TOKENS)))
  ref = hf_logits(hf, TOKENS)
  diff = np.abs(ours - ref).max()
  print(f'{name}: max |logit diff| = {diff:.2e}')
  assert diff < 1e-4


def test_untied_head_is_used(tmp_path):
  """Guard against a test that would pass with the head ignored: perturbing lm_head must change logits."""
  hf, path = make_hf(tmp_path, 'mha_untied')
  cfg, params = model.load_hf_checkpoint(path)
  a = model.logits(params, cfg, jnp.asarray(TOKENS))
  params['lm_head'] = params['lm_head'] * 2
  assert np.abs(np.asarray(model.logits(params, cfg, jnp.asarray(TOKENS)) - a)).max() > 1e-2


def tiny_cfg(**kw):
  base = dict(vocab_size=61, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  base.update(kw)
  return model.Config(**base)


def random_params(cfg, seed=0):
  params = model.init_params(cfg, jax.random.key(seed))
  # Non-trivial norms and biases, and larger weights so that errors show up in the logits.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [l + 0.1 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


def test_cached_decode_equals_full_forward():
  cfg = tiny_cfg()
  params = random_params(cfg)
  tokens = jnp.asarray(np.random.RandomState(1).randint(0, 61, size=(2, 12)))
  full = np.asarray(model.logits(params, cfg, tokens))
  B, T = tokens.shape
  cache = model.init_cache(cfg, B, 16)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  valid = jnp.ones((B, T), bool)
  out, cache = forward(params, cfg, tokens[:, :5], pos[:, :5], valid[:, :5], cache)   # prefill 5
  steps = [np.asarray(out)]
  for t in range(5, T):                                                                     # decode the rest
    out, cache = forward(params, cfg, tokens[:, t:t + 1], pos[:, t:t + 1], valid[:, t:t + 1], cache)
    steps.append(np.asarray(out))
  cached = np.concatenate(steps, axis=1)
  assert np.abs(cached - full).max() < 1e-5


@pytest.mark.parametrize('side', ['left', 'right'])
def test_padded_rows_equal_rows_alone(side):
  cfg = tiny_cfg()
  params = random_params(cfg)
  rng = np.random.RandomState(2)
  prompts = [rng.randint(3, 61, size=n) for n in (4, 9, 7)]
  T = 9
  tokens = np.zeros((3, T), np.int32)
  valid = np.zeros((3, T), bool)
  for i, p in enumerate(prompts):
    sl = slice(T - len(p), T) if side == 'left' else slice(0, len(p))
    tokens[i, sl], valid[i, sl] = p, True
  valid = jnp.asarray(valid)
  out, _ = forward(params, cfg, jnp.asarray(tokens), model.positions_from_valid(valid), valid)
  for i, p in enumerate(prompts):
    alone = np.asarray(model.logits(params, cfg, jnp.asarray(p)[None]))[0]
    got = np.asarray(out[i])[np.asarray(valid[i])]
    assert np.abs(got - alone).max() < 1e-5


def test_left_padded_cached_decode_equals_alone():
  """The sampler's pattern: left-padded prefill into a cache, then decode, per row equal to the row alone."""
  cfg = tiny_cfg()
  params = random_params(cfg)
  rng = np.random.RandomState(3)
  prompts = [rng.randint(3, 61, size=n) for n in (3, 6)]
  conts = rng.randint(3, 61, size=(2, 4))
  T = 6
  tokens = np.zeros((2, T), np.int32)
  valid = np.zeros((2, T), bool)
  for i, p in enumerate(prompts):
    tokens[i, T - len(p):], valid[i, T - len(p):] = p, True
  lengths = valid.sum(1)
  cache = model.init_cache(cfg, 2, T + 4)
  valid_j = jnp.asarray(valid)
  out, cache = forward(params, cfg, jnp.asarray(tokens), model.positions_from_valid(valid_j), valid_j, cache)
  outs = [np.asarray(out[:, -1])]
  for t in range(3):
    pos = jnp.asarray(lengths + t)[:, None]
    out, cache = forward(params, cfg, jnp.asarray(conts[:, t:t + 1]), pos, jnp.ones((2, 1), bool), cache)
    outs.append(np.asarray(out[:, 0]))
  for i, p in enumerate(prompts):
    seq = np.concatenate([p, conts[i, :3]])
    alone = np.asarray(model.logits(params, cfg, jnp.asarray(seq)[None]))[0, len(p) - 1:]
    got = np.stack([o[i] for o in outs])
    assert np.abs(got - alone).max() < 1e-5


def test_round_trip_through_transformers(tmp_path):
  cfg = tiny_cfg(tie_embeddings=False, rope_theta=1e5)
  params = random_params(cfg)
  path = str(tmp_path / 'ours')
  model.save_hf_checkpoint(path, cfg, params)
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
  tokens = np.random.RandomState(4).randint(0, 61, size=(2, 10))
  ours = np.asarray(model.logits(params, cfg, jnp.asarray(tokens)))
  assert np.abs(hf_logits(hf, tokens) - ours).max() < 1e-4
  cfg2, params2 = model.load_hf_checkpoint(path)
  assert cfg2 == cfg
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_bfloat16_round_trip(tmp_path):
  cfg = tiny_cfg(param_dtype='bfloat16', dtype='bfloat16')
  params = random_params(cfg)
  model.save_hf_checkpoint(str(tmp_path), cfg, params)
  assert json.load(open(tmp_path / 'config.json'))['torch_dtype'] == 'bfloat16'
  cfg2, params2 = model.load_hf_checkpoint(str(tmp_path))
  assert params2['embed'].dtype == jnp.bfloat16
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_bfloat16_compute_close_to_float32(tmp_path):
  """bf16 has an 8-bit mantissa (relative rounding 2^-9 = 0.2%) per op. Over a 2-layer model with logits of
  size ~3, errors compound to a few 1e-2; we require max |diff| < 0.1 and a mean well below that, and
  that the argmax agrees at >= 95% of positions (exact ties apart, what matters for greedy sampling)."""
  hf, path = make_hf(tmp_path, 'gqa2_tied')
  cfg, params = model.load_hf_checkpoint(path)
  tokens = jnp.asarray(np.random.RandomState(5).randint(0, 97, size=(4, 32)))
  f32 = np.asarray(model.logits(params, cfg, tokens))
  cfg16 = dataclasses.replace(cfg, dtype='bfloat16', param_dtype='bfloat16')
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  b16 = np.asarray(model.logits(p16, cfg16, tokens))
  assert b16.dtype == np.float32
  diff = np.abs(b16 - f32)
  print(f'bf16 vs f32: max {diff.max():.3e} mean {diff.mean():.3e} (logit scale {np.abs(f32).mean():.2f})')
  assert diff.max() < 0.1 and diff.mean() < 0.02
  assert (b16.argmax(-1) == f32.argmax(-1)).mean() >= 0.95


def test_config_from_hf_reads_shape(tmp_path):
  _, path = make_hf(tmp_path, 'gqa4_wide_head')
  cfg = model.Config.from_hf(path)
  assert (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta) == (64, 8, 2, 32, 500.0)


def test_presets_match_parameter_counts():
  # Qwen2.5-Math-1.5B has 1.54B parameters and 7B has 7.62B (model cards).
  count = lambda cfg: sum(int(np.prod(s)) for s in jax.tree.leaves(
      model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple)))
  assert abs(count(model.PRESETS['qwen2.5-math-1.5b']) / 1.54e9 - 1) < 0.01
  assert abs(count(model.PRESETS['qwen2.5-math-7b']) / 7.62e9 - 1) < 0.01


# ---- bad checkpoint directories: errors that name the file and the tensor


def test_missing_directory_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    model.load_hf_checkpoint(str(tmp_path))
  _, path = make_hf(tmp_path, 'mqa')
  os.remove(os.path.join(path, 'model.safetensors'))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    model.load_hf_checkpoint(path)


def test_unsupported_architecture(tmp_path):
  _, path = make_hf(tmp_path, 'mqa')
  hf = json.load(open(os.path.join(path, 'config.json')))
  hf.update(model_type='llama', architectures=['LlamaForCausalLM'])
  json.dump(hf, open(os.path.join(path, 'config.json'), 'w'))
  with pytest.raises(ValueError, match=r'config.json.*LlamaForCausalLM.*not supported'):
    model.load_hf_checkpoint(path)


def test_wrong_shape_names_file_and_tensor(tmp_path):
  _, path = make_hf(tmp_path, 'mqa')
  hf = json.load(open(os.path.join(path, 'config.json')))
  hf['intermediate_size'] = 64
  json.dump(hf, open(os.path.join(path, 'config.json'), 'w'))
  with pytest.raises(ValueError, match=r'model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape'):
    model.load_hf_checkpoint(path)


def test_missing_tensor_and_sharded_index(tmp_path):
  cfg = tiny_cfg()
  params = random_params(cfg)
  path = str(tmp_path)
  model.save_hf_checkpoint(path, cfg, params)
  tensors = model._read_safetensors(os.path.join(path, 'model.safetensors'))
  names = sorted(tensors)
  half = len(names) // 2
  # Re-save as two shards with an index, the layout of real multi-file checkpoints.
  model._write_safetensors(os.path.join(path, 'model-1.safetensors'), {n: tensors[n] for n in names[:half]})
  model._write_safetensors(os.path.join(path, 'model-2.safetensors'), {n: tensors[n] for n in names[half:]})
  os.remove(os.path.join(path, 'model.safetensors'))
  weight_map = {n: 'model-1.safetensors' if i < half else 'model-2.safetensors' for i, n in enumerate(names)}
  json.dump({'weight_map': weight_map}, open(os.path.join(path, 'model.safetensors.index.json'), 'w'))
  _, params2 = model.load_hf_checkpoint(path)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)
  # Drop one tensor from shard 2: the error names it.
  gone = names[-1]
  model._write_safetensors(os.path.join(path, 'model-2.safetensors'), {n: tensors[n] for n in names[half:-1]})
  with pytest.raises(ValueError, match=f'tensor {gone} is missing'):
    model.load_hf_checkpoint(path)
  os.remove(os.path.join(path, 'model-2.safetensors'))
  with pytest.raises(FileNotFoundError, match='model-2.safetensors'):
    model.load_hf_checkpoint(path)


def test_truncated_safetensors(tmp_path):
  cfg = tiny_cfg()
  model.save_hf_checkpoint(str(tmp_path), cfg, random_params(cfg))
  file = os.path.join(tmp_path, 'model.safetensors')
  data = open(file, 'rb').read()
  open(file, 'wb').write(data[:len(data) // 2])
  with pytest.raises(ValueError, match='model.safetensors: tensor .* truncated'):
    model.load_hf_checkpoint(str(tmp_path))


def test_char_tokenizer_round_trip(tmp_path):
  model.build_char_tokenizer(str(tmp_path / 'tok'))
  cfg = tiny_cfg(vocab_size=len(model.CHAR_VOCAB))
  # Also through an export: next to a qwen2 config.json the tokenizer must still keep every character.
  model.save_hf_checkpoint(str(tmp_path / 'hf'), cfg, random_params(cfg), tokenizer_dir=str(tmp_path / 'tok'))
  text = 'Compute 12 - 7 + 3.\n12 - 7 = 5, 5 + 3 = 8. \\boxed{8}'
  for d in ('tok', 'hf'):
    tok = model.load_tokenizer(str(tmp_path / d))
    ids = tok(text, add_special_tokens=False)['input_ids']
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0
