"""Self-Rewarded Training (SRT): reinforcement learning for reasoning where the label is the model's own vote.

    python train.py --mode=self                  # SRT on the embedded default: no labels, about 3.5 minutes on a CPU
    python train.py --mode=gt                    # the same loop, labels from the dataset (RLVR)
    python train.py --mode=self --reward=self_certainty       # another label-free reward (rewards.py)
    python train.py --mode=self --model=Qwen/Qwen2.5-Math-7B --data=math12k.jsonl ...   # README: real models

One RL step (`rl_step`; Shafayat et al., "Can Large Reasoning Models Self-Train?", arXiv 2505.21444, Alg. 1):
  1) sample G completions for each of P prompts from the current policy;
  2) label each prompt with the majority of its samples' final \\boxed{} answers (SRT), a teacher's vote, or the
     dataset's answer (RLVR);
  3) reward each sample: 1 if its answer is equivalent to the label, else 0 (or another reward: rewards.py);
  4) advantages per prompt group: RLOO (R_i minus the mean of the other samples) or GRPO;
  5) one AdamW step on the token-mean policy-gradient loss, jitted over a device mesh.
Where this departs from the paper's code (a fork of verl):
  - one notion of answer equality (vote.py) for the vote, the reward and every metric; the official code votes on
    raw strings but rewards with math-verify, so `1/2` and `\\frac{1}{2}` split the vote there;
  - a sample without a boxed answer does not vote and earns 0; a prompt where nobody voted gets no label, reward 0
    and no gradient (its rows leave the token-mean);
  - the loss is averaged over all response tokens of the batch (token-mean), as the official SRT runs;
  - the KL penalty (k3 estimator) goes where --kl_in says: into the reward before the RLOO baseline (default with
    RLOO) or into the loss (default with GRPO); with --kl_coef=0 (the default) it is only logged.
Left out on purpose: critic models, sequence packing and asynchronous rollouts (the paper's SRT runs use none).
"""
import hostmem

if __name__ == '__main__':
  hostmem.keep_freed_memory()   # first: on the CPU, XLA's freed scratch stays for its next call (hostmem.py)

import dataclasses
import functools
import os
import sys
import time

from absl import app, flags, logging
import jax
import numpy as np

import alarm
import data as data_lib
import eval as eval_lib
import hf
import memory
import model
import rewards
import rollouts
import sharding
import update
import vote
import workdir as wd_lib

# ----------------------------------------------------------------------------------------------------------------
# Configuration: a frozen dataclass per concern; every field is a flag of the same name with the help text given.

EMBEDDED = 'tiny'   # --model value of the embedded default
# The embedded default: a 0.6M-parameter policy that learned chain sums of 2-3 numbers of 1-2 digits with labels
# (the warm start, shipped in assets/), then self-trains on sums of three one-digit numbers, where its samples are
# right about 63% of the time and its 8-sample majority about 73%: the vote knows more than one sample.
EMBEDDED_DATA = 'rg:chain_sum:min_terms=3,max_terms=3,min_digits=1,max_digits=1'
EMBEDDED_WARMSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'tiny-chain-sum')
EMBEDDED_FLAGS = {'data': EMBEDDED_DATA, 'learning_rate': 5e-5, 'steps': 150, 'max_new_tokens': 48, 'eval_every': 50}
# `python train.py --mode=sft` remakes the warm start with these (README, "The embedded default").
EMBEDDED_SFT_FLAGS = {'data': 'rg:chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=2', 'learning_rate': 1e-3,
                      'steps': 1000, 'num_prompts': 64, 'max_new_tokens': 48, 'data_size': 96000,
                      'checkpoint_every': 500}


def field(default, help):
  return dataclasses.field(default=default, metadata={'help': help})


@dataclasses.dataclass(frozen=True)
class RLConfig:
  mode: str = field('self', 'self: SRT, labels voted by the model | gt: RL with the dataset\'s true labels | '
                            'sft: supervised warm start on worked solutions')
  label_source: str = field('policy', 'who votes the labels in --mode=self: policy (the live policy: SRT) | teacher '
                                      '(the frozen starting policy) | ema (a moving average of the policy)')
  ema_decay: float = field(0.99, 'with --label_source=ema: teacher <- decay * teacher + (1 - decay) * policy, '
                                 'each step')
  reward: str = field('vote', 'one of rewards.REWARDS: vote | soft_vote | self_certainty | neg_entropy | random | '
                              'format')
  vote_samples: int = field(0, 'TTRL\'s split: samples per prompt that vote (>= --num_samples); the first '
                               '--num_samples of them train. 0: --num_samples')
  agreement_threshold: float = field(0.0, 'online curriculum: a prompt whose majority share is below this gets no '
                                          'label (and the batch is refilled, up to 4 rounds); the paper uses 0.6')
  easiest_fraction: float = field(1.0, 'offline curriculum: train only on this fraction of prompts, those the '
                                       'starting policy agrees on most (no labels used); the paper uses 1/3')
  advantage: str = field('rloo', 'one of rewards.ADVANTAGES: rloo (the paper\'s math runs) | grpo')
  kl_coef: float = field(0.0, 'weight of the k3 KL penalty to the starting policy (the paper: 0.001); the KL is '
                              'logged either way')
  kl_in: str = field('', 'where the KL penalty goes: reward | loss; empty: the advantage\'s convention (rloo: '
                         'reward, grpo: loss)')
  entropy_coef: float = field(0.0, 'entropy bonus in the loss (the official code: 0.001)')
  clip_eps: float = field(0.2, 'PPO clip range; binds only with --updates_per_batch > 1')
  updates_per_batch: int = field(1, 'optimizer steps on each batch of samples (1: fully on-policy, the paper\'s)')
  learning_rate: float = field(1e-6, 'AdamW learning rate, constant (the paper\'s for 7B models)')
  max_grad_norm: float = field(1.0, 'global gradient-norm clip')
  weight_decay: float = field(0.01, 'AdamW weight decay')
  num_prompts: int = field(16, 'P: prompts per step')
  num_samples: int = field(8, 'G: samples per prompt that train (the paper: 32)')
  max_new_tokens: int = field(64, 'longest completion in tokens (the paper: 3072 for Qwen2.5-Math-7B)')
  temperature: float = field(1.0, 'sampling temperature for training and evaluation')
  top_p: float = field(1.0, 'nucleus sampling mass, in (0, 1]')
  steps: int = field(100, 'RL (or SFT) steps')
  seed: int = field(0, 'seed of the training prompts, the held-out prompts and all sampling')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  model: str = field(EMBEDDED, f'a Hugging Face directory or hub id (ORG/NAME), or {EMBEDDED!r}: the embedded '
                               'default policy (shipped warm start; from scratch with --mode=sft)')
  data: str = field('', 'training prompts: rg:NAME[:key=value,...] (a reasoning-gym task), a .jsonl / .json / .parquet '
                        'file, or hf:ORG/NAME/FILE in a hub dataset')
  data_size: int = field(4096, 'prompts generated for a reasoning-gym task (files: all records)')
  eval_data: str = field('', 'held-out prompts, same forms as --data (default: the training task, another seed)')
  eval_prompts: int = field(256, 'held-out prompts evaluated before, during and after training (0: none)')
  eval_samples: int = field(8, 'k of avg@k, maj@k and pass@k')
  eval_every: int = field(0, 'evaluate every this many steps (0: before and after only)')
  val_prompts: int = field(0, 'labelled validation prompts for early stopping, taken out of training (0: none)')
  chat_template: bool = field(False, 'wrap prompts in the tokenizer\'s chat template (instruct models)')


@dataclasses.dataclass(frozen=True)
class RunConfig:
  mesh: str = field('', 'device mesh data,fsdp,tensor (one size may be -1); empty: FSDP over every device')
  workdir: str = field('runs/default', 'checkpoints, logs, plot, summary and the Hugging Face export go here; '
                                       'rerunning the same command resumes')
  checkpoint_every: int = field(25, 'steps between checkpoints')
  resume: bool = field(True, 'resume from the latest checkpoint in --workdir')
  trace_prompts: int = field(2, 'prompts per step written to trace.jsonl with their samples, votes and rewards')
  remat: bool = field(False, 'recompute each layer\'s activations in the backward pass (long responses)')
  micro_batches: int = field(1, 'split the update\'s rows into this many slices, one at a time (less memory)')
  distributed: bool = field(False, 'multi-process (multi-host): call jax.distributed.initialize() first')
  stop_on_collapse: bool = field(False, 'stop at the first step the label-free collapse alarm fires, keeping the '
                                        'last checkpoint before it')


FLAGS = flags.FLAGS
CONFIGS = (RLConfig, DataConfig, RunConfig)
for _cls in CONFIGS:
  for _f in dataclasses.fields(_cls):
    _help = _f.metadata['help']
    if _f.name in EMBEDDED_FLAGS:
      _help += f' [--model={EMBEDDED} --mode=self|gt: {EMBEDDED_FLAGS[_f.name]}]'
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
        type(_f.default), flags.DEFINE_string)
    define(_f.name, _f.default, _help)


class FlagError(ValueError):
  pass


def validate(rl: RLConfig, dc: DataConfig, run: RunConfig, num_devices: int) -> tuple[int, int, int]:
  """Every check that can fail before anything is compiled or written, each naming its flag. Returns the mesh."""
  def need(ok, msg):
    if not ok:
      raise FlagError(msg)
  need(rl.mode in ('self', 'gt', 'sft'), f'--mode={rl.mode!r}: use self, gt or sft')
  need(rl.label_source in ('policy', 'teacher', 'ema'), f'--label_source={rl.label_source!r}: use policy, teacher '
       'or ema (--mode=gt takes the labels from the dataset)')
  need(rl.reward in rewards.REWARDS, f'--reward={rl.reward!r}: use one of {", ".join(rewards.REWARDS)}')
  need(rl.advantage in rewards.ADVANTAGES, f'--advantage={rl.advantage!r}: use one of {", ".join(rewards.ADVANTAGES)}')
  need(rl.kl_in in ('', 'reward', 'loss'), f'--kl_in={rl.kl_in!r}: use reward or loss')
  need(not (rl.reward == 'soft_vote' and (rl.mode == 'gt' or rl.label_source != 'policy')),
       '--reward=soft_vote rewards the share of the policy\'s own vote: use it with --mode=self --label_source=policy')
  need(0 < rl.ema_decay < 1, f'--ema_decay={rl.ema_decay} is not in (0, 1)')
  need(rl.vote_samples == 0 or rl.vote_samples >= rl.num_samples,
       f'--vote_samples={rl.vote_samples} must be 0 or >= --num_samples={rl.num_samples}')
  need(0.0 <= rl.agreement_threshold <= 1.0, f'--agreement_threshold={rl.agreement_threshold} is not in [0, 1]')
  need(0.0 < rl.easiest_fraction <= 1.0, f'--easiest_fraction={rl.easiest_fraction} is not in (0, 1]')
  need(rl.num_prompts >= 1, f'--num_prompts={rl.num_prompts} must be >= 1')
  need(rl.num_samples >= (1 if rl.mode == 'sft' else 2),
       f'--num_samples={rl.num_samples}: RL needs at least 2 samples per prompt for a vote and an advantage')
  need(rl.max_new_tokens >= 1, f'--max_new_tokens={rl.max_new_tokens} must be >= 1')
  need(rl.temperature > 0 or rl.mode == 'sft', f'--temperature={rl.temperature}: RL needs > 0 (0 gives G identical '
       'samples)')
  need(0 < rl.top_p <= 1, f'--top_p={rl.top_p} is not in (0, 1]')
  need(rl.learning_rate > 0, f'--learning_rate={rl.learning_rate} must be > 0')
  need(rl.updates_per_batch >= 1, f'--updates_per_batch={rl.updates_per_batch} must be >= 1')
  need(rl.clip_eps > 0, f'--clip_eps={rl.clip_eps} must be > 0')
  need(rl.kl_coef >= 0 and rl.entropy_coef >= 0, '--kl_coef and --entropy_coef must be >= 0')
  need(rl.steps >= 0, f'--steps={rl.steps} must be >= 0')
  need(dc.eval_samples >= 1, f'--eval_samples={dc.eval_samples} must be >= 1')
  need(dc.eval_prompts >= 0 and dc.val_prompts >= 0 and dc.eval_every >= 0,
       '--eval_prompts, --val_prompts and --eval_every must be >= 0')
  need(run.checkpoint_every >= 1, f'--checkpoint_every={run.checkpoint_every} must be >= 1')
  need(bool(dc.data) or dc.model == EMBEDDED, '--data is required with --model other than the embedded default')
  try:
    mesh = sharding.parse_mesh(run.mesh, num_devices)
  except ValueError as e:
    raise FlagError(str(e)) from None
  data_axis, fsdp, _ = mesh
  need(rl.num_prompts % data_axis == 0,
       f'--num_prompts={rl.num_prompts} does not divide over the {data_axis}-way data axis of --mesh')
  rows = rl.num_prompts * (rl.num_samples if rl.mode != 'sft' else 1)
  for n, what in ((rows, '--num_prompts x --num_samples'),
                  (rl.num_prompts * rl.vote_samples, '--num_prompts x --vote_samples')):
    need(n % (data_axis * fsdp) == 0, f'{what} = {n} rows do not divide over the {data_axis}x{fsdp} data x fsdp '
         'devices of the mesh; change --num_prompts or --mesh')
  need(run.micro_batches >= 1 and rows % (run.micro_batches * data_axis * fsdp) == 0,
       f'--micro_batches={run.micro_batches}: {rows} rows do not split into {run.micro_batches} slices that '
       f'each divide over the {data_axis}x{fsdp} data x fsdp axes')
  return mesh


def configs_from_flags() -> tuple[RLConfig, DataConfig, RunConfig]:
  """The three configs from the flags; with the embedded model, its flags for those the user did not set."""
  over = {}
  if FLAGS.model == EMBEDDED:
    embedded = EMBEDDED_SFT_FLAGS if FLAGS.mode == 'sft' else EMBEDDED_FLAGS
    over = {k: v for k, v in embedded.items() if not FLAGS[k].present}
  return tuple(cls(**{f.name: over.get(f.name, getattr(FLAGS, f.name)) for f in dataclasses.fields(cls)})
               for cls in CONFIGS)


# ----------------------------------------------------------------------------------------------------------------
# One RL step: the paper's Algorithm 1.


@dataclasses.dataclass
class Setup:
  """What a step needs besides the training state, made once per run (`setup`)."""
  rl: RLConfig
  label_source: str                # policy | teacher | ema | dataset
  kl_in: str                       # reward | loss
  mesh: jax.sharding.Mesh
  sampler: rollouts.Sampler        # samples --vote_samples per prompt (= --num_samples unless TTRL's split)
  train_step: object               # (state, batch) -> (state, aux), jitted
  score: object                    # (params, batch) -> log-probs (B, N), jitted
  ema: object                      # (teacher, params, decay) -> teacher, jitted
  ref_params: dict                 # the frozen starting policy: the KL reference (and the fixed teacher)
  trace_prompts: int


REFILL_ROUNDS = 4   # online curriculum: sampling rounds at most to find P prompts with a label


def rl_step(s: Setup, state: dict, take, key):
  """One SRT step on P fresh prompts (take(P) gives them) -> (state, update's aux, batch metrics, trace records)."""
  rl, P, G = s.rl, s.rl.num_prompts, s.rl.num_samples
  t_start, reward = time.time(), rewards.REWARDS[rl.reward]
  threshold = rl.agreement_threshold if s.label_source != 'dataset' else 0.0
  teacher = state['teacher'] if s.label_source == 'ema' else s.ref_params
  groups = []
  for r in range(REFILL_ROUNDS if threshold > 0 else 1):
    key_r = jax.random.fold_in(key, r)
    # 1) sample G completions (N with TTRL's split) per prompt from the current policy
    new = s.sampler.sample(state['params'], take(P), jax.random.fold_in(key_r, 0))
    # 2) label each prompt: the majority answer of the policy's samples (SRT), of a teacher's, or the dataset's
    sample_teacher = lambda exs: [g.answers for g in s.sampler.sample(teacher, exs, jax.random.fold_in(key_r, 1))]
    labels = rewards.LABEL_SOURCES[s.label_source](new, sample_teacher)
    groups += [dataclasses.replace(g, label=l.text, share=l.share, judge=l.judge,
                                   labelled=l.text is not None and l.share >= threshold) for g, l in zip(new, labels)]
    if sum(g.labelled for g in groups) >= P:
      break
  groups = ([g for g in groups if g.labelled] + [g for g in groups if not g.labelled])[:P]   # unlabelled ones fill
  # 3) rewards: one number per sample; a prompt without a label trains only under a label-free reward
  weights = np.array([g.labelled or not reward.needs_label for g in groups], np.float32)    # (P,)
  R = np.stack([reward.fn(g)[:G] if w else np.zeros(G, np.float32) for g, w in zip(groups, weights)])  # (P, G)
  batch = rollouts.update_batch(groups, G)
  batch['ref_logp'] = sharding.host_array(s.score(s.ref_params, sharding.global_batch(
      {k: batch[k] for k in ('prompt_tokens', 'prompt_valid', 'tokens', 'mask')}, s.mesh)))
  # 4) advantages per prompt group; with --kl_in=reward the KL penalty (summed over each response) comes off first
  shaped = R
  if s.kl_in == 'reward' and rl.kl_coef > 0:
    kl = np.asarray(update.k3(batch['old_logp'], batch['ref_logp'])) * batch['mask']
    shaped = R - rl.kl_coef * kl.sum(1).reshape(P, G)
  batch['advantages'] = rewards.ADVANTAGES[rl.advantage].fn(shaped).reshape(-1).astype(np.float32)
  batch['row_weight'] = np.repeat(weights, G)
  m = rollouts.batch_metrics(groups, R, weights, G) | {'refill_rounds': r + 1, 'rollout_time': time.time() - t_start,
                                                       'response_tokens': float(batch['mask'].sum())}
  # 5) update the policy: --updates_per_batch AdamW steps on the token-mean clipped policy gradient
  batch = sharding.global_batch(batch, s.mesh)
  for _ in range(rl.updates_per_batch):
    state, aux = s.train_step(state, batch)
  if s.label_source == 'ema':
    state['teacher'] = s.ema(state['teacher'], state['params'], rl.ema_decay)
  return state, aux, m, rollouts.trace_records(groups, R, s.trace_prompts)


def sft_step(s: Setup, state: dict, take, key):
  """Supervised warm start: the token-mean negative log-likelihood of worked solutions."""
  batch = rollouts.sft_batch(s.sampler.text, take(s.rl.num_prompts), s.rl.max_new_tokens)
  state, aux = s.train_step(state, sharding.global_batch(batch, s.mesh))
  return state, aux, {}, []


# ----------------------------------------------------------------------------------------------------------------
# The run: setup, resume, the loop, evaluation, export.


def load_policy(dc: DataConfig, workdir: str, seed: int):
  """(cfg, params, hf.Text, tokenizer directory) for --model: a Hugging Face directory or hub id, or the embedded
  policy from scratch (random weights and a character tokenizer, for --mode=sft)."""
  if dc.model != EMBEDDED:
    return hf.load_policy(dc.model, chat_template=dc.chat_template)
  tok_dir = os.path.join(workdir, 'tokenizer')
  if not os.path.exists(os.path.join(tok_dir, 'tokenizer.json')):
    hf.build_char_tokenizer(tok_dir)
  tokenizer = hf.load_tokenizer(tok_dir)
  text = hf.Text(tokenizer, hf.stop_ids(tokenizer), chat_template=False)
  return model.PRESETS[EMBEDDED], model.init_params(model.PRESETS[EMBEDDED], jax.random.key(seed)), text, tok_dir


def loss_fn(rl: RLConfig, kl_in: str):
  """The update's loss (params, cfg, batch) -> (loss, aux): the policy gradient, with the KL term only when it
  goes into the loss; the supervised loss for --mode=sft."""
  if rl.mode == 'sft':
    return update.sft_loss
  return functools.partial(update.policy_loss, temperature=rl.temperature, clip_eps=rl.clip_eps,
                           kl_coef=rl.kl_coef if kl_in == 'loss' else 0.0, entropy_coef=rl.entropy_coef)


def setup(rl: RLConfig, dc: DataConfig, run: RunConfig, mesh_sizes, verifier):
  """The mesh, the policy placed on it, the jitted functions -> (Setup, state, text, tokenizer directory)."""
  mesh = sharding.make_mesh(mesh_sizes)   # every array below is placed with an explicit NamedSharding on it
  cfg, params0, text, tok_dir = load_policy(dc, run.workdir, rl.seed)
  cfg = dataclasses.replace(cfg, remat=run.remat)
  p_shard = sharding.param_shardings(cfg, mesh)
  params0 = jax.device_put(params0, p_shard)
  optimizer = update.make_optimizer(rl.learning_rate, rl.max_grad_norm, rl.weight_decay)
  shardings = sharding.state_shardings(optimizer, params0, p_shard, mesh)
  state = sharding.init_state(optimizer, params0, shardings)
  label_source = 'dataset' if rl.mode == 'gt' else rl.label_source
  if label_source == 'ema':   # the moving-average teacher is trained state: placed like the policy, checkpointed
    state['teacher'], shardings['teacher'] = sharding.placed_copy(params0, p_shard), p_shard
  kl_in = rl.kl_in or rewards.ADVANTAGES[rl.advantage].kl_in
  sampler = rollouts.Sampler(cfg, text, mesh, num_samples=rl.vote_samples or rl.num_samples,
                             max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, top_p=rl.top_p,
                             verifier=verifier)
  # The frozen starting policy stays on the mesh in RL: the KL to it is the metric that shows reward hacking, so it
  # is logged even with --kl_coef=0, and it is the fixed teacher of --label_source=teacher.
  s = Setup(rl=rl, label_source=label_source, kl_in=kl_in, mesh=mesh, sampler=sampler,
            train_step=update.make_train_step(cfg, loss_fn(rl, kl_in), optimizer, shardings, mesh, run.micro_batches),
            score=update.make_scorer(cfg, rl.temperature, mesh, run.micro_batches),
            ema=update.make_ema_update(p_shard), ref_params=params0 if rl.mode != 'sft' else None,
            trace_prompts=run.trace_prompts)
  return s, state, text, tok_dir


def evaluate(s: Setup, params, examples, dc: DataConfig, tag: str) -> tuple[dict, dict]:
  """avg@k, maj@k, pass@k, parse rate on fixed examples with a fixed sampling key (the same before and after, so
  the per-prompt differences give paired standard errors), plus the per-prompt numbers for those. The rows are
  split over the mesh's data x fsdp devices as the training sampler's are (memory.check_fits checks they fit)."""
  res = eval_lib.evaluate(params, s.sampler.cfg, s.sampler.text, examples, num_samples=dc.eval_samples,
                          max_new_tokens=s.rl.max_new_tokens, temperature=s.rl.temperature,
                          key=jax.random.key(s.rl.seed + 7), verifier=s.sampler.verifier, mesh=s.mesh)
  k = res['k']
  wd_lib.say(f'{"held-out " if not tag.startswith("val_") else ""}{tag}: avg@{k} {res["avg@k"]:.3f}  '
             f'maj@{k} {res["maj@k"]:.3f}  pass@{k} {res["pass@k"]:.3f}  parse {res["parse_rate"]:.3f}')
  return {m: res[m] for m in ('avg@k', 'maj@k', 'pass@k', 'parse_rate')}, eval_lib.per_prompt(res)


def train(rl: RLConfig, dc: DataConfig, run: RunConfig, mesh_sizes, splits) -> tuple[dict, str]:
  """Trains per the configs, resuming from the workdir if it can -> (summary, Hugging Face export directory)."""
  train_examples, eval_examples, val_examples, verifier = splits
  s, state, text, tok_dir = setup(rl, dc, run, mesh_sizes, verifier)
  if jax.default_backend() != 'cpu':   # on an accelerator: do the step and the samplers fit? (XLA's own numbers)
    memory.check_fits(s, state, text, train_examples, run, held_out=(eval_examples, val_examples),
                      eval_samples=dc.eval_samples)
  if rl.mode != 'sft':
    vote.warmup()   # math-verify's worker started now, not mid-step where it would compete for the CPU
    if rl.easiest_fraction < 1.0:   # offline curriculum: the prompts the starting policy agrees on most
      train_examples = s.sampler.easiest(s.ref_params, train_examples, rl.easiest_fraction, rl.num_prompts,
                                         jax.random.key(rl.seed + 11))
  mngr, logs = wd_lib.checkpoint_manager(run.workdir), wd_lib.Logs(run.workdir)
  preemption = wd_lib.Preemption()   # SIGTERM / SIGINT: finish the step, checkpoint it, exit
  restored = wd_lib.restore(mngr, state) if run.resume else None
  state, step, data_pos = restored or (state, 0, 0)
  logs.start(step if restored else None)
  if restored:
    wd_lib.say(f'resumed from step {step} in {run.workdir}')
  prompts = data_lib.PromptStream(train_examples, rl.seed, data_pos)
  summary, history, per_prompt = {'k': dc.eval_samples}, logs.history(), {}
  held_out = {'': eval_examples, 'val_': val_examples}   # summary key prefix -> the held-out and validation prompts
  for p, examples in held_out.items():
    if examples:
      summary[p + 'before'], per_prompt[p + 'before'] = evaluate(s, s.ref_params, examples, dc, p + 'before')
  step_fn = sft_step if rl.mode == 'sft' else rl_step
  base_key, t0 = jax.random.key(rl.seed), time.time()
  while step < rl.steps:
    t_start = time.time()
    state, aux, m, trace = step_fn(s, state, prompts.take, jax.random.fold_in(base_key, step))
    aux = {k: float(v) for k, v in jax.device_get(aux).items()}
    if not all(np.isfinite(v) for v in aux.values()):
      raise FloatingPointError(f'step {step + 1}: non-finite loss or gradient ({aux}); stopping; the last good '
                               f'checkpoint in {run.workdir}/checkpoints is untouched')
    step += 1
    m = {'step': step, **m, **aux, 'step_time': time.time() - t_start}
    if 'rollout_time' in m:
      m.update(update_time=m['step_time'] - m['rollout_time'], tokens_per_s=m['response_tokens'] / m['step_time'])
    if dc.eval_every and step % dc.eval_every == 0 and step < rl.steps:
      for p, examples in held_out.items():
        if examples:
          result, _ = evaluate(s, state['params'], examples, dc, f'{p}step {step}')
          m.update({f'{p or "eval_"}{k}': v for k, v in result.items()})
    if rl.mode != 'sft':
      m['collapse_alarm'] = int(alarm.collapse_alarm(history + [m]))
    history.append(m)
    logs.write(logs.metrics, m)
    for t in trace:
      logs.write(logs.trace, dict(t, step=step))
    wd_lib.progress(step, rl.steps, m, t0)
    if m.get('collapse_alarm') and run.stop_on_collapse:
      # The last checkpoint before the alarm (none yet: the starting policy, step 0) is evaluated and exported.
      kept = wd_lib.restore(mngr, state)
      state, kept_step = (kept[0], kept[1]) if kept else (dict(state, params=s.ref_params), 0)
      summary.update(stopped_at=step, restored_step=kept_step)
      wd_lib.say(f'collapse alarm at step {step}: stopping (--stop_on_collapse); '
                 + (f'the checkpoint of step {kept_step}' if kept else 'the starting policy (no checkpoint yet)')
                 + ' is evaluated and exported')
      break
    preempted = preemption.reached(step)   # every process agrees on the step (multi-host)
    if step % run.checkpoint_every == 0 or step == rl.steps or preempted:
      wd_lib.save(mngr, step, state, prompts.pos)
    if preempted:
      preemption.exit(step, run.workdir)
  preemption.close()   # a signal during the final evaluation and export stops the run at once
  summary.update(steps=step, seconds=time.time() - t0)
  if rl.mode != 'sft':
    summary['collapse_step'] = alarm.first_alarm(history)
  for p, examples in held_out.items():
    if examples:
      summary[p + 'after'], per_prompt[p + 'after'] = evaluate(s, state['params'], examples, dc, p + 'after')
  return finish(s, run, summary, per_prompt, history, state['params'], tok_dir)


def finish(s: Setup, run: RunConfig, summary: dict, per_prompt: dict, history: list, params, tok_dir):
  """Paired gains, the early-stopping pick, the Hugging Face export and summary.json."""
  if 'after' in summary:
    summary['gain'] = {m: eval_lib.paired_gain(per_prompt['before'][m], per_prompt['after'][m])
                       for m in ('avg@k', 'maj@k', 'pass@k')}
  if 'val_after' in summary:
    during = [(h['step'], h['val_avg@k']) for h in history if 'val_avg@k' in h]
    last = summary.get('restored_step', summary['steps'])   # the policy 'after' evaluated (--stop_on_collapse)
    summary['val_best_step'] = eval_lib.early_stopping_step(
        [(0, summary['val_before']['avg@k'])] + during + [(last, summary['val_after']['avg@k'])])
    wd_lib.say(f'early stopping on {len(per_prompt["val_after"]["avg@k"])} labelled prompts picks step '
               f'{summary["val_best_step"]}')
  hf_dir = os.path.join(run.workdir, 'hf')
  params = sharding.host_tree(params)   # every process takes part in the gather; one writes
  if wd_lib.is_writer():
    hf.save_checkpoint(hf_dir, s.sampler.cfg, params, tokenizer_dir=tok_dir)
  wd_lib.write_summary(run.workdir, summary)
  return summary, hf_dir


def resolve_inputs(rl: RLConfig, dc: DataConfig, run: RunConfig):
  """The prompts loaded and the model found (hub ids fetched), then the workdir claimed for them (run.json) ->
  (dc with --model a local directory, or the embedded default; the data splits).

  Nothing is written to --workdir before both resolve: a --model or --data that fails (offline, a typo) leaves
  the workdir as it was, so the corrected command can use it."""
  splits = data_lib.load_splits(hf.resolve_data(dc.data), hf.resolve_data(dc.eval_data) if dc.eval_data else '',
                                mode=rl.mode, seed=rl.seed, size=dc.data_size, eval_prompts=dc.eval_prompts,
                                val_prompts=dc.val_prompts)
  if dc.model == EMBEDDED:
    path = EMBEDDED_WARMSTART if rl.mode != 'sft' else EMBEDDED   # RL starts from the shipped warm start
  else:
    path = hf.resolve_model(dc.model)
  wd_lib.check_identity(run.workdir, {'model': dc.model, 'mode': rl.mode, 'data': dc.data})
  return dataclasses.replace(dc, model=path), splits


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {" ".join(argv[1:])} (flags are --name=value)')
  logging.set_verbosity(logging.WARNING)   # orbax logs every file it writes at INFO
  if FLAGS.distributed:
    sharding.initialize_distributed()   # before any device use
  try:
    rl, dc, run = configs_from_flags()
    mesh_sizes = validate(rl, dc, run, jax.device_count())
    sharding.announce(mesh_sizes)   # the first line: backend, devices, mesh, processes (and an unseen accelerator)
    dc, splits = resolve_inputs(rl, dc, run)
    summary, hf_dir = train(rl, dc, run, mesh_sizes, splits)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    sys.exit(f'error: {e}')
  if rl.mode != 'sft':
    wd_lib.plot(run.workdir)
  if 'after' in summary:
    wd_lib.say('\n' + wd_lib.summary_table(summary, dc.eval_prompts))
  made = 'metrics.jsonl, summary.json' + (', trace.jsonl, training_curves.png' if rl.mode != 'sft' else '')
  wd_lib.say(f'\nwrote {made} in {run.workdir}, and a Hugging Face export in {hf_dir}')


if __name__ == '__main__':
  app.run(main)
