"""train.py: the SRT math against numbers worked out by hand, the sharded step against the single-device step,
and the script itself in subprocesses (every mode, kill-and-resume, bad inputs, NaN)."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data as data_lib
import model
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = 'rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1'

# ---------------------------------------------------------------------------------------------------------------
# The math, by hand


def test_rloo_and_grpo_by_hand():
  r = jnp.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
  # RLOO: R_i - mean of the other three. Row 0: 1 - 2/3, 0 - 1, ...; a unanimous row has no advantage.
  np.testing.assert_allclose(train.advantages(r, 'rloo'), [[1 / 3, -1, 1 / 3, 1 / 3], [0, 0, 0, 0]], atol=1e-6)
  # GRPO: mean .75, unbiased std sqrt((3 * .0625 + .5625) / 3) = .5.
  np.testing.assert_allclose(train.advantages(r, 'grpo'), [[.5, -1.5, .5, .5], [0, 0, 0, 0]], atol=1e-5)


def test_kl_in_reward_for_rloo_only():
  r = jnp.array([[1.0, 0.0, 1.0]])
  seq_kl = jnp.array([[0.3, 0.0, 0.6]])
  rloo = train.RLConfig(advantage='rloo', kl_coef=0.5)
  # Shaped rewards: 1 - .15 = .85, 0, 1 - .3 = .7; RLOO: .85 - .35, 0 - .775, .7 - .425.
  np.testing.assert_allclose(train.shaped_advantages(r, seq_kl, rloo), [[.5, -.775, .275]], atol=1e-6)
  grpo = train.RLConfig(advantage='grpo', kl_coef=0.5)
  np.testing.assert_allclose(train.shaped_advantages(r, seq_kl, grpo), train.advantages(r, 'grpo'), atol=1e-6)


def test_k3_by_hand():
  # pi = .5, ref = .25: r = .5, k3 = .5 - log .5 - 1 = .19315.
  np.testing.assert_allclose(train.k3(jnp.log(0.5), jnp.log(0.25)), 0.5 + np.log(2) - 1, rtol=1e-6)
  assert float(train.k3(jnp.log(0.3), jnp.log(0.3))) == 0.0


def fake_batch(logp, old_logp, ref_logp, mask, adv, weight=None):
  mask = np.asarray(mask, np.float32)
  B, N = mask.shape
  return {'prompt_tokens': np.zeros((B, 1), np.int32), 'prompt_valid': np.ones((B, 1), bool),
          'tokens': np.zeros((B, N), np.int32), 'mask': np.asarray(mask, np.float32),
          'old_logp': np.asarray(old_logp, np.float32), 'ref_logp': np.asarray(ref_logp, np.float32),
          'advantages': np.asarray(adv, np.float32),
          'row_weight': np.ones(B, np.float32) if weight is None else np.asarray(weight, np.float32)}, logp


@pytest.fixture
def fixed_logprobs(monkeypatch):
  """Replace the model's log-probs with given numbers, so the loss can be worked out by hand."""
  box = {}
  monkeypatch.setattr(train, 'token_logprobs',
                      lambda params, cfg, pt, pv, t, m, temp: (params['logp'], jnp.full(t.shape, 2.0)))
  return box


def loss_of(rl, logp, batch):
  return train.policy_loss({'logp': jnp.asarray(logp, jnp.float32)}, None, rl, batch)


def test_policy_loss_token_mean_and_masks(fixed_logprobs):
  mask = [[1, 1, 0], [1, 0, 0]]
  logp = [[-1.0, -2.0, 100.0], [-0.5, 100.0, 100.0]]   # garbage where masked: must not leak (exp(100) = inf)
  batch, logp = fake_batch(logp, logp, logp, mask, adv=[1.0, -0.5])
  loss, aux = loss_of(train.RLConfig(), logp, batch)
  # ratio 1 everywhere: per-token -A; tokens: -1, -1, +.5 over 3 response tokens -> -1.5 / 3.
  np.testing.assert_allclose(loss, -0.5, atol=1e-6)
  np.testing.assert_allclose(aux['entropy'], 2.0)
  # A zero-weight row (an unlabelled prompt) leaves the loss and the token count.
  batch['row_weight'] = np.array([1.0, 0.0], np.float32)
  np.testing.assert_allclose(loss_of(train.RLConfig(), logp, batch)[0], -1.0, atol=1e-6)


def test_policy_loss_clipping_by_hand(fixed_logprobs):
  mask = [[1.0], [1.0]]
  logp = np.log([[0.6], [0.2]])
  old = np.log([[0.4], [0.4]])   # ratios 1.5 and .5
  batch, logp = fake_batch(logp, old, logp, mask, adv=[2.0, -1.0])
  loss, aux = loss_of(train.RLConfig(clip_eps=0.2), logp, batch)
  # Row 0: A > 0, min(1.5 * 2, 1.2 * 2) = 2.4 -> -2.4. Row 1: A < 0, min(.5 * -1, .8 * -1) = -.8 -> +.8.
  np.testing.assert_allclose(loss, (-2.4 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(aux['clip_frac'], 1.0)


def test_kl_and_entropy_terms_in_loss(fixed_logprobs):
  mask = [[1.0, 1.0]]
  logp = np.log([[0.5, 0.5]])
  ref = np.log([[0.25, 0.5]])
  batch, logp = fake_batch(logp, logp, ref, mask, adv=[0.0])
  kl_mean = (0.5 + np.log(2) - 1 + 0.0) / 2
  grpo = train.RLConfig(advantage='grpo', kl_coef=0.1, entropy_coef=0.01)
  np.testing.assert_allclose(loss_of(grpo, logp, batch)[0], 0.1 * kl_mean - 0.01 * 2.0, atol=1e-6)
  rloo = train.RLConfig(advantage='rloo', kl_coef=0.1, entropy_coef=0.01)   # KL is in the reward, not here
  np.testing.assert_allclose(loss_of(rloo, logp, batch)[0], -0.01 * 2.0, atol=1e-6)


def test_token_logprobs_match_a_python_loop():
  cfg = model.Config(vocab_size=31, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=24)
  params = model.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda a: a * 20 if a.ndim > 1 else a, params)
  prompts = [[3, 4, 5], [6, 7]]
  comps = [[8, 9, 1], [10, 1, 0]]
  mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  pt = np.array([[3, 4, 5], [0, 6, 7]]); pv = np.array([[1, 1, 1], [0, 1, 1]], bool)
  logp, _ = train.token_logprobs(params, cfg, jnp.asarray(pt), jnp.asarray(pv), jnp.asarray(comps),
                                 jnp.asarray(mask), 0.7)
  for i in range(2):
    for t in range(int(mask[i].sum())):
      seq = prompts[i] + comps[i][:t]
      lg = np.asarray(model.logits(params, cfg, jnp.asarray([seq])))[0, -1] / 0.7
      ref = lg[comps[i][t]] - np.log(np.exp(lg - lg.max()).sum()) - lg.max()
      assert abs(float(logp[i, t]) - ref) < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# self and gt differ only in labels


class FakeRollouts(train.Rollouts):
  """The sampler replaced by fixed completions; everything after sampling is the real code."""

  def __init__(self, rl, answers):
    super().__init__(None, None, rl, None, None)
    self.answers = answers

  def sample(self, params, examples, key):
    G, N = self.rl.num_samples, 4
    rows = len(examples) * G
    ro = {'tokens': np.arange(rows * N).reshape(rows, N) % 7, 'logprobs': -np.ones((rows, N), np.float32),
          'mask': np.ones((rows, N), np.float32), 'lengths': np.full(rows, N),
          'prompt_tokens': np.ones((rows, 2), np.int32), 'prompt_valid': np.ones((rows, 2), bool)}
    answers = [a for ex in examples for a in self.answers[ex.question]]
    return ro, [f'\\boxed{{{a}}}' for a in answers], answers


def test_self_and_gt_modes_differ_only_in_labels():
  answers = {'q1': ['7', '7', '3', None], 'q2': ['1/2', '0.5', '2', '\\frac{1}{2}']}
  # A data set whose true labels equal the policy's majority (in another form, for q2).
  examples = [data_lib.Example(question='q1', answer='7', prompt='q1', target=None),
              data_lib.Example(question='q2', answer='\\dfrac12', prompt='q2', target=None)]
  batches = {}
  for mode in ('self', 'gt'):
    rl = train.RLConfig(mode=mode, num_prompts=2, num_samples=4)
    it = iter(examples)
    batch, m, _ = train.rl_batch(FakeRollouts(rl, answers), None, None, lambda n: [next(it) for _ in range(n)],
                                 jax.random.key(0), rl)
    batches[mode] = batch
  for k in batches['self']:
    np.testing.assert_array_equal(batches['self'][k], batches['gt'][k], err_msg=k)
  np.testing.assert_array_equal(batches['self']['rewards'], [[1, 1, 0, 0], [1, 1, 0, 1]])


def test_agreement_threshold_drops_and_refills():
  answers = {'a': ['1', '2', '3', '4'], 'b': ['5', '5', '5', '6'], 'c': ['1', '1', '1', '1'], 'd': ['9', '8', '9', '8']}
  examples = [data_lib.Example(question=q, answer=None, prompt=q, target=None) for q in 'abcd']
  rl = train.RLConfig(num_prompts=2, num_samples=4, agreement_threshold=0.6)
  it = iter(examples)
  batch, m, _ = train.rl_batch(FakeRollouts(rl, answers), None, None, lambda n: [next(it) for _ in range(n)],
                               jax.random.key(0), rl)
  # Round 1 (a: share .25, dropped; b: .75 kept), round 2 (c: 1.0 kept) fills the batch: b and c.
  np.testing.assert_array_equal(batch['rewards'], [[1, 1, 1, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(batch['group_weight'], [1, 1])
  assert m['refill_rounds'] == 2


def test_early_stopping_picks_the_best_step_earliest_on_ties():
  assert train.early_stopping_step([(0, 0.672), (25, 0.734), (50, 0.715), (75, 0.750), (150, 0.633)]) == 75
  assert train.early_stopping_step([(0, 0.5), (25, 0.7), (50, 0.7), (75, 0.2)]) == 25
  assert train.early_stopping_step([(0, 0.9), (25, 0.1)]) == 0   # training never helped: keep the start


def test_held_out_and_validation_prompts_never_train():
  # Sums of two one-digit numbers: 200 distinct prompts, so 400 draws repeat most of the 64 held-out ones.
  rl, dc = train.RLConfig(), train.DataConfig(data=TASK, data_size=400, eval_prompts=64, val_prompts=16)
  drawn = data_lib.load_examples(TASK, size=400, seed=rl.seed)
  train_examples, eval_examples, val_examples, _ = train.load_data(rl, dc)
  kept = {ex.question for ex in eval_examples + val_examples}
  assert sum(ex.question in kept for ex in drawn) > 50          # the overlap a small task would have
  assert [ex for ex in drawn if ex.question not in kept] == train_examples   # all of it removed, order kept
  with pytest.raises(train.FlagError, match='every training prompt'):
    train.load_data(rl, dataclasses.replace(dc, data_size=1, eval_prompts=2000))   # all 200


# ---------------------------------------------------------------------------------------------------------------
# Sharding: the step on 8 fake CPU devices equals the single-device step


def sharded_step(mesh_sizes, rl, cfg, params, batch):
  mesh = train.make_mesh(mesh_sizes)
  p_shard = train.param_shardings(cfg, mesh)
  opt = train.make_optimizer(rl, rl.learning_rate)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  opt_shard = train.optax.tree_map_params(opt, lambda _, s: s, jax.eval_shape(opt.init, params), p_shard,
                                          transform_non_params=lambda _: replicated)
  shardings = {'params': p_shard, 'opt_state': opt_shard}
  params = jax.device_put(jax.tree.map(jnp.copy, params), p_shard)   # the step donates its input
  state = {'params': params, 'opt_state': jax.jit(opt.init, out_shardings=opt_shard)(params)}
  step = train.make_train_step(cfg, rl, opt, train.policy_loss, shardings, mesh)
  state, aux = step(state, batch)
  state, aux = step(state, batch)
  return state, aux


def test_sharded_step_equals_single_device():
  cfg = model.Config(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  params = model.init_params(cfg, jax.random.key(0))
  rng = np.random.RandomState(0)
  B, Tp, N = 16, 4, 6
  batch = {'prompt_tokens': rng.randint(0, 64, (B, Tp)).astype(np.int32), 'prompt_valid': np.ones((B, Tp), bool),
           'tokens': rng.randint(0, 64, (B, N)).astype(np.int32),
           'mask': (np.arange(N)[None] < rng.randint(1, N + 1, (B, 1))).astype(np.float32),
           'old_logp': -rng.rand(B, N).astype(np.float32) * 4, 'ref_logp': -rng.rand(B, N).astype(np.float32) * 4,
           'advantages': rng.randn(B).astype(np.float32), 'row_weight': np.ones(B, np.float32)}
  rl = train.RLConfig(learning_rate=1e-2, kl_coef=0.1, advantage='grpo', entropy_coef=0.01)
  ref, _ = sharded_step((1, 1, 1), rl, cfg, params, batch)
  for sizes in ((2, 4, 1), (8, 1, 1), (2, 2, 2)):
    got, _ = sharded_step(sizes, rl, cfg, params, batch)
    # Float32 sums in another order differ by ~1e-7; Adam divides by sqrt(v), which magnifies that for weights
    # with near-zero gradients. 1e-4 is 1% of one update (lr 1e-2): a real sharding bug (a lost shard of the
    # batch, a wrong reduction) moves weights by a whole update.
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
    # Parameters and optimizer state carry the shardings the rules give.
    P = jax.sharding.PartitionSpec
    assert got['params']['layers']['q'].sharding.spec == P(None, 'fsdp', 'tensor', None)
    assert got['params']['layers']['down'].sharding.spec == P(None, 'tensor', 'fsdp')
    assert got['params']['embed'].sharding.spec == P('tensor', 'fsdp')
    adam = got['opt_state'][1][0]
    assert adam.mu['layers']['gate'].sharding.spec == P(None, 'fsdp', 'tensor')
    assert adam.nu['layers']['k'].sharding.spec == P(None, 'fsdp', 'tensor', None)
    assert adam.count.sharding.spec == P()
    # The shards really are split: a q weight on the 2x4 mesh holds a quarter of the model dim per device.
    if sizes == (2, 4, 1):
      shard = got['params']['layers']['q'].addressable_shards[0].data
      assert shard.shape == (2, 8, 4, 8)


def test_indivisible_shapes_are_errors_not_replication():
  mesh = train.make_mesh((1, 1, 8))
  cfg = model.Config(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48)
  with pytest.raises(ValueError, match="heads' of size [24] does not divide over mesh axes tensor"):
    train.param_shardings(cfg, mesh)
  rl, dc = train.RLConfig(num_prompts=6), train.DataConfig()
  with pytest.raises(train.FlagError, match='--num_prompts=6 does not divide over the 4-way data axis'):
    train.validate(rl, dc, train.RunConfig(mesh=(4, 2, 1)))
  with pytest.raises(train.FlagError, match='--mesh'):
    train.parse_mesh('3,1,1', 8)


# ---------------------------------------------------------------------------------------------------------------
# The script, in subprocesses


def run_train(*args, timeout=600, check=True):
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
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


read_jsonl = train.read_jsonl


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
              'response_length', 'entropy', 'kl', 'parse_rate', 'rollout_time', 'update_time', 'tokens_per_s'):
    assert key in rows[0], key
  assert rows[0]['parse_rate'] > 0.5   # the warm start taught the format
  summary = json.load(open(os.path.join(wd, 'summary.json')))
  assert set(summary['before']) == {'avg@k', 'maj@k', 'pass@k', 'parse_rate'} and summary['k'] == 2
  if mode == 'gt':
    val = [(0, summary['val_before']['avg@k']), (2, rows[1]['val_avg@k']), (4, summary['val_after']['avg@k'])]
    assert summary['val_best_step'] == max(val, key=lambda sv: (sv[1], -sv[0]))[0]
    assert 'early stopping on 4 labelled prompts picks step' in p.stdout
  trace = read_jsonl(os.path.join(wd, 'trace.jsonl'))
  assert trace[0]['samples'][0]['text'] and 'label' in trace[0]
  assert os.path.exists(os.path.join(wd, 'hf', 'model.safetensors'))
  assert os.path.exists(os.path.join(wd, 'training_curves.png'))
  assert 'step 4/4' in p.stdout


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
  args = ['--mode=self', '--checkpoint_every=2', *RL_ARGS, '--steps=6', '--eval_prompts=0']
  full = str(tmp_path / 'full')
  run_train(*args, f'--workdir={full}')
  # The same run, killed with SIGKILL once step 3 is logged (step 2's checkpoint is on disk), then resumed.
  cut = str(tmp_path / 'cut')
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *args, f'--workdir={cut}'],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
  for line in proc.stdout:
    if line.startswith('step 3/6'):
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert len(read_jsonl(os.path.join(cut, 'metrics.jsonl'))) == 3
  p = run_train(*args, f'--workdir={cut}')
  assert 'resumed from step 2' in p.stdout
  a, b = read_jsonl(os.path.join(full, 'metrics.jsonl')), read_jsonl(os.path.join(cut, 'metrics.jsonl'))
  timing = ('step_time', 'rollout_time', 'update_time', 'tokens_per_s')
  strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
  assert strip(a) == strip(b)
  _, pa = model.load_hf_checkpoint(os.path.join(full, 'hf'))
  _, pb = model.load_hf_checkpoint(os.path.join(cut, 'hf'))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_half_written_checkpoint_is_never_loaded(tmp_path):
  """orbax writes a step under a temporary name and renames it when complete; a leftover temporary directory
  (the state a kill mid-save leaves) is not a step the manager lists."""
  mngr = train.checkpoint_manager(str(tmp_path))
  mngr.save(2, args=train.ocp.args.Composite(state=train.ocp.args.StandardSave({'x': jnp.ones(3)}),
                                             meta=train.ocp.args.JsonSave({'data_pos': 8})), force=True)
  mngr.wait_until_finished()
  os.makedirs(tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp-1234' / 'state')
  assert train.checkpoint_manager(str(tmp_path)).latest_step() == 2


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
  t = time.time()
  p = run_train('--mode=sft', f'--data={tmp_path / name}', f'--workdir={warm}', '--steps=21', check=False)
  assert p.returncode != 0
  import re
  assert re.search(pattern, p.stderr), p.stderr[-2000:]
  assert 'Traceback' not in p.stderr
  assert checkpoint_fingerprint(warm) == before


@pytest.mark.slow
def test_bad_flags_and_foreign_workdir(warm, tmp_path):
  before = checkpoint_fingerprint(warm)
  cases = [(['--data=rg:no_such_task'], 'no_such_task'),
           (['--mesh=4,1,1'], '--mesh'),
           (['--num_samples=1'], '--num_samples=1'),
           (['--mode=self', f'--model={tmp_path}'], f'--model'),
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
