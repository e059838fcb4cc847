"""Groups: a prompt's sampled completions with everything the learner and the logs know about them, and the
arrays the update step takes.

    sampler = Sampler(cfg, text, mesh, num_samples=8, max_new_tokens=48, temperature=1.0, verifier=None)
    groups = sampler.sample(params, examples, key)      # one Group per example, G rows each
    groups[0].answers                                    # ['8', '8', '12', None, ...]
    batch = update_batch(groups, num_samples=8)          # (P * G, ...) arrays: tokens, mask, old_logp, ...

A Group is the unit every SRT ablation works on: a label source labels it (rewards.LABEL_SOURCES), a reward
turns it into one number per sample (rewards.REWARDS). It carries the texts, the extracted answers and the
per-token statistics the sampler computed while sampling (log-probs, entropy, self-certainty), so a reward that
needs them costs no second forward pass.
"""
import dataclasses
from typing import Callable

import jax
import numpy as np

import data as data_lib
import sample as sample_lib
import sharding
import vote

Verifier = Callable[[str, str], float]


@dataclasses.dataclass(frozen=True)
class Group:
  """One prompt's n sampled completions (rows), and after step 2 its label."""
  example: data_lib.Example
  texts: list[str]                 # n decoded completions (stop tokens removed)
  answers: list[str | None]        # their final \boxed{} answers; None: no answer (it does not vote)
  tokens: np.ndarray               # (n, N) int32 sampled tokens
  mask: np.ndarray                 # (n, N) float32, 1 for real tokens (up to and including the stop token)
  logprobs: np.ndarray             # (n, N) log-prob of each token under the sampling distribution
  entropy: np.ndarray              # (n, N) entropy of each next-token distribution
  self_certainty: np.ndarray       # (n, N) logsumexp(z) - mean(z) of each next-token distribution's logits z
  prompt_tokens: np.ndarray        # (Tp,) int32 left-padded prompt
  prompt_valid: np.ndarray         # (Tp,) bool
  verifier: Verifier | None        # the task's scorer against a gold answer (None: vote.equivalent)
  seed: int                        # randomness of this prompt at this step (the random reward)
  label: str | None = None         # the pseudo-label (step 2); None: nobody voted / no label
  share: float = 0.0               # the label's vote share (the policy's own majority share for dataset labels)
  judge: Verifier | None = None    # how agreement with the label is decided (None: vote.equivalent)
  labelled: bool = False           # a label exists and its share passed the agreement threshold

  def per_sample(self, x: np.ndarray) -> np.ndarray:
    """A per-token statistic (n, N) averaged over each sample's real tokens -> (n,)."""
    return (x * self.mask).sum(1) / np.maximum(self.mask.sum(1), 1.0)

  def correct(self) -> np.ndarray:
    """(n,) full-credit correctness against the hidden true answer (logged, never seen by the learner)."""
    return vote.correct(self.answers, self.example.answer, self.verifier)


class Sampler:
  """Samples groups for a list of examples: prompts through the text boundary, the jitted sampler, answers."""

  def __init__(self, cfg, text, mesh, *, num_samples, max_new_tokens, temperature, top_p=1.0, verifier=None):
    self.cfg, self.text, self.mesh, self.verifier = cfg, text, mesh, verifier
    self.kw = dict(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)

  def sample(self, params, examples: list[data_lib.Example], key) -> list[Group]:
    G = self.kw['num_samples']
    ro = sample_lib.sample(params, self.cfg, self.text.encode([ex.prompt for ex in examples]), key=key,
                           eos_ids=self.text.stop_ids, pad_id=self.text.pad_id, mesh=self.mesh,
                           batch_axes=sharding.RULES['batch'], **self.kw)
    ro = {k: sharding.host_array(getattr(ro, k)) for k in ('tokens', 'logprobs', 'mask', 'entropy',
                                                          'self_certainty', 'prompt_tokens', 'prompt_valid')}
    texts = self.text.decode(ro['tokens'], ro['mask'])
    seeds = np.random.SeedSequence(np.asarray(jax.random.key_data(key)).ravel().tolist()).generate_state(
        len(examples))
    groups = []
    for i, ex in enumerate(examples):
      rows = slice(i * G, (i + 1) * G)
      groups.append(Group(
          example=ex, texts=texts[rows], answers=[vote.extract_answer(t) for t in texts[rows]],
          tokens=ro['tokens'][rows].astype(np.int32), mask=ro['mask'][rows].astype(np.float32),
          logprobs=ro['logprobs'][rows], entropy=ro['entropy'][rows], self_certainty=ro['self_certainty'][rows],
          prompt_tokens=ro['prompt_tokens'][i * G], prompt_valid=ro['prompt_valid'][i * G],
          verifier=self.verifier, seed=int(seeds[i])))
    return groups

  def easiest(self, params, examples, fraction, num_prompts, key) -> list[data_lib.Example]:
    """The offline curriculum: the `fraction` of examples whose groups agree most (majority share), in their
    order. A label-free difficulty: a prompt the policy agrees on is an easy one. Sampled num_prompts at a time."""
    shares = []
    for start in range(0, len(examples), num_prompts):
      chunk = examples[start:start + num_prompts]
      chunk = chunk + [chunk[-1]] * (num_prompts - len(chunk))   # a full chunk: the sampler compiles once
      shares += [vote.majority_vote(g.answers, g.verifier)[1]
                 for g in self.sample(params, chunk, jax.random.fold_in(key, start))]
    keep = np.argsort(-np.asarray(shares[:len(examples)]), kind='stable')[:max(1, int(len(examples) * fraction))]
    if jax.process_index() == 0:
      print(f'offline curriculum: kept {len(keep)} of {len(examples)} prompts, majority share >= '
            f'{min(shares[i] for i in keep):.2f}', flush=True)
    return [examples[i] for i in sorted(keep)]


def update_batch(groups: list[Group], num_samples: int) -> dict:
  """The first num_samples rows of every group as the update's arrays (B = P * G rows); prompts left-padded to the
  widest. (With TTRL's split a group holds more rows than it trains on: the vote used them all.)"""
  G = num_samples
  Tp = max(len(g.prompt_tokens) for g in groups)
  pad = lambda a, fill: np.concatenate([np.full(Tp - len(a), fill, a.dtype), a])
  return {
      'prompt_tokens': np.stack([pad(g.prompt_tokens, 0) for g in groups for _ in range(G)]).astype(np.int32),
      'prompt_valid': np.stack([pad(g.prompt_valid, False) for g in groups for _ in range(G)]),
      'tokens': np.concatenate([g.tokens[:G] for g in groups]),
      'mask': np.concatenate([g.mask[:G] for g in groups]),
      'old_logp': np.concatenate([g.logprobs[:G] for g in groups]).astype(np.float32),
  }


def batch_metrics(groups: list[Group], rewards: np.ndarray, weights: np.ndarray, num_samples: int) -> dict:
  """What the learner sees (pseudo-reward, majority share, labelled fraction, parse rate, length) and, where the
  examples have true answers, what it does not (true accuracy of the trained samples, accuracy of the labels of
  labelled prompts), all by the one notion of correctness eval.py uses (full credit)."""
  G = num_samples
  m = {
      'pseudo_reward': float(rewards.mean()),
      'majority_share': float(np.mean([vote.majority_vote(g.answers, g.verifier)[1] for g in groups])),
      'labelled_fraction': float(np.mean([g.labelled for g in groups])),
      'trained_fraction': float(np.mean(weights)),
      'parse_rate': vote.parse_rate([a for g in groups for a in g.answers[:G]]),
      'response_length': float(np.mean([g.mask[:G].sum(1).mean() for g in groups])),
  }
  if all(g.example.answer is not None for g in groups):
    m['true_accuracy'] = float(np.mean([g.correct()[:G] for g in groups]))
    labelled = [g for g in groups if g.labelled]
    m['label_accuracy'] = (float(np.mean([vote.correct([g.label], g.example.answer, g.verifier)[0]
                                          for g in labelled])) if labelled else 0.0)
  return m


def trace_records(groups: list[Group], rewards: np.ndarray, count: int) -> list[dict]:
  """The first `count` groups as readable records: question, true answer, label, each sample with its reward."""
  return [{'question': g.example.question, 'answer': g.example.answer, 'label': g.label, 'share': g.share,
           'samples': [{'text': t, 'extracted': a, 'reward': float(r)}
                       for t, a, r in zip(g.texts, g.answers, rewards[i])]}
          for i, g in enumerate(groups[:count])]


def sft_batch(text, examples, max_new_tokens):
  """Supervised warm start: left-padded prompts and right-padded targets (+ EOS) as fixed-shape arrays."""
  prompts = text.encode([ex.prompt for ex in examples])
  targets = [text.tokenizer(ex.target, add_special_tokens=False)['input_ids'][:max_new_tokens - 1]
             + [text.tokenizer.eos_token_id] for ex in examples]
  # Widths rounded up to multiples of 16: few distinct shapes to compile, little padding to compute on.
  Tp = 16 * -(-max(len(p) for p in prompts) // 16)
  N = min(max_new_tokens, 16 * -(-max(len(t) for t in targets) // 16))
  B = len(examples)
  pt, pv = np.zeros((B, Tp), np.int32), np.zeros((B, Tp), bool)
  tt, tm = np.zeros((B, N), np.int32), np.zeros((B, N), np.float32)
  for i, (p, t) in enumerate(zip(prompts, targets)):
    pt[i, Tp - len(p):], pv[i, Tp - len(p):] = p, True
    tt[i, :len(t)], tm[i, :len(t)] = t, 1.0
  return {'prompt_tokens': pt, 'prompt_valid': pv, 'tokens': tt, 'mask': tm}
