"""sample.py against the plain full forward pass, on a tiny random policy (CPU, 8 fake devices)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import hf
import model
import sample

# The vocabulary of hf.build_char_tokenizer, so that generate() shares the other tests' compiled loop.
CFG = model.Config(vocab_size=len(hf.CHAR_VOCAB), d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, mlp_dim=48)
# Eight prompts (they divide over the 8 fake devices) of lengths 1 to 15: one bucket (16), left-padded.
PROMPTS = [np.random.RandomState(i).randint(3, CFG.vocab_size, size=n).tolist()
           for i, n in enumerate([3, 7, 12, 1, 15, 5, 9, 2])]
G, N = 3, 8   # the shape most tests share, so they share one compiled loop
WIDTH = 32    # reference forwards right-pad to this width: one compile (causal, so the padding is unseen)


def random_params(cfg, seed=0):
  """Like test_model.py's (norms 1 + noise, biases and weights normal with std 0.1: peaked, varied logits),
  drawn with numpy: model.init_params would compile for each new config, which costs seconds."""
  rng = np.random.RandomState(seed)
  def leaf(path, shape):
    return jnp.asarray(('norm' in jax.tree_util.keystr(path)) + 0.1 * rng.standard_normal(shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


PARAMS = random_params(CFG)


def full_logits(prompt, completion):
  """Logits (n, V) that predict each completion token, from one plain forward over prompt + completion."""
  seq = list(prompt) + list(completion)
  padded = jnp.asarray(seq + [0] * (WIDTH - len(seq)), jnp.int32)[None]
  return np.asarray(model.logits(PARAMS, CFG, padded))[0, len(prompt) - 1:len(seq) - 1]


def log_softmax(x):
  """Written out in float64: x - max - log sum exp(x - max)."""
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def check_statistics(r, rows_logits):
  """The rollout's entropy and self-certainty per real token against the tempered logits z of the full forward
  pass, (B, N, V): entropy -sum_v p_v log p_v, self-certainty logsumexp(z) - mean_v z; 0 where masked."""
  logp = log_softmax(rows_logits)
  entropy = -(np.exp(logp) * logp).sum(-1)
  z = np.asarray(rows_logits, np.float64)
  certainty = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) - z.mean(-1)
  assert r.entropy.dtype == np.float32 and r.self_certainty.dtype == np.float32
  for got, want in ((r.entropy, entropy), (r.self_certainty, certainty)):
    assert np.abs(np.where(r.mask, got - want, 0)).max() < 1e-4
    assert (got[~r.mask] == 0).all()


def rescore(r, params=PARAMS, cfg=CFG):
  """The documented rescoring recipe: prompt_tokens + tokens through model.forward with positions from valid ->
  the logits (B, N, V) that predicted each completion token."""
  tokens = np.concatenate([r.prompt_tokens, r.tokens], 1)
  valid = jnp.asarray(np.concatenate([r.prompt_valid, r.mask], 1))
  out, _ = model.forward(params, cfg, jnp.asarray(tokens), model.positions_from_valid(valid), valid)
  return np.asarray(out)[:, r.prompt_tokens.shape[1] - 1:-1]


def logprobs_of(logits, tokens):
  """log_softmax(logits) at each token: (B, N, V), (B, N) -> (B, N)."""
  return np.take_along_axis(log_softmax(logits), tokens[..., None], -1)[..., 0]


def run(prompts=PROMPTS, **kw):
  args = dict(num_samples=G, max_new_tokens=N, temperature=1.0, key=jax.random.key(0), eos_ids=[])
  args.update(kw)
  r = sample.sample(PARAMS, CFG, prompts, **args)
  return jax.tree.map(np.asarray, r)


def test_greedy_equals_step_by_step_argmax():
  r = run(temperature=0.0)
  for i, prompt in enumerate(PROMPTS):
    seq, want = list(prompt), []
    for _ in range(N):   # recompute from scratch each step
      padded = jnp.asarray(seq + [0] * (WIDTH - len(seq)), jnp.int32)[None]
      want.append(int(np.asarray(model.logits(PARAMS, CFG, padded))[0, len(seq) - 1].argmax()))
      seq.append(want[-1])
    ref = log_softmax(full_logits(prompt, want))[np.arange(N), want]   # greedy: log_softmax(logits)
    for row in range(i * G, (i + 1) * G):   # greedy: the G samples are all the same
      np.testing.assert_array_equal(r.tokens[row], want)
      assert np.abs(r.logprobs[row] - ref).max() < 1e-4
  assert r.mask.all() and (r.lengths == N).all()
  check_statistics(r, np.stack([full_logits(PROMPTS[row // G], r.tokens[row]) for row in range(len(r.tokens))]))


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_logprobs_equal_full_forward(temperature):
  r = run(temperature=temperature, key=jax.random.key(1))
  for row in range(len(PROMPTS) * G):
    prompt = PROMPTS[row // G]
    ref = log_softmax(full_logits(prompt, r.tokens[row]) / temperature)[np.arange(N), r.tokens[row]]
    assert np.abs(r.logprobs[row] - ref).max() < 1e-4
  tempered = np.stack([full_logits(PROMPTS[row // G], r.tokens[row]) for row in range(len(r.tokens))]) / temperature
  check_statistics(r, tempered)
  if temperature != 1.0:   # the statistics are those of the tempered distribution, which differ from the plain one
    assert np.abs(r.entropy - check_entropy(tempered * temperature)).max() > 1e-2
  assert np.abs(logprobs_of(rescore(r) / temperature, r.tokens) - r.logprobs).max() < 1e-4
  assert [p[-len(q):].tolist() for p, q in zip(r.prompt_tokens[::G], PROMPTS)] == PROMPTS


@pytest.mark.parametrize('num_layers', [2, model.UNROLL_LAYERS + 1])
def test_sampler_weights_and_deep_models(num_layers):
  """Shallow models take the sampler's weight copies from a call of their own, deep ones make them inside the
  sampler; either way the samples' log-probs are those of one plain forward over prompt + completion."""
  cfg = dataclasses.replace(CFG, num_layers=num_layers)
  params = random_params(cfg, seed=3)
  assert sample.weights_apart(cfg) == (num_layers <= model.UNROLL_LAYERS)
  if sample.weights_apart(cfg):
    prefill, decode = sample.sampler_weights(params, cfg)
    assert len(prefill) == len(decode) == num_layers
    np.testing.assert_array_equal(prefill[1]['down'], params['layers']['down'][1])
    kq = cfg.num_kv_heads * cfg.head_dim   # the last columns of the fused q, k, v: v's
    np.testing.assert_array_equal(decode[1]['qkv'][:, -kq:], params['layers']['v'][1].reshape(cfg.d_model, kq))
  r = jax.tree.map(np.asarray, sample.sample(params, cfg, PROMPTS[:2], num_samples=2, max_new_tokens=6,
                                             temperature=1.0, key=jax.random.key(4), eos_ids=[]))
  assert np.abs(logprobs_of(rescore(r, params, cfg), r.tokens) - r.logprobs).max() < 1e-4


def check_entropy(logits):
  logp = log_softmax(logits)
  return -(np.exp(logp) * logp).sum(-1)


def test_segments_equal_the_full_forward():
  assert sample.segment_ends(8) == [8] and sample.segment_ends(70) == [32, 64, 70]
  assert sample.segment_ends(128) == [32, 64, 96, 128] and sample.segment_ends(3072) == [768, 1536, 2304, 3072]
  # 70 new tokens: three segments, the cache grown twice inside the loop; rescored by one plain forward.
  r = run(prompts=PROMPTS[:2], max_new_tokens=70, key=jax.random.key(2))
  assert r.mask.all()
  assert np.abs(logprobs_of(rescore(r), r.tokens) - r.logprobs).max() < 1e-4


def test_bfloat16_policy_close_to_forward():
  """Real checkpoints are bf16: the decode step keeps weights, cache and matmuls in bf16 (scores, softmax and
  logits in float32). Rescored by the bf16 full forward, log-probs agree to bf16 rounding (8-bit mantissa,
  compounded over 2 layers: a few 1e-2 at most)."""
  cfg = dataclasses.replace(CFG, dtype='bfloat16', param_dtype='bfloat16')
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PARAMS)
  r = jax.tree.map(np.asarray, sample.sample(params, cfg, PROMPTS, num_samples=G, max_new_tokens=N,
                                             temperature=1.0, key=jax.random.key(2), eos_ids=[]))
  diff = np.abs(logprobs_of(rescore(r, params, cfg), r.tokens) - r.logprobs)
  assert diff.max() < 0.1 and diff.mean() < 0.02


def test_keys_decide_the_samples():
  a = run(key=jax.random.key(7))
  b = run(key=jax.random.key(7))
  c = run(key=jax.random.key(8))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert (a.tokens != c.tokens).mean() > 0.5
  for i in range(len(PROMPTS)):   # the G samples of one prompt differ from each other
    group = a.tokens[i * G:(i + 1) * G]
    assert len({tuple(t) for t in group}) == G


def test_eos_masks_pads_and_stops():
  """Many EOS ids so most rows stop early. The stream before the EOS is the one sampled without EOS ids
  (same keys per step), the EOS is kept and masked in, and everything after it is pad, masked out."""
  pad = 0
  eos = list(range(60, 98))                                  # about 40% of the vocabulary
  free = run(key=jax.random.key(3), eos_ids=[])
  r = run(key=jax.random.key(3), eos_ids=eos, pad_id=pad)
  assert r.tokens.shape == (len(PROMPTS) * G, N)
  stopped = 0
  for row in range(len(PROMPTS) * G):
    first = [n for n in range(N) if free.tokens[row, n] in eos]
    length = first[0] + 1 if first else N
    assert r.lengths[row] == length
    np.testing.assert_array_equal(r.tokens[row, :length], free.tokens[row, :length])
    np.testing.assert_array_equal(r.logprobs[row, :length], free.logprobs[row, :length])
    np.testing.assert_array_equal(r.entropy[row, :length], free.entropy[row, :length])
    assert (r.entropy[row, length:] == 0).all() and (r.self_certainty[row, length:] == 0).all()
    np.testing.assert_array_equal(r.mask[row], np.arange(N) < length)
    assert (r.tokens[row, length:] == pad).all() and (r.logprobs[row, length:] == 0).all()
    stopped += length < N
  assert stopped >= len(PROMPTS) * G // 2


def test_loop_stops_when_all_rows_are_done():
  """Every token is an EOS: one step, then the while_loop must exit (the rest is pad)."""
  r = run(eos_ids=list(range(CFG.vocab_size)), pad_id=0)
  assert (r.lengths == 1).all() and (r.tokens[:, 1:] == 0).all() and r.mask[:, 0].all() and not r.mask[:, 1:].any()


def test_compiles_once_per_bucket():
  kw = dict(num_samples=2, max_new_tokens=5)    # a shape no other test uses
  before = sample.TRACES
  run([[1, 2, 3], [4] * 9], **kw)
  run([[7] * 16, [8]], **kw)                   # other lengths, same bucket (16): no new trace
  run([[1, 2], [3, 4, 5]], key=jax.random.key(5), **kw)
  assert sample.TRACES - before == 1
  run([[1] * 17, [2] * 30], **kw)              # bucket 32
  assert sample.TRACES - before == 2
  assert sample.bucket(1) == 16 and sample.bucket(16) == 16 and sample.bucket(17) == 32 and sample.bucket(64) == 64


NUCLEUS_PROBS = np.array([0.05, 0.30, 0.02, 0.40, 0.08, 0.15])   # sorted: 0.40, 0.30, 0.15 | 0.08, 0.05, 0.02


def uniforms(seed, n):
  return 1.0 - jax.random.uniform(jax.random.key(seed), (n,))   # in (0, 1], as the sampler draws them


def test_inverse_cdf_sampling_frequencies():
  """Without top-p every token is drawn at its probability; a token of probability 0 (logit -inf) never is,
  even for the extreme uniforms 1 and the smallest positive one."""
  B = 20000
  probs = np.append(NUCLEUS_PROBS, 0.0)
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (B, 7))
  u = uniforms(0, B).at[:2].set(jnp.array([1.0, np.finfo(np.float32).tiny]))
  token, logp, entropy, certainty = sample.sample_token(logits, u, 1.0, 1.0, greedy=False, nucleus=False)
  token = np.asarray(token)
  assert 6 not in token
  # A zero-probability token adds nothing to the entropy (0 log 0 = 0) and makes the self-certainty infinite.
  np.testing.assert_allclose(np.asarray(entropy), -(NUCLEUS_PROBS * np.log(NUCLEUS_PROBS)).sum(), rtol=1e-5)
  assert np.isposinf(np.asarray(certainty)).all()
  np.testing.assert_allclose(np.bincount(token, minlength=7) / B, probs, atol=0.015)
  np.testing.assert_allclose(np.asarray(logp), np.log(probs[token]), atol=1e-5)


def test_top_p_draws_only_from_the_nucleus():
  """top_p = 0.8: 0.40 + 0.30 = 0.70 < 0.8, so the nucleus is the 3 tokens {3, 1, 5} (mass 0.85)."""
  B = 20000
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(NUCLEUS_PROBS, jnp.float32)), (B, 6))
  u = uniforms(0, B).at[0].set(1.0)   # u = 1: the last token of the nucleus, not the one after it
  token, logp, *_ = sample.sample_token(logits, u, 1.0, 0.8, greedy=False, nucleus=True)
  token = np.asarray(token)
  assert set(token.tolist()) == {1, 3, 5} and token[0] == 5
  freq = np.bincount(token, minlength=6) / B
  np.testing.assert_allclose(freq[[3, 1, 5]], NUCLEUS_PROBS[[3, 1, 5]] / 0.85, atol=0.015)
  np.testing.assert_allclose(np.asarray(logp), np.log(NUCLEUS_PROBS[token]), atol=1e-5)   # full distribution
  # top_p below the top token's mass: always the top token; temperature reshapes before the cut.
  token, *_ = sample.sample_token(logits, uniforms(1, B), 1.0, 0.1, greedy=False, nucleus=True)
  assert (np.asarray(token) == 3).all()
  token, *_ = sample.sample_token(logits, uniforms(2, B), 0.25, 0.9, greedy=False, nucleus=True)
  assert set(np.asarray(token).tolist()) == {1, 3}   # p^4: 0.40^4, 0.30^4 hold > 0.9 of the mass


def test_top_p_in_the_sampler_with_fixed_logits():
  """A policy whose logits are the same at every step: attention and MLP outputs are zero (o, down = 0), every
  embedding is the same unit vector, so the final hidden state is all ones and the lm_head sets the logits."""
  V, D = 6, 32
  cfg = model.Config(vocab_size=V, d_model=D, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  params = random_params(cfg)
  params['layers']['o'] = jnp.zeros_like(params['layers']['o'])
  params['layers']['down'] = jnp.zeros_like(params['layers']['down'])
  params['embed'], params['final_norm'] = jnp.ones((V, D)), jnp.ones((D,))
  target = np.log(NUCLEUS_PROBS).astype(np.float32)
  params['lm_head'] = jnp.broadcast_to(jnp.asarray(target) / D, (D, V))
  np.testing.assert_allclose(np.asarray(model.logits(params, cfg, jnp.asarray([[0, 4, 2]])))[0], [target] * 3,
                             atol=1e-4)
  r = sample.sample(params, cfg, [[0, 1], [2]], num_samples=64, max_new_tokens=N, temperature=1.0, top_p=0.8,
                    key=jax.random.key(0), eos_ids=[])
  tokens = np.asarray(r.tokens)
  assert set(tokens.ravel().tolist()) == {1, 3, 5}
  freq = np.bincount(tokens.ravel(), minlength=V) / tokens.size
  np.testing.assert_allclose(freq[[3, 1, 5]], NUCLEUS_PROBS[[3, 1, 5]] / 0.85, atol=0.03)
  np.testing.assert_allclose(np.asarray(r.logprobs), np.log(NUCLEUS_PROBS[tokens]), atol=1e-4)


@pytest.mark.parametrize('shape,names,types', [((8,), ('data',), None),
                                               ((4, 2), ('data', 'fsdp'), (AxisType.Auto, AxisType.Auto))])
def test_sharded_equals_unsharded(shape, names, types):
  mesh = jax.make_mesh(shape, names, axis_types=types)
  want = run(key=jax.random.key(4))
  params = jax.device_put(PARAMS, NamedSharding(mesh, PartitionSpec()))
  r = sample.sample(params, CFG, PROMPTS, num_samples=G, max_new_tokens=N, temperature=1.0, key=jax.random.key(4),
                    eos_ids=[], mesh=mesh)
  # Each device holds whole groups: rows [d * rows, (d + 1) * rows) with rows a multiple of G.
  for shard in r.tokens.addressable_shards:
    rows = shard.index[0]
    assert (rows.stop - rows.start) == len(PROMPTS) * G // shape[0] and rows.start % G == 0
  got = jax.tree.map(np.asarray, r)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  assert np.abs(got.logprobs - want.logprobs).max() < 1e-5
  with pytest.raises(ValueError, match=f'7 prompts do not divide over the {shape[0]}-way data axis'):
    sample.sample(params, CFG, [[1]] * 7, num_samples=G, max_new_tokens=8, temperature=1.0, key=jax.random.key(4),
                  eos_ids=[], mesh=mesh)


def test_generate_text(tmp_path):
  hf.build_char_tokenizer(str(tmp_path))
  text = hf.Text.load(str(tmp_path), chat_template=True)   # the char tokenizer has no template: raw prompts
  tok = text.tokenizer
  prompts = ['2+3=', 'What is 12-7?', 'x', 'Compute 4*4.', 'abc', '1+1+1=', 'Say hi', '99-9=']   # <= 14 chars
  texts, r, prompt_ids = sample.generate(PARAMS, CFG, text, prompts, num_samples=G, max_new_tokens=N,
                                         temperature=1.0, key=jax.random.key(0), return_rollout=True)
  assert prompt_ids == [tok(p)['input_ids'] for p in prompts]
  assert text.stop_ids == [1]
  tokens, lengths = np.asarray(r.tokens), np.asarray(r.lengths)
  for i, group in enumerate(texts):
    assert len(group) == G
    for g, out in enumerate(group):
      ids = tokens[i * G + g, :lengths[i * G + g]].tolist()
      assert out == tok.decode([t for t in ids if t != 1], skip_special_tokens=True) and 1 not in ids[:-1]
  assert texts == sample.generate(PARAMS, CFG, hf.Text(tok, [1]), prompts, num_samples=G, max_new_tokens=N,
                                  temperature=1.0, key=jax.random.key(0))
  # With a chat template, each prompt is wrapped as a user turn before tokenizing.
  tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
  _, _, wrapped = sample.generate(PARAMS, CFG, text, prompts, num_samples=G, max_new_tokens=N, temperature=1.0,
                                  key=jax.random.key(0), return_rollout=True)
  assert wrapped == [tok(f'[{p}]')['input_ids'] for p in prompts]


# A Qwen3 with q/k/v/o biases and Llama 3 rope scaling (original length 8, sequences up to 23): every branch of
# decode_step a family can take, in one compiled loop.
FAMILY_CFG = dataclasses.replace(CFG, family='qwen3', qkv_bias=True, o_bias=True, qk_norm=True,
                                 rope_theta=500000.0, rope_scaling=(8.0, 1.0, 4.0, 8))


def test_family_parts_in_the_decode_step():
  params = random_params(FAMILY_CFG, seed=3)
  r = jax.tree.map(np.asarray, sample.sample(params, FAMILY_CFG, PROMPTS, num_samples=G, max_new_tokens=N,
                                             temperature=1.0, key=jax.random.key(5), eos_ids=[]))
  logits = rescore(r, params, FAMILY_CFG)
  assert np.abs(logprobs_of(logits, r.tokens) - r.logprobs).max() < 1e-4
  check_statistics(r, logits)
