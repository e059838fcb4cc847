"""train.py and the SRT math it calls: advantages, KL, loss and rewards against numbers worked out by hand (the
format and soft-vote rewards on texts as the sampler extracts them); one RL step on fixed samples (labels, rewards,
refills, KL placement); real steps of the shipped policy built by train.setup (every reward and label source,
TTRL's split); the EMA teacher's placement and checkpoint; the sharded update against the single-device update;
--stop_on_collapse in-process with the alarm forced; a half-written checkpoint; the script itself in subprocesses
(every mode, bad inputs, NaN, the README's fork example)."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alarm
import data as data_lib
import hf
import model
import rewards
import rollouts
import sharding
import train
import update
import workdir as wd_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = 'rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1'

# ---------------------------------------------------------------------------------------------------------------
# The math, by hand


def test_rloo_and_grpo_by_hand():
  r = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
  # RLOO: R_i - mean of the other three. Row 0: 1 - 2/3, 0 - 1, ...; a unanimous row has no advantage.
  np.testing.assert_allclose(rewards.rloo(r), [[1 / 3, -1, 1 / 3, 1 / 3], [0, 0, 0, 0]], atol=1e-6)
  # GRPO: mean .75, unbiased std sqrt((3 * .0625 + .5625) / 3) = .5.
  np.testing.assert_allclose(rewards.grpo(r), [[.5, -1.5, .5, .5], [0, 0, 0, 0]], atol=1e-5)


def test_k3_by_hand():
  # pi = .5, ref = .25: r = .5, k3 = .5 - log .5 - 1 = .19315.
  np.testing.assert_allclose(update.k3(jnp.log(0.5), jnp.log(0.25)), 0.5 + np.log(2) - 1, rtol=1e-6)
  assert float(update.k3(jnp.log(0.3), jnp.log(0.3))) == 0.0


def fake_batch(old_logp, ref_logp, mask, adv, weight=None):
  mask = np.asarray(mask, np.float32)
  B, N = mask.shape
  return {'prompt_tokens': np.zeros((B, 1), np.int32), 'prompt_valid': np.ones((B, 1), bool),
          'tokens': np.zeros((B, N), np.int32), 'mask': mask, 'old_logp': np.asarray(old_logp, np.float32),
          'ref_logp': np.asarray(ref_logp, np.float32), 'advantages': np.asarray(adv, np.float32),
          'row_weight': np.ones(B, np.float32) if weight is None else np.asarray(weight, np.float32)}


@pytest.fixture
def fixed_logprobs(monkeypatch):
  """The model's log-probs replaced by given numbers (params['logp']), entropy 2, so the loss is worked out by hand."""
  monkeypatch.setattr(update, 'token_logprobs',
                      lambda params, cfg, pt, pv, t, m, temp: (params['logp'], jnp.full(t.shape, 2.0)))


def loss_of(logp, batch, temperature=1.0, clip_eps=0.2, kl_coef=0.0, entropy_coef=0.0):
  return update.policy_loss({'logp': jnp.asarray(logp, jnp.float32)}, None, batch, temperature=temperature,
                            clip_eps=clip_eps, kl_coef=kl_coef, entropy_coef=entropy_coef)


def test_policy_loss_token_mean_and_masks(fixed_logprobs):
  mask = [[1, 1, 0], [1, 0, 0]]
  logp = [[-1.0, -2.0, 100.0], [-0.5, 100.0, 100.0]]   # garbage where masked: must not leak (exp(100) = inf)
  batch = fake_batch(logp, logp, mask, adv=[1.0, -0.5])
  loss, aux = loss_of(logp, batch)
  # ratio 1 everywhere: per-token -A; tokens: -1, -1, +.5 over 3 response tokens -> -1.5 / 3.
  np.testing.assert_allclose(loss, -0.5, atol=1e-6)
  np.testing.assert_allclose(aux['entropy'], 2.0)
  # A zero-weight row (an unlabelled prompt) leaves the loss and the token count.
  batch['row_weight'] = np.array([1.0, 0.0], np.float32)
  np.testing.assert_allclose(loss_of(logp, batch)[0], -1.0, atol=1e-6)


def test_policy_loss_clipping_by_hand(fixed_logprobs):
  logp = np.log([[0.6], [0.2]])
  batch = fake_batch(np.log([[0.4], [0.4]]), logp, [[1.0], [1.0]], adv=[2.0, -1.0])   # ratios 1.5 and .5
  loss, aux = loss_of(logp, batch, clip_eps=0.2)
  # Row 0: A > 0, min(1.5 * 2, 1.2 * 2) = 2.4 -> -2.4. Row 1: A < 0, min(.5 * -1, .8 * -1) = -.8 -> +.8.
  np.testing.assert_allclose(loss, (-2.4 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(aux['clip_frac'], 1.0)


def test_kl_and_entropy_terms_in_loss(fixed_logprobs):
  logp = np.log([[0.5, 0.5]])
  batch = fake_batch(logp, np.log([[0.25, 0.5]]), [[1.0, 1.0]], adv=[0.0])
  kl_mean = (0.5 + np.log(2) - 1 + 0.0) / 2
  np.testing.assert_allclose(loss_of(logp, batch, kl_coef=0.1, entropy_coef=0.01)[0], 0.1 * kl_mean - 0.01 * 2.0,
                             atol=1e-6)
  np.testing.assert_allclose(loss_of(logp, batch, kl_coef=0.0, entropy_coef=0.01)[0], -0.01 * 2.0, atol=1e-6)


def test_token_logprobs_match_a_python_loop():
  cfg = model.Config(vocab_size=31, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=24)
  params = model.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda a: a * 20 if a.ndim > 1 else a, params)
  prompts = [[3, 4, 5], [6, 7]]
  comps = [[8, 9, 1], [10, 1, 0]]
  mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  pt = np.array([[3, 4, 5], [0, 6, 7]]); pv = np.array([[1, 1, 1], [0, 1, 1]], bool)
  logp, _ = update.token_logprobs(params, cfg, jnp.asarray(pt), jnp.asarray(pv), jnp.asarray(comps),
                                  jnp.asarray(mask), 0.7)
  for i in range(2):
    for t in range(int(mask[i].sum())):
      seq = prompts[i] + comps[i][:t]
      lg = np.asarray(model.logits(params, cfg, jnp.asarray([seq])))[0, -1] / 0.7
      ref = lg[comps[i][t]] - np.log(np.exp(lg - lg.max()).sum()) - lg.max()
      assert abs(float(logp[i, t]) - ref) < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# One RL step on fixed samples: the sampler, the reference scorer and the update replaced; the rest is real code.

N_TOKENS = 4


def make_group(example, answers, old_logp=-1.0, seed=0):
  n = len(answers)
  return rollouts.Group(
      example=example, texts=[f'\\boxed{{{a}}}' if a else 'no idea' for a in answers], answers=list(answers),
      tokens=np.arange(n * N_TOKENS).reshape(n, N_TOKENS).astype(np.int32) % 7,
      mask=np.ones((n, N_TOKENS), np.float32), logprobs=np.full((n, N_TOKENS), old_logp, np.float32),
      entropy=np.ones((n, N_TOKENS), np.float32), self_certainty=np.ones((n, N_TOKENS), np.float32),
      prompt_tokens=np.ones(2, np.int32), prompt_valid=np.ones(2, bool), verifier=None, seed=seed)


class FakeSampler:
  def __init__(self, answers, teacher_answers=None):
    self.answers, self.teacher_answers, self.calls = answers, teacher_answers or {}, []

  def sample(self, params, examples, key):
    self.calls.append(params)
    table = self.teacher_answers if params == 'teacher' else self.answers
    return [make_group(ex, table[ex.question]) for ex in examples]


def one_step(rl, answers, examples, *, label_source='policy', kl_in='reward', ref_logp=-1.0, teacher_answers=None):
  """rl_step with fakes -> (the batch the update received, metrics, sampler)."""
  got = {}

  def train_step(state, batch):
    got.update({k: np.asarray(v) for k, v in batch.items()})
    return state, {'loss': jnp.float32(0)}
  sampler = FakeSampler(answers, teacher_answers)
  s = train.Setup(rl=rl, label_source=label_source, kl_in=kl_in, mesh=sharding.make_mesh((1, 1, 1)),
                  sampler=sampler, train_step=train_step, score=lambda p, b: jnp.full(b['tokens'].shape, ref_logp),
                  ema=None, ref_params='teacher', trace_prompts=1)
  it = iter(examples)
  _, _, m, trace = train.rl_step(s, {'params': 'policy'}, lambda n: [next(it) for _ in range(n)], jax.random.key(0))
  return got, m, sampler


def examples_of(table, answers=None):
  return [data_lib.Example(question=q, answer=(answers or {}).get(q), prompt=q, target=None) for q in table]


def test_label_free_rewards_by_hand():
  ex = data_lib.Example(question='q', answer='3', prompt='q', target=None)
  g = make_group(ex, ['3', None, '4'])
  # Per-token statistics with masks: sample 0 has 2 real tokens, sample 1 has 4, sample 2 has 1; masked entries
  # hold garbage that must not leak into the means.
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)
  cert = np.array([[2.0, 4.0, 99, 99], [1.0, 1.0, 1.0, 5.0], [0.5, -99, -99, -99]], np.float32)
  ent = np.array([[0.2, 0.4, 99, 99], [1.0, 0.0, 0.0, 1.0], [0.3, 99, 99, 99]], np.float32)
  g = dataclasses.replace(g, mask=mask, self_certainty=cert, entropy=ent)
  np.testing.assert_allclose(rewards.REWARDS['self_certainty'].fn(g), [3.0, 2.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(rewards.REWARDS['neg_entropy'].fn(g), [-0.3, -0.5, -0.3], rtol=1e-6)
  # The label-free rewards train on every prompt; the vote's need a label.
  assert [k for k, r in rewards.REWARDS.items() if not r.needs_label] == ['self_certainty', 'neg_entropy', 'random',
                                                                           'format']


class FakeText:
  """The text boundary of a sampler whose completions are given texts."""
  stop_ids, pad_id = (), 0

  def __init__(self, texts):
    self.texts = texts

  def encode(self, prompts):
    return [[1]] * len(prompts)

  def decode(self, tokens, mask):
    return list(self.texts)


def sampled_group(monkeypatch, texts):
  """One Group as rollouts.Sampler makes it from completions that decode to `texts` (the model's sampling loop
  replaced): the answers are extracted the way training extracts them."""
  def sample(params, cfg, prompts, *, num_samples, **kw):
    B = len(prompts) * num_samples
    z = np.zeros((B, 3), np.float32)
    return rollouts.sample_lib.Rollout(tokens=np.zeros((B, 3), np.int32), logprobs=z, entropy=z, self_certainty=z,
                                       mask=np.ones((B, 3), np.float32), lengths=np.full(B, 3),
                                       prompt_tokens=np.ones((B, 1), np.int32), prompt_valid=np.ones((B, 1), bool))
  monkeypatch.setattr(rollouts.sample_lib, 'sample', sample)
  sampler = rollouts.Sampler(None, FakeText(texts), None, num_samples=len(texts), max_new_tokens=3, temperature=1.0)
  ex = data_lib.Example(question='3 + 4 =', answer='7', prompt='3 + 4 =', target=None)
  return sampler.sample(None, [ex], jax.random.key(0))[0]


def test_format_reward_on_sampled_texts(monkeypatch):
  """format pays 1 when the LAST box of the completion, wherever it is, holds a non-empty balanced answer."""
  g = sampled_group(monkeypatch, [
      '3 + 4 = 7. \\boxed{7}',           # a box at the end
      '3 + 4 = 7. \\boxed{7',            # the box never closes
      '3 + 4 = 7.',                      # no box
      '\\boxed{7}, since 3 + 4 = 7',     # a box, not at the end: it counts
      '\\boxed{7} or maybe \\boxed{8',   # the last box never closes: an earlier box that parses does not count
      'so \\boxed{}'])                   # an empty box
  assert g.answers == ['7', None, None, '7', None, None]
  np.testing.assert_array_equal(rewards.REWARDS['format'].fn(g), [1, 0, 0, 1, 0, 0])


def test_soft_vote_is_the_share_among_the_voters(monkeypatch):
  """An uneven group with an unparsed sample: ['1', '1', '2', None] (the second written 1.0). Three samples vote;
  the class of 1 holds 2 of the 3 voters, the class of 2 one, and the sample without an answer earns 0. (Shares
  among all four samples would be 1/2 and 1/4: the unparsed sample does not dilute the others.)"""
  g = sampled_group(monkeypatch, ['so \\boxed{1}', 'so \\boxed{1.0}', 'so \\boxed{2}', 'so 1 or 2'])
  assert g.answers == ['1', '1.0', '2', None]
  np.testing.assert_allclose(rewards.REWARDS['soft_vote'].fn(g), [2 / 3, 2 / 3, 1 / 3, 0.0], rtol=1e-6)


def test_random_reward_is_seeded_and_fair():
  ex = data_lib.Example(question='q', answer='3', prompt='q', target=None)
  coin = lambda seed: rewards.REWARDS['random'].fn(make_group(ex, ['3'] * 1000, seed=seed))
  np.testing.assert_array_equal(coin(7), coin(7))             # the same seed, the same rewards
  assert (coin(7) != coin(8)).mean() > 0.4                    # another seed, about half of them differ
  assert set(np.unique(coin(7))) == {0.0, 1.0}
  assert abs(coin(7).mean() - 0.5) < 0.05                     # Bernoulli(0.5): 3.2 standard errors at n = 1000


def test_self_and_gt_modes_differ_only_in_labels():
  answers = {'q1': ['7', '7', '3', None], 'q2': ['1/2', '0.5', '2', '\\frac{1}{2}']}
  # A data set whose true labels equal the policy's majority (in another form, for q2).
  examples = examples_of(answers, {'q1': '7', 'q2': '\\dfrac12'})
  rl = train.RLConfig(num_prompts=2, num_samples=4)
  batch_self, m_self, _ = one_step(rl, answers, examples, label_source='policy')
  batch_gt, m_gt, _ = one_step(dataclasses.replace(rl, mode='gt'), answers, examples, label_source='dataset')
  for k in batch_self:
    np.testing.assert_array_equal(batch_self[k], batch_gt[k], err_msg=k)
  # Rewards [[1 1 0 0], [1 1 0 1]] -> RLOO by hand: row 0: (4r - 2) / 3; row 1: (4r - 3) / 3.
  np.testing.assert_allclose(batch_self['advantages'], [2 / 3, 2 / 3, -2 / 3, -2 / 3, 1 / 3, 1 / 3, -1, 1 / 3],
                             atol=1e-6)
  assert m_self['pseudo_reward'] == m_gt['pseudo_reward'] == 5 / 8
  assert m_self['true_accuracy'] == 5 / 8 and m_self['label_accuracy'] == 1.0


def test_agreement_threshold_drops_and_refills():
  answers = {'a': ['1', '2', '3', '4'], 'b': ['5', '5', '5', '6'], 'c': ['1', '1', '1', '1'], 'd': ['9', '8', '9', '8']}
  rl = train.RLConfig(num_prompts=2, num_samples=4, agreement_threshold=0.6)
  batch, m, _ = one_step(rl, answers, examples_of(answers))
  # Round 1 (a: share .25, dropped; b: .75 kept), round 2 (c: 1.0 kept) fills the batch: b and c.
  np.testing.assert_allclose(batch['advantages'], [1 / 3, 1 / 3, 1 / 3, -1, 0, 0, 0, 0], atol=1e-6)
  np.testing.assert_array_equal(batch['row_weight'], np.ones(8))
  assert m['refill_rounds'] == 2 and m['labelled_fraction'] == 1.0


def test_unlabelled_prompt_trains_only_under_a_label_free_reward():
  answers = {'a': [None, None, None, None], 'b': ['5', '5', '5', '6']}
  batch, m, _ = one_step(train.RLConfig(num_prompts=2, num_samples=4), answers, examples_of(answers))
  np.testing.assert_array_equal(batch['row_weight'], [1, 1, 1, 1, 0, 0, 0, 0])   # labelled b first; nobody voted on a
  batch, m, _ = one_step(train.RLConfig(num_prompts=2, num_samples=4, reward='format'), answers, examples_of(answers))
  np.testing.assert_array_equal(batch['row_weight'], np.ones(8))
  assert m['pseudo_reward'] == 0.5   # format: 0 0 0 0 and 1 1 1 1


def test_kl_placement_is_its_own_setting():
  """--kl_in=reward subtracts kl_coef x each response's summed k3 from its reward before the advantage, whichever
  the advantage; --kl_in=loss leaves the advantages alone and puts the term in the loss (train.loss_fn)."""
  answers = {'q': ['1', '1', '2', '2']}
  rl = train.RLConfig(num_prompts=1, num_samples=4, kl_coef=1.0)
  # Row 1's tokens had log-prob log .25 under the policy, the reference says log .5: k3 = 2 - log 2 - 1 per token.
  logprobs = np.log([[.5] * 4, [.25] * 4, [.5] * 4, [.5] * 4])
  r = np.array([[1, 1, 0, 0]], np.float32)
  kl = np.array([[0, 4 * (2 - np.log(2) - 1), 0, 0]], np.float32)
  for advantage in ('rloo', 'grpo'):
    for kl_in, want in (('reward', r - kl), ('loss', r)):
      got = {}
      sampler = FakeSampler(answers)
      sampler.sample = lambda params, examples, key: [dataclasses.replace(make_group(examples[0], answers['q']),
                                                                          logprobs=logprobs)]
      s = train.Setup(rl=dataclasses.replace(rl, advantage=advantage), label_source='policy', kl_in=kl_in,
                      mesh=sharding.make_mesh((1, 1, 1)), sampler=sampler,
                      train_step=lambda st, b: (got.update(adv=np.asarray(b['advantages'])), (st, {}))[1],
                      score=lambda p, b: jnp.full(b['tokens'].shape, np.log(0.5)), ema=None, ref_params=None,
                      trace_prompts=0)
      train.rl_step(s, {'params': None}, lambda n: examples_of(answers), jax.random.key(0))
      np.testing.assert_allclose(got['adv'], rewards.ADVANTAGES[advantage].fn(want)[0], atol=1e-5,
                                 err_msg=f'{advantage} {kl_in}')
  # The loss side: the k3 term is in the loss exactly when --kl_in=loss, whichever the advantage.
  batch = fake_batch(np.log([[0.5]]), np.log([[0.25]]), [[1.0]], adv=[0.0])
  params = {'logp': jnp.log(jnp.array([[0.5]]))}
  for advantage in ('rloo', 'grpo'):
    for kl_in, want in (('loss', 0.5 + np.log(2) - 1), ('reward', 0.0)):
      fn = train.loss_fn(dataclasses.replace(rl, advantage=advantage), kl_in)
      with pytest.MonkeyPatch.context() as mp:
        mp.setattr(update, 'token_logprobs', lambda p, c, pt, pv, t, m, temp: (p['logp'], jnp.zeros(t.shape)))
        np.testing.assert_allclose(fn(params, None, batch)[0], want, atol=1e-6)


def test_teacher_labels_come_from_the_teacher():
  answers = {'q': ['1', '1', '1', '2']}
  batch, m, sampler = one_step(train.RLConfig(num_prompts=1, num_samples=4), answers, examples_of(answers),
                               label_source='teacher', teacher_answers={'q': ['2', '2', '3', '2']})
  assert sampler.calls == ['policy', 'teacher']
  np.testing.assert_allclose(batch['advantages'], rewards.rloo(np.array([[0, 0, 0, 1.0]]))[0], atol=1e-6)


def test_ttrl_votes_over_more_samples_than_it_trains_on():
  """--vote_samples=N: the label is the vote of all N samples, the update sees the first G."""
  answers = {'q': ['1', '2', '2', '2', '2', '2']}   # the first 2 alone tie 1-2 (tie: 1); all 6 say 2
  batch, m, _ = one_step(train.RLConfig(num_prompts=1, num_samples=2, vote_samples=6), answers, examples_of(answers))
  assert batch['tokens'].shape[0] == 2
  np.testing.assert_allclose(batch['advantages'], rewards.rloo(np.array([[0, 1.0]]))[0], atol=1e-6)
  # --vote_samples equal to --num_samples giving today's run is checked on the real sampler, which train.setup
  # builds from it: test_vote_samples_equal_to_num_samples_is_todays_step.


def test_metrics_count_full_credit_only():
  """true_accuracy and label_accuracy use the task's verifier at full credit, as eval.py does."""
  ex = data_lib.Example(question='q', answer='10', prompt='q', target=None)
  verifier = lambda answer, gold: {'10': 1.0, 'ten': 1.0, '10.0': 0.5}.get(answer, 0.0)
  g = dataclasses.replace(make_group(ex, ['ten', 'ten', '10.0', '3']), verifier=verifier, label='ten', share=0.5,
                          labelled=True)
  m = rollouts.batch_metrics([g], np.zeros((1, 4)), np.ones(1), 4)
  assert m['true_accuracy'] == 0.5 and m['label_accuracy'] == 1.0


def history(kls, lengths, parse=None):
  parse = parse or [1.0] * len(kls)
  return [{'step': i + 1, 'kl': k, 'response_length': n, 'parse_rate': p, 'majority_share': 0.7}
          for i, (k, n, p) in enumerate(zip(kls, lengths, parse))]


def test_collapse_alarm_on_hand_made_histories():
  healthy = history([0.01 + 0.03 * (i % 5 == 0) for i in range(60)], [35 + (i % 3) for i in range(60)])
  assert alarm.first_alarm(healthy) is None   # KL spikes of one step and length noise average out
  # The KL climbs by 0.025 a step from step 11 (kl_t = 0.025 (t - 10)). Its 5-step mean: step 14 0.05, step 15
  # 0.075 (0.025 .. 0.125), step 16 0.1: fires at 16.
  assert alarm.first_alarm(history([0.01] * 10 + [0.025 * (t - 10) for t in range(11, 31)], [35] * 30)) == 16
  # Responses shrinking from 32 tokens by one a step from step 11: the 5-step mean is 29 (9.4% down) at step 15
  # (31 .. 27) and 28 (12.5%) at step 16: fires at 16. Growing works the same way.
  assert alarm.first_alarm(history([0.01] * 20, [32] * 10 + [32 - t for t in range(1, 11)])) == 16
  assert alarm.first_alarm(history([0.01] * 20, [32] * 10 + [32 + t for t in range(1, 11)])) == 16
  # Boxed answers falling from all to 0.7 at step 11: the 5-step mean 0.94 (step 11) .. 0.88 (step 12) < 0.9.
  assert alarm.first_alarm(history([0.01] * 20, [35] * 20, [1.0] * 10 + [0.7] * 10)) == 12
  assert alarm.first_alarm(healthy[:9]) is None   # too short for a baseline
  assert alarm.first_alarm(history([1.0] * 20, [35] * 20)) == 10   # however high the KL: not before step 10


def test_held_out_and_validation_prompts_never_train():
  # Sums of two one-digit numbers: 200 distinct prompts, so 400 draws repeat most of the 64 held-out ones.
  drawn = data_lib.load_examples(TASK, size=400, seed=0)
  kw = dict(mode='self', seed=0, size=400, eval_prompts=64, val_prompts=16)
  train_examples, eval_examples, val_examples, _ = data_lib.load_splits(TASK, **kw)
  kept = {ex.question for ex in eval_examples + val_examples}
  assert sum(ex.question in kept for ex in drawn) > 50          # the overlap a small task would have
  assert [ex for ex in drawn if ex.question not in kept] == train_examples   # all of it removed, order kept
  with pytest.raises(ValueError, match='every training prompt'):
    data_lib.load_splits(TASK, **dict(kw, size=1, eval_prompts=2000))   # all 200


def test_unknown_reward_advantage_and_kl_in_are_errors_naming_the_flag():
  dc, run = train.DataConfig(), train.RunConfig()
  for field, value in (('reward', 'nope'), ('advantage', 'ppo'), ('kl_in', 'both'), ('label_source', 'oracle')):
    with pytest.raises(train.FlagError, match=f'--{field}=.{value}'):
      train.validate(train.RLConfig(**{field: value}), dc, run, 1)
  with pytest.raises(train.FlagError, match='--vote_samples=4 must be 0 or >= --num_samples=8'):
    train.validate(train.RLConfig(vote_samples=4), dc, run, 1)
  with pytest.raises(train.FlagError, match='--num_samples=1: RL needs at least 2 samples per prompt'):
    train.validate(train.RLConfig(num_samples=1), dc, run, 1)


# ---------------------------------------------------------------------------------------------------------------
# Sharding: the step on 8 fake CPU devices equals the single-device step


def test_ema_teacher_by_hand():
  mesh = sharding.make_mesh((1, 1, 1))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  ema = update.make_ema_update({'w': shard})
  teacher = {'w': jnp.array([1.0, 2.0])}
  out = ema(teacher, {'w': jnp.array([3.0, -2.0])}, 0.9)
  np.testing.assert_allclose(out['w'], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2], rtol=1e-6)   # 1.2, 1.6


def test_ema_teacher_is_placed_like_the_policy_and_survives_a_resume(tmp_path):
  """--label_source=ema on a 2x4 data x fsdp mesh of fake devices: train.setup places the teacher leaf by leaf as
  the policy is placed (split, not replicated), the update keeps it there, and a checkpoint brings it back, values
  and placement, into the state a rerun's setup makes (what train.train restores into)."""
  rl = train.RLConfig(label_source='ema', num_prompts=8, num_samples=4)
  dc, run = train.DataConfig(model=SHIPPED, data=TASK), train.RunConfig(workdir=str(tmp_path), mesh='2,4,1')
  s, state, _, _ = train.setup(rl, dc, run, (2, 4, 1), None)
  placement = lambda tree: jax.tree.map(lambda a: a.sharding, tree)
  assert placement(state['teacher']) == placement(state['params'])
  assert any(not a.sharding.is_fully_replicated for a in jax.tree.leaves(state['teacher']))   # the check has teeth
  jax.tree.map(np.testing.assert_array_equal, state['teacher'], state['params'])   # it starts as the policy
  moved = jax.tree.map(lambda p: p + 1.0, state['params'])
  state['teacher'] = s.ema(state['teacher'], moved, 0.5)
  assert placement(state['teacher']) == placement(state['params'])
  teacher = jax.tree.map(np.asarray, state['teacher'])
  jax.tree.map(lambda t, p: np.testing.assert_allclose(t, np.asarray(p) + 0.5, rtol=1e-6, atol=1e-6), teacher,
               state['params'])
  wd_lib.save(wd_lib.checkpoint_manager(str(tmp_path)), 3, state, 24)
  _, rerun, _, _ = train.setup(rl, dc, run, (2, 4, 1), None)
  restored, step, data_pos = wd_lib.restore(wd_lib.checkpoint_manager(str(tmp_path)), rerun)
  assert (step, data_pos) == (3, 24)
  assert placement(restored['teacher']) == placement(rerun['params'])
  jax.tree.map(np.testing.assert_array_equal, restored['teacher'], teacher)


def test_indivisible_shapes_are_errors_not_replication():
  cfg = model.Config(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  with pytest.raises(ValueError, match="heads' of size [24] does not divide over mesh axes tensor"):
    sharding.param_shardings(cfg, sharding.make_mesh((1, 1, 8)))
  with pytest.raises(train.FlagError, match='--num_prompts=6 does not divide over the 4-way data axis'):
    train.validate(train.RLConfig(num_prompts=6), train.DataConfig(), train.RunConfig(mesh='4,2,1'), 8)
  with pytest.raises(train.FlagError, match='--mesh'):
    train.validate(train.RLConfig(), train.DataConfig(), train.RunConfig(mesh='3,1,1'), 8)


# ---------------------------------------------------------------------------------------------------------------
# The script, in subprocesses


def run_train(*args, timeout=600, check=True, env=None):
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu', **(env or {}))
  p = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args], capture_output=True, text=True,
                     timeout=timeout, env=env, cwd=ROOT)
  if check and p.returncode != 0:
    raise AssertionError(f'train.py {" ".join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
  return p


SHIPPED = train.EMBEDDED_WARMSTART   # the embedded default's warm start: a tiny policy that boxes its answers


@pytest.fixture(scope='module')
def warm(tmp_path_factory):
  """A short supervised run of the tiny policy from scratch: an sft workdir with checkpoints."""
  wd = str(tmp_path_factory.mktemp('sft'))
  run_train('--mode=sft', f'--data={TASK}', '--steps=20', '--num_prompts=32', '--learning_rate=3e-3',
            '--max_new_tokens=24', f'--workdir={wd}', '--checkpoint_every=10')
  return wd


RL_ARGS = ['--steps=4', '--num_prompts=4', '--num_samples=4', '--max_new_tokens=24', '--learning_rate=1e-3',
           '--eval_prompts=8', '--eval_samples=2', f'--data={TASK}', '--data_size=64', f'--model={SHIPPED}']
read_jsonl = wd_lib.read_jsonl


def test_help_shows_each_flags_own_text_and_the_embedded_defaults():
  p = run_train('--help', check=False)
  out = ' '.join((p.stdout + p.stderr).split())   # absl wraps the help text
  assert ("--learning_rate: AdamW learning rate, constant (the paper's for 7B models) [--model=tiny --mode=self|gt: "
          "5e-05] (default: '1e-06')") in out, out
  assert '--reward: one of rewards.REWARDS' in out and 'RLConfig.mode' not in out


@pytest.mark.slow
def test_sft_writes_checkpoint_and_export(warm):
  assert os.path.exists(os.path.join(warm, 'hf', 'model.safetensors'))
  rows = read_jsonl(os.path.join(warm, 'metrics.jsonl'))
  assert len(rows) == 20 and rows[-1]['loss'] < rows[0]['loss'] * 0.7
  assert sorted(int(s) for s in os.listdir(os.path.join(warm, 'checkpoints')) if s.isdigit())[-1] == 20


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['self', 'gt'])
def test_rl_modes_end_to_end(tmp_path, mode):
  wd = str(tmp_path / mode)
  # gt also evaluates 4 labelled validation prompts every 2 steps and picks an early-stopping step.
  extra = ['--label_source=teacher'] if mode == 'self' else ['--val_prompts=4', '--eval_every=2']
  p = run_train(f'--mode={mode}', f'--workdir={wd}', '--kl_coef=0.01', *RL_ARGS, *extra)
  rows = read_jsonl(os.path.join(wd, 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [1, 2, 3, 4]
  for key in ('pseudo_reward', 'majority_share', 'labelled_fraction', 'true_accuracy', 'label_accuracy',
              'response_length', 'entropy', 'kl', 'parse_rate', 'rollout_time', 'update_time', 'tokens_per_s',
              'collapse_alarm'):
    assert key in rows[0], key
  assert rows[0]['parse_rate'] > 0.5   # the warm start taught the format
  summary = json.load(open(os.path.join(wd, 'summary.json')))
  assert set(summary['before']) == {'avg@k', 'maj@k', 'pass@k', 'parse_rate'} and summary['k'] == 2
  assert set(summary['gain']) == {'avg@k', 'maj@k', 'pass@k'} and 'collapse_step' in summary
  if mode == 'gt':
    val = [(0, summary['val_before']['avg@k']), (2, rows[1]['val_avg@k']), (4, summary['val_after']['avg@k'])]
    assert summary['val_best_step'] == max(val, key=lambda sv: (sv[1], -sv[0]))[0]
    assert 'early stopping on 4 labelled prompts picks step' in p.stdout
  trace = read_jsonl(os.path.join(wd, 'trace.jsonl'))
  assert trace[0]['samples'][0]['text'] and 'label' in trace[0]
  assert os.path.exists(os.path.join(wd, 'hf', 'model.safetensors'))
  assert os.path.exists(os.path.join(wd, 'training_curves.png'))
  assert 'step 4/4' in p.stdout


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
  """(rl, dc, run, Setup, state) of train.setup on the shipped policy, 4 prompts x 4 samples: the real sampler,
  reference scorer and update step, compiled on first use and shared by the tests that step it."""
  rl = train.RLConfig(num_prompts=4, num_samples=4, max_new_tokens=24, learning_rate=1e-3, steps=2)
  dc = train.DataConfig(model=SHIPPED, data=TASK)
  run = train.RunConfig(workdir=str(tmp_path_factory.mktemp('shipped')), mesh='1,1,1')
  s, state, _, _ = train.setup(rl, dc, run, (1, 1, 1), None)
  return rl, dc, run, s, state


def fresh(state):
  """A copy of a training state: the update step donates the one it is given."""
  return jax.tree.map(jnp.copy, state)


@pytest.mark.slow
def test_each_reward_and_label_source_runs_two_steps(shipped):
  """Every reward, both teachers and TTRL's split, two real steps each on the shipped policy: the jitted sampler,
  the labels, the rewards, the reference scorer and the update, compiled once and shared (what changes between
  them is host code, except TTRL's wider sampler and the EMA teacher's state, which train.setup builds)."""
  TRAIN = data_lib.load_examples(TASK, size=64, seed=0)
  rl, dc, run, s, state0 = shipped
  cases = [dict(reward=r) for r in rewards.REWARDS] + [dict(label_source='teacher'), dict(label_source='ema'),
                                                       dict(vote_samples=8)]
  for case in cases:
    rl_case = dataclasses.replace(rl, **case)
    if case.get('label_source') == 'ema' or 'vote_samples' in case:   # a wider sampler; the teacher is state
      s_case, state, _, _ = train.setup(rl_case, dc, run, (1, 1, 1), None)
    else:   # what setup would build: only host code reads the reward and the fixed teacher
      s_case, state = dataclasses.replace(s, rl=rl_case, label_source=rl_case.label_source), fresh(state0)
    assert s_case.sampler.kw['num_samples'] == case.get('vote_samples', 4), case
    stream = data_lib.PromptStream(TRAIN, 0)
    for step in range(2):
      state, aux, m, trace = train.rl_step(s_case, state, stream.take, jax.random.key(step))
      assert np.isfinite(float(aux['loss'])) and np.isfinite(m['pseudo_reward']), case
      if case.get('reward') == 'self_certainty':   # logsumexp(z) - mean(z) >= max(z) - mean(z) >= 0
        assert m['pseudo_reward'] > 0, case
      elif case.get('reward') == 'neg_entropy':
        assert m['pseudo_reward'] < 0, case
      else:
        assert 0.0 <= m['pseudo_reward'] <= 1.0, case
      assert len(trace[0]['samples']) == 4, case   # the samples that train (TTRL's other 4 only voted)
    if case.get('label_source') == 'ema':   # the teacher moved towards the policy, and only a little
      moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state['teacher']),
                                                              jax.tree.leaves(state0['params'])))
      assert 0 < moved < 1e-2


@pytest.mark.slow
def test_vote_samples_equal_to_num_samples_is_todays_step(shipped):
  """--vote_samples=G against --vote_samples unset (0), both through train.setup, which builds the sampler from
  it: the same sampler arguments, and one real step under the same key gives the same batch, metrics, trace and
  updated policy."""
  TRAIN = data_lib.load_examples(TASK, size=64, seed=0)
  rl, dc, run, s_unset, state_unset = shipped
  assert rl.vote_samples == 0
  s_equal, state_equal, _, _ = train.setup(dataclasses.replace(rl, vote_samples=rl.num_samples), dc, run, (1, 1, 1),
                                           None)
  assert s_equal.sampler.kw == s_unset.sampler.kw and s_equal.sampler.cfg == s_unset.sampler.cfg
  out = []
  for s, state in ((s_unset, fresh(state_unset)), (s_equal, state_equal)):
    batches = []

    def record(state, batch, step=s.train_step, batches=batches):
      batches.append(jax.tree.map(np.asarray, batch))
      return step(state, batch)
    s = dataclasses.replace(s, train_step=record)
    state, aux, m, trace = train.rl_step(s, state, data_lib.PromptStream(TRAIN, 0).take, jax.random.key(3))
    m = {k: v for k, v in m.items() if k != 'rollout_time'}
    out.append((batches[0], jax.tree.map(np.asarray, state['params']), float(aux['loss']), m, trace))
  (batch_a, params_a, loss_a, m_a, trace_a), (batch_b, params_b, loss_b, m_b, trace_b) = out
  assert sorted(batch_a) == sorted(batch_b)
  for k in batch_a:
    np.testing.assert_array_equal(batch_a[k], batch_b[k], err_msg=k)
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert loss_a == loss_b and m_a == m_b and trace_a == trace_b


@pytest.mark.slow
def test_stop_on_collapse_keeps_the_last_checkpoint_before_the_alarm(tmp_path, monkeypatch, capsys):
  """--stop_on_collapse, in-process through train.train with the alarm forced to fire at a chosen step and
  checkpoints every 2 steps: the run stops at the alarm's step without saving it, and the policy evaluated
  'after' and exported is the last checkpoint before the alarm (the starting policy when there is none yet)."""
  fire_at = {}
  monkeypatch.setattr(alarm, 'collapse_alarm', lambda history: history[-1]['step'] >= fire_at['step'])
  stepped, evaluated = [], {}   # the policy after each step; the policy each evaluation saw, by tag
  rl_step, evaluate = train.rl_step, train.evaluate

  def step_and_record(s, state, take, key):
    out = rl_step(s, state, take, key)
    stepped.append(jax.tree.map(np.asarray, out[0]['params']))
    return out

  def evaluate_and_record(s, params, examples, dc, tag):
    evaluated[tag] = jax.tree.map(np.asarray, params)
    return evaluate(s, params, examples, dc, tag)
  monkeypatch.setattr(train, 'rl_step', step_and_record)
  monkeypatch.setattr(train, 'evaluate', evaluate_and_record)
  rl = train.RLConfig(num_prompts=4, num_samples=4, max_new_tokens=24, learning_rate=1e-3, steps=6)
  dc = train.DataConfig(model=SHIPPED, data=TASK, data_size=64, eval_prompts=4, eval_samples=2)
  splits = data_lib.load_splits(TASK, mode='self', seed=0, size=64, eval_prompts=4, val_prompts=0)
  for alarm_step, kept in ((3, 2), (1, 0)):
    fire_at['step'] = alarm_step
    stepped.clear(), evaluated.clear()
    wd = str(tmp_path / f'alarm_at_{alarm_step}')
    run = train.RunConfig(workdir=wd, mesh='1,1,1', checkpoint_every=2, stop_on_collapse=True)
    summary, hf_dir = train.train(rl, dc, run, (1, 1, 1), splits)
    rows = read_jsonl(os.path.join(wd, 'metrics.jsonl'))
    assert [r['step'] for r in rows] == list(range(1, alarm_step + 1)) and len(stepped) == alarm_step
    assert [r['collapse_alarm'] for r in rows] == [0] * (alarm_step - 1) + [1]
    assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ([str(kept)] if kept else [])
    # summary.json: where it stopped, which policy it kept, and the alarm's first step.
    written = json.load(open(os.path.join(wd, 'summary.json')))
    assert written == json.loads(json.dumps(summary))
    assert (written['steps'], written['stopped_at'], written['restored_step']) == (alarm_step, alarm_step, kept)
    assert written['collapse_step'] == alarm_step and 'after' in written and 'gain' in written
    want = stepped[kept - 1] if kept else evaluated['before']   # the checkpoint of step `kept`, or the start
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stepped[-1]), jax.tree.leaves(want)))
    jax.tree.map(np.testing.assert_array_equal, evaluated['after'], want)
    _, exported = hf.load_checkpoint(hf_dir)
    jax.tree.map(np.testing.assert_array_equal, exported, want)
    said = ('the checkpoint of step 2' if kept else 'the starting policy (no checkpoint yet)')
    assert f'collapse alarm at step {alarm_step}: stopping (--stop_on_collapse); {said}' in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize('family', ['qwen3', 'llama'])
def test_two_steps_on_a_tiny_random_checkpoint_of_each_family(tmp_path, family):
  """A random Qwen3 (q/k norms) and a random Llama 3 (llama3 rope scaling) checkpoint written by transformers,
  with the character tokenizer: --mode=self loads, samples, trains two steps and exports the family again."""
  import torch
  import transformers
  kw = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
  if family == 'qwen3':
    config = transformers.Qwen3Config(head_dim=16, **kw)
    cls = transformers.Qwen3ForCausalLM
  else:
    config = transformers.LlamaConfig(rope_parameters=dict(rope_type='llama3', rope_theta=500000.0, factor=8.0,
                                                           low_freq_factor=1.0, high_freq_factor=4.0,
                                                           original_max_position_embeddings=16), **kw)
    cls = transformers.LlamaForCausalLM
  torch.manual_seed(0)
  path = str(tmp_path / family)
  cls(config).save_pretrained(path)
  hf.build_char_tokenizer(path)
  wd = str(tmp_path / 'run')
  args = [a for a in RL_ARGS if not a.startswith('--model')] + [f'--model={path}', '--steps=2', '--eval_prompts=0']
  run_train('--mode=self', f'--workdir={wd}', *args)
  assert [r['step'] for r in read_jsonl(os.path.join(wd, 'metrics.jsonl'))] == [1, 2]
  cfg, _ = hf.load_checkpoint(os.path.join(wd, 'hf'))
  assert cfg.family == family and transformers.AutoConfig.from_pretrained(os.path.join(wd, 'hf')).model_type == family


FORK_SNIPPET = re.compile(r'<!-- fork-example -->\n```python\n(.*?)```', re.S)


@pytest.mark.slow
def test_readme_fork_example_runs(tmp_path):
  """The README's "Fork it" reward, as written there, added to rewards.py's table and run for two steps."""
  snippet = FORK_SNIPPET.search(open(os.path.join(ROOT, 'README.md')).read()).group(1)
  wd = str(tmp_path / 'fork')
  script = (f'import sys; sys.path.insert(0, {ROOT!r}); import rewards\n'
            f'exec(compile({snippet!r}, "README", "exec"), rewards.__dict__)\n'
            f'import train; from absl import app\n'
            f'sys.argv = ["train.py", "--reward=vote_short", "--workdir={wd}", ' + ', '.join(
                repr(a) for a in [*RL_ARGS, '--steps=2', '--eval_prompts=0']) + ']\napp.run(train.main)\n')
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  p = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
  trace = read_jsonl(os.path.join(wd, 'trace.jsonl'))
  for t in trace:   # agreement minus 0.001 per token: no reward is a whole number any more
    assert all(s['reward'] != round(s['reward']) for s in t['samples'])


def test_half_written_checkpoint_is_never_loaded(tmp_path):
  """orbax writes a step under a temporary name and renames it when complete; a leftover temporary directory
  (the state a kill mid-save leaves) is not a step the manager lists."""
  wd_lib.save(wd_lib.checkpoint_manager(str(tmp_path)), 2, {'x': jnp.ones(3)}, 8)
  os.makedirs(tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp-1234' / 'state')
  assert wd_lib.checkpoint_manager(str(tmp_path)).latest_step() == 2


def checkpoint_fingerprint(wd):
  out = {}
  for root, _, files in os.walk(os.path.join(wd, 'checkpoints')):
    for f in files:
      st = os.stat(os.path.join(root, f))
      out[os.path.join(root, f)] = (st.st_size, st.st_mtime_ns)
  return out


BAD_FILES = {
    'missing_field.jsonl': (b'{"question": "1 + 1 =", "answer": "2"}\n{"answer": "3"}\n', r'missing_field.jsonl.*2'),
    'empty.jsonl': (b'', r'empty.jsonl'),
    'latin1.jsonl': (b'{"question": "caf\xe9 =", "answer": "1"}\n', r'latin1.jsonl.*1'),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(BAD_FILES))
def test_bad_data_files_fail_before_compile_and_keep_checkpoints(warm, tmp_path, name):
  content, pattern = BAD_FILES[name]
  (tmp_path / name).write_bytes(content)
  before = checkpoint_fingerprint(warm)
  p = run_train('--mode=sft', f'--data={tmp_path / name}', f'--workdir={warm}', '--steps=21', check=False)
  assert p.returncode != 0
  assert re.search(pattern, p.stderr), p.stderr[-2000:]
  assert 'Traceback' not in p.stderr
  assert checkpoint_fingerprint(warm) == before


@pytest.mark.slow
def test_bad_flags_and_foreign_workdir(warm, tmp_path):
  """One of each way a run is refused before it starts, as the user sees it: a one-line error, no traceback, and
  the checkpoints there untouched. (Each flag's own checks are tested in-process, on train.validate.)"""
  before = checkpoint_fingerprint(warm)
  cases = [(['--data=rg:no_such_task'], 'no_such_task'),
           (['--mesh=4,1,1'], '--mesh'),
           (['--mode=self', f'--model={tmp_path}'], '--model'),
           # the warm-start workdir belongs to an sft run of the tiny policy: a self run there is refused
           (['--mode=self', f'--model={SHIPPED}', f'--data={TASK}'], '--workdir')]
  for args, pattern in cases:
    p = run_train(f'--workdir={warm}', *args, check=False)
    assert p.returncode != 0 and pattern in p.stderr, (args, p.stderr[-2000:])
    assert 'Traceback' not in p.stderr, (args, p.stderr[-2000:])
  assert checkpoint_fingerprint(warm) == before


@pytest.mark.slow
def test_nan_stops_the_run_and_keeps_last_good_checkpoint(tmp_path):
  wd = str(tmp_path / 'nan')
  # A learning rate of 1e30 makes the weights overflow: the first step is finite, the second is not.
  p = run_train('--mode=gt', f'--workdir={wd}', *RL_ARGS, '--learning_rate=1e30',
                '--checkpoint_every=1', '--eval_prompts=0', check=False)
  assert p.returncode != 0
  assert 'non-finite' in p.stderr and 'last good checkpoint' in p.stderr
  steps = sorted(int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit())
  assert steps and max(steps) < 4
