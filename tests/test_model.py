"""model.py's math: the cached decode and padded rows against the plain forward pass, per family; the rotary
frequencies against transformers' own function; the presets' parameter counts against the model cards.
(Logits against transformers' PyTorch models on the same weights: tests/test_hf.py.)"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers import modeling_rope_utils

import model

forward = jax.jit(model.forward, static_argnums=1)

# The flags of each family (and of the variants the configs can ask for), on a tiny shape.
FAMILIES = {
    'qwen2': dict(),
    'qwen3': dict(family='qwen3', qkv_bias=False, qk_norm=True),
    'qwen3_bias': dict(family='qwen3', qkv_bias=True, o_bias=True, qk_norm=True),
    'llama': dict(family='llama', qkv_bias=False, rope_theta=500000.0, rope_scaling=(8.0, 1.0, 4.0, 8)),
    'llama_mha': dict(family='llama', qkv_bias=False, num_kv_heads=4),
}


def tiny_cfg(**kw):
  base = dict(vocab_size=61, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  base.update(kw)
  return model.Config(**base)


def random_params(cfg, seed=0):
  """Norms 1 + noise, biases and weights normal with std 0.1 (peaked, varied logits, so errors show), drawn with
  numpy: model.init_params would compile for each config."""
  rng = np.random.RandomState(seed)
  def leaf(path, shape):
    return jnp.asarray(('norm' in jax.tree_util.keystr(path)) + 0.1 * rng.standard_normal(shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


@pytest.mark.parametrize('family', ['qwen2', 'qwen3_bias', 'llama'])   # every part of every family
def test_cached_decode_equals_full_forward(family):
  cfg = tiny_cfg(**FAMILIES[family])
  params = random_params(cfg)
  tokens = jnp.asarray(np.random.RandomState(1).randint(0, 61, size=(2, 12)))   # 12 > llama's original 8
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


def test_per_layer_weights_equal_the_stacks():
  """params['layers'] as a list of per-layer dicts (the sampler's prefill) against the stacked layers, the
  reference tests/test_hf.py holds to transformers: logits and the written cache."""
  cfg = tiny_cfg(**FAMILIES['qwen3_bias'])
  params = random_params(cfg)
  per_layer = dict(params, layers=[jax.tree.map(lambda a: a[l], params['layers']) for l in range(cfg.num_layers)])
  tokens = jnp.asarray(np.random.RandomState(2).randint(0, 61, size=(2, 7)))
  pos, valid = jnp.broadcast_to(jnp.arange(7), (2, 7)), jnp.ones((2, 7), bool)
  (want, _), (got, _) = (forward(p, cfg, tokens, pos, valid) for p in (params, per_layer))
  assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-6
  (want, want_cache), (got, got_cache) = (forward(p, cfg, tokens, pos, valid, model.init_cache(cfg, 2, 9))
                                          for p in (params, per_layer))
  assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-6
  for a, b in ((got_cache.k, want_cache.k), (got_cache.v, want_cache.v)):
    assert a.shape == b.shape == (cfg.num_layers, 2, 9, cfg.num_kv_heads, cfg.head_dim)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-6
  assert int(got_cache.index) == 7


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


def test_family_parts_are_used():
  """Guards against tests that would pass with a family's part ignored: dropping the q/k norm weights, the o bias or
  the rope scaling changes the logits by far more than the 1e-4 the transformers comparisons allow."""
  tokens = jnp.asarray(np.random.RandomState(4).randint(0, 61, size=(2, 24)))
  cfg = tiny_cfg(**FAMILIES['qwen3_bias'])
  params = random_params(cfg)
  base = np.asarray(model.logits(params, cfg, tokens))
  for name in ('q_norm', 'k_norm', 'o_bias'):
    other = jax.tree.map(lambda a: a, params)
    other['layers'][name] = jnp.ones_like(params['layers'][name]) if 'norm' in name else 0 * params['layers'][name]
    assert np.abs(np.asarray(model.logits(other, cfg, tokens)) - base).max() > 1e-2, name
  cfg = tiny_cfg(**FAMILIES['llama'])
  params = random_params(cfg)
  plain = dataclasses.replace(cfg, rope_scaling=None)
  diff = np.asarray(model.logits(params, cfg, tokens)) - np.asarray(model.logits(params, plain, tokens))
  assert np.abs(diff).max() > 1e-2


@pytest.mark.parametrize('head_dim,theta,scaling', [(8, 10000.0, None), (128, 1e6, None),
                                                    (128, 500000.0, (8.0, 1.0, 4.0, 8192)),
                                                    (16, 500000.0, (8.0, 1.0, 4.0, 8)),
                                                    (64, 10000.0, (32.0, 2.0, 8.0, 64))])
def test_rope_frequencies_equal_transformers(head_dim, theta, scaling):
  """Against transformers' own rope init functions (the llama3 one has three frequency bands; each is hit)."""
  rope = {'rope_type': 'default', 'rope_theta': theta}
  if scaling:
    rope.update(dict(zip(model.LLAMA3_SCALING, scaling)), rope_type='llama3')
  hf = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                                max_position_embeddings=max(32768, 16 * (scaling or (0,) * 4)[3]), rope_parameters=rope)
  if scaling:
    want, _ = modeling_rope_utils.ROPE_INIT_FUNCTIONS['llama3'](hf, torch.device('cpu'))
  else:
    want = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
  cfg = tiny_cfg(head_dim=head_dim, rope_theta=theta, rope_scaling=scaling, family='llama', qkv_bias=False)
  got = model.rope_frequencies(cfg)
  assert got.dtype == np.float32 and got.shape == (head_dim // 2,)
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
  if scaling and head_dim >= 64:   # these shapes have all three bands: kept, stretched by factor, interpolated
    ratio = model.rope_frequencies(dataclasses.replace(cfg, rope_scaling=None)) / got
    assert np.isclose(ratio, 1).any() and np.isclose(ratio, scaling[0]).any()
    assert ((ratio > 1.001) & (ratio < scaling[0] * 0.999)).any()


def test_config_rejects_what_no_family_has():
  with pytest.raises(ValueError, match='family'):
    tiny_cfg(family='mistral')
  with pytest.raises(ValueError, match='qwen2 has q/k/v biases'):
    tiny_cfg(qkv_bias=False)                                # a qwen2 export would load with zero biases
  with pytest.raises(ValueError, match='qk_norm'):
    tiny_cfg(family='llama', qkv_bias=False, qk_norm=True)
  with pytest.raises(ValueError, match='all of q, k, v, o'):
    tiny_cfg(family='qwen3', qkv_bias=True, qk_norm=True)
  with pytest.raises(ValueError, match='rope_scaling'):
    tiny_cfg(family='llama', qkv_bias=False, rope_scaling=(8.0, 4.0, 1.0, 8))   # low >= high
  hash(model.PRESETS['llama-3.1-8b'])                         # a static jit argument


def count(cfg, embeddings=True):
  total = sum(int(np.prod(s)) for s in jax.tree.leaves(model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple)))
  return total if embeddings else total - cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


# (preset, parameters, non-embedding parameters or None, rounding unit): the numbers of the model cards.
CARDS = [('qwen2.5-math-1.5b', 1.54e9, None, 0.01e9), ('qwen2.5-math-7b', 7.62e9, None, 0.01e9),
         ('qwen3-4b-base', 4.0e9, 3.6e9, 0.1e9), ('qwen3-14b-base', 14.8e9, 13.2e9, 0.1e9),
         ('llama-3.1-8b', 8.03e9, None, 0.01e9), ('deepseek-math-7b', 6.91e9, None, 0.01e9)]


@pytest.mark.parametrize('name,total,non_embedding,unit', CARDS)
def test_presets_match_parameter_counts(name, total, non_embedding, unit):
  cfg = model.PRESETS[name]
  assert abs(count(cfg) - total) <= unit / 2, count(cfg)
  if non_embedding:   # Qwen's cards count embedding and LM head as embedding parameters
    assert abs(count(cfg, embeddings=False) - non_embedding) <= unit / 2, count(cfg, embeddings=False)
  assert math.isclose(model.rope_frequencies(cfg)[0], 1.0)


def test_init_params_of_the_family_parts():
  cfg = tiny_cfg(**FAMILIES['qwen3_bias'])
  params = model.init_params(cfg, jax.random.key(0))
  assert jax.tree.map(jnp.shape, params) == model.param_shapes(cfg)
  layers = params['layers']
  assert (layers['q_norm'] == 1).all() and (layers['k_norm'] == 1).all() and (layers['o_bias'] == 0).all()
