"""Labels, rewards and advantages: the three places an SRT ablation changes, each a table of small functions.

    labels = LABEL_SOURCES['policy'](groups, sample_teacher)      # step 2: one Label per prompt
    r = REWARDS['vote'].fn(group)                                  # step 3: (n,) rewards of one prompt's samples
    adv = ADVANTAGES['rloo'].fn(rewards)                           # step 4: (P, G) -> (P, G)

SRT (Shafayat et al., arXiv 2505.21444) is the row `policy` x `vote` x `rloo`: the label is the majority answer of
the policy's own samples, the reward is 1 for agreeing with it, the advantage is leave-one-out. RL with true
labels (RLVR, `--mode=gt`) changes only the label source to `dataset`.

To add a reward: write `def my_reward(g: Group) -> np.ndarray` returning one number per sample of the group
(g.answers, g.texts, g.label, g.mask, g.logprobs, g.entropy, g.self_certainty, g.per_sample(...) are there), and
add one line to REWARDS. `needs_label=True` means the prompt trains only when it has a label (someone voted and
the share passed --agreement_threshold); a label-free reward trains on every prompt. README, "Fork it".
"""
import dataclasses
from typing import Callable

import numpy as np

import vote
from rollouts import Group, Verifier

# ----------------------------------------------------------------------------------------------------------------
# 2) Label sources: (groups, sample_teacher) -> one Label per group. sample_teacher(examples) samples the teacher
#    policy's answers for the same prompts (the frozen starting policy, or its moving average with --label_source=ema).


@dataclasses.dataclass(frozen=True)
class Label:
  text: str | None            # the pseudo-label; None when nobody voted
  share: float                # the vote share of the label's class among the voters
  judge: Verifier | None = None   # how agreement with it is decided: the task's verifier, or None: vote.equivalent


def policy_vote(groups: list[Group], sample_teacher) -> list[Label]:
  """SRT: the majority answer of the policy's own samples (all n of them: TTRL votes over more than it trains on)."""
  return [Label(*vote.majority_vote(g.answers, g.verifier), g.verifier) for g in groups]


def teacher_vote(groups: list[Group], sample_teacher) -> list[Label]:
  """The majority answer of a teacher's samples for the same prompts: the frozen starting policy (the paper's
  fixed-teacher / offline-label ablation) or a slowly moving average of the policy (Co-rewarding-II)."""
  teacher = sample_teacher([g.example for g in groups])
  return [Label(*vote.majority_vote(answers, g.verifier), g.verifier) for g, answers in zip(groups, teacher)]


def dataset_answer(groups: list[Group], sample_teacher) -> list[Label]:
  """RLVR: the dataset's true answer, judged by the task's verifier; the share logged is the policy's own vote."""
  return [Label(g.example.answer, vote.majority_vote(g.answers, g.verifier)[1], g.verifier) for g in groups]


LABEL_SOURCES = {'policy': policy_vote, 'teacher': teacher_vote, 'ema': teacher_vote, 'dataset': dataset_answer}

# ----------------------------------------------------------------------------------------------------------------
# 3) Rewards: a Group (after labelling) -> (n,) float32, one number per sample.


@dataclasses.dataclass(frozen=True)
class Reward:
  fn: Callable[[Group], np.ndarray]
  needs_label: bool = True    # False: every prompt trains, labelled or not


def agreement(g: Group) -> np.ndarray:
  """SRT (arXiv 2505.21444) and RLVR: r_i = 1 if answer_i is equivalent to the label, else 0 (no answer: 0)."""
  return vote.agreement(g.answers, g.label, g.judge)


def vote_share(g: Group) -> np.ndarray:
  """SRT's soft reward (arXiv 2505.21444): r_i = |{j : a_j equivalent to a_i}| / |{j : a_j is not None}|, the
  share of the voters (the samples with an answer) whose answer is equivalent to answer_i; a sample without an
  answer earns 0 and does not count in any share. With --agreement_threshold=0.25 it is EMPO's semantic-entropy
  reward (arXiv 2504.05812): the cluster's share, and no reward for the prompt when its largest cluster holds under
  a quarter of the voters."""
  return vote.class_shares(g.answers, g.verifier)


def self_certainty(g: Group) -> np.ndarray:
  """Intuitor / RLIF (arXiv 2505.19590): r_i = mean over response tokens of logsumexp(z) - mean_v(z), z the
  next-token logits over the temperature (the full tempered distribution p the token was drawn from, before any
  top-p cut): KL(uniform || p) + log V, high where the policy is sure. Computed by the sampler."""
  return g.per_sample(g.self_certainty).astype(np.float32)


def neg_entropy(g: Group) -> np.ndarray:
  """RENT (arXiv 2505.22660): r_i = - mean over response tokens of the next-token entropy H(p) = -sum_v p_v log p_v,
  p the full tempered distribution the token was drawn from. Computed by the sampler."""
  return -g.per_sample(g.entropy).astype(np.float32)


def coin_flip(g: Group) -> np.ndarray:
  """Control ("Spurious Rewards", arXiv 2506.10947): r_i ~ Bernoulli(0.5), seeded by the run seed, the step and
  the prompt. A gain from it is not learning from the reward."""
  return (np.random.default_rng(g.seed).random(len(g.answers)) < 0.5).astype(np.float32)


def has_answer(g: Group) -> np.ndarray:
  """Control: the format-only reward of the "Spurious Rewards" study (arXiv 2506.10947). r_i = 1 if the LAST
  \\boxed{...} / \\boxed x / \\fbox{...} of the completion, wherever it stands in the text, holds a non-empty,
  brace-balanced answer (vote.extract_answer is not None), else 0; whether that answer is right plays no part.
  The study pays any non-empty box; here it is the last one, the box the vote and the metrics read."""
  return np.array([a is not None for a in g.answers], np.float32)


REWARDS = {
    'vote': Reward(agreement),
    'soft_vote': Reward(vote_share),
    'self_certainty': Reward(self_certainty, needs_label=False),
    'neg_entropy': Reward(neg_entropy, needs_label=False),
    'random': Reward(coin_flip, needs_label=False),
    'format': Reward(has_answer, needs_label=False),
}

# ----------------------------------------------------------------------------------------------------------------
# 4) Advantages: rewards (P, G) -> advantages (P, G), per prompt group.


def rloo(rewards: np.ndarray) -> np.ndarray:
  """RLOO (the paper's math runs): A_i = R_i - mean_{j != i} R_j; no std normalisation."""
  G = rewards.shape[1]
  return (G * rewards - rewards.sum(1, keepdims=True)) / (G - 1)


def grpo(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """GRPO (the paper's Reasoning Gym runs): A_i = (R_i - mean) / (std + eps), the unbiased std as verl computes it."""
  mean = rewards.mean(1, keepdims=True)
  std = rewards.std(1, keepdims=True, ddof=1)
  return (rewards - mean) / (std + eps)


@dataclasses.dataclass(frozen=True)
class Advantage:
  fn: Callable[[np.ndarray], np.ndarray]
  kl_in: str   # --kl_in's default: where the runs that use this estimator put the KL penalty (reward | loss)


# The KL penalty goes into the reward before the leave-one-out baseline for RLOO and is a separate loss term for
# GRPO (verl's kl-in-reward and use_kl_loss), as in the paper's runs; --kl_in overrides it.
ADVANTAGES = {'rloo': Advantage(rloo, kl_in='reward'), 'grpo': Advantage(grpo, kl_in='loss')}
