"""eval.py: the metrics (avg@k, maj@k, pass@k, paired gain, early stopping) against numbers worked out by hand;
`evaluate` on hand-written completions and, on the 8 fake devices, with its rows split over the mesh; the CLI end
to end on a hand-built checkpoint whose output is known and on the shipped tiny checkpoint. Also train.py's
inputs as eval.py's: a --model that does not resolve leaves the workdir untouched."""
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import data
import eval as eval_lib
import hf
import model
import sharding
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = lambda a: f'so the answer is \\boxed{{{a}}}.' if a is not None else 'I give up.'

# (gold, the 4 completions' answers). Per prompt, by hand: correct, avg@4, maj@4, pass@4, parse, c.
CASES = [
    ('7', [7, 7, 3, None]),                     # [1 1 0 0]  .50  1 (label 7)  1  .75  2
    ('2', [2, 5, 5, 5]),                        # [1 0 0 0]  .25  0 (label 5)  1  1    1
    ('10', [None, None, None, None]),           # [0 0 0 0]  0    0 (no label) 0  0    0
    ('\\frac{1}{2}', ['0.5', '1/2', '\\frac12', 3]),  # [1 1 1 0]  .75  1  1  1  3  (one notion of equality)
    ('4', [4, 3, 3, 4]),                        # [1 0 0 1]  .50  1 (tie: 4 comes first)  1  1  2
]


def make_examples():
  return [data.Example(question=f'q{i}', answer=gold, prompt=f'prompt {i}', target=None)
          for i, (gold, _) in enumerate(CASES)]


@pytest.fixture
def fake_generate(monkeypatch):
  """sample.generate replaced by hand-written completions; records each call's prompts and key."""
  by_prompt = {f'prompt {i}': [B(a) for a in answers] for i, (_, answers) in enumerate(CASES)}
  by_prompt['prompt 0'][1] = '\\boxed{3} no, wait: \\boxed{7}'   # the LAST box counts
  calls = []

  def generate(params, cfg, text, prompts, *, num_samples, max_new_tokens, temperature, top_p=1.0, key, mesh=None,
               batch_axes=('data',), return_rollout=False):
    calls.append((list(prompts), np.asarray(jax.random.key_data(key)).tolist(), num_samples, tuple(batch_axes)))
    return [by_prompt[p][:num_samples] for p in prompts]

  monkeypatch.setattr(eval_lib.sample, 'generate', generate)
  return calls


def test_metrics_by_hand(fake_generate):
  res = eval_lib.evaluate(None, None, None, make_examples(), num_samples=4, max_new_tokens=8, temperature=1.0,
                          key=jax.random.key(0), batch_prompts=2)
  assert res['k'] == 4 and res['num_prompts'] == 5
  assert res['avg@k'] == pytest.approx((0.5 + 0.25 + 0 + 0.75 + 0.5) / 5)   # 0.4
  assert res['maj@k'] == pytest.approx((1 + 0 + 0 + 1 + 1) / 5)            # 0.6
  assert res['pass@k'] == pytest.approx((1 + 1 + 0 + 1 + 1) / 5)           # 0.8
  assert res['parse_rate'] == pytest.approx((0.75 + 1 + 0 + 1 + 1) / 5)    # 0.75
  # Unbiased pass@j from n=4 samples with c correct: 1 - C(4-c, j) / C(4, j). c = 2, 1, 0, 3, 2.
  pass2 = [1 - math.comb(4 - c, 2) / math.comb(4, 2) for c in (2, 1, 0, 3, 2)]   # 5/6, 1/2, 0, 1, 5/6
  assert res['pass_curve']['2'] == pytest.approx(np.mean(pass2)) == pytest.approx(19 / 30)
  assert res['pass_curve']['1'] == pytest.approx(res['avg@k'])
  assert res['pass_curve']['4'] == res['pass@k'] and sorted(res['pass_curve']) == ['1', '2', '4']
  # 95% interval: normal approximation over the 5 per-prompt means (sum of squared deviations 0.325).
  half = 1.96 * math.sqrt(0.325 / 4) / math.sqrt(5)
  assert res['avg@k_ci95'] == pytest.approx([0.4 - half, 0.4 + half])
  assert res['per_prompt'] == pytest.approx([0.5, 0.25, 0, 0.75, 0.5])

  r0, r2 = res['records'][0], res['records'][2]
  assert r0['extracted'] == ['7', '7', '3', None] and r0['correct'] == [1, 1, 0, 0] and r0['label'] == '7'
  assert r2['label'] is None and r2['label_correct'] == 0
  assert [r['label'] for r in res['records']] == ['7', '5', None, '0.5', '4']
  assert [r['question'] for r in res['records']] == ['q0', 'q1', 'q2', 'q3', 'q4']
  json.dumps(res)   # the CLI writes it as is

  # Three chunks of a fixed size 2 (the last padded with a repeat), one key per chunk.
  assert [c[0] for c in fake_generate] == [['prompt 0', 'prompt 1'], ['prompt 2', 'prompt 3'],
                                           ['prompt 4', 'prompt 4']]
  assert len({str(c[1]) for c in fake_generate}) == 3


def test_pass_at_j_below_k(fake_generate):
  """k=2 of the same completions: each prompt keeps its first two samples."""
  res = eval_lib.evaluate(None, None, None, make_examples(), num_samples=2, max_new_tokens=8, temperature=1.0,
                          key=jax.random.key(0))
  # correct: [1 1], [1 0], [0 0], [1 1], [1 0]; labels 7, 2 (tie, first), none, 0.5, 4 (tie, first).
  assert res['avg@k'] == pytest.approx((1 + 0.5 + 0 + 1 + 0.5) / 5)
  assert res['maj@k'] == pytest.approx(4 / 5)
  assert res['pass@k'] == pytest.approx(4 / 5)
  assert res['pass_curve']['1'] == pytest.approx(res['avg@k'])
  assert len(fake_generate) == 1 and len(fake_generate[0][0]) == 5   # fewer prompts than batch_prompts: one call


def test_partial_credit_is_not_correct(monkeypatch):
  """A verifier's partial credit (reasoning-gym's default scorer) does not count as correct, for avg and maj."""
  verifier = lambda answer, gold: 1.0 if answer == gold else 0.5 if gold in answer else 0.0
  ex = [data.Example(question='q', answer='lion', prompt='p', target=None)]   # words: no math-verify worker
  monkeypatch.setattr(eval_lib.sample, 'generate',
                      lambda params, cfg, text, prompts, **kw: [[B('lion'), B('lions'), B('lions'), B('tiger')]])
  res = eval_lib.evaluate(None, None, None, ex, num_samples=4, max_new_tokens=8, temperature=1.0,
                          key=jax.random.key(0), verifier=verifier)
  assert res['records'][0]['correct'] == [1, 0, 0, 0] and res['records'][0]['label'] == 'lions'
  assert (res['avg@k'], res['maj@k'], res['pass@k']) == (0.25, 0.0, 1.0)
  assert res['avg@k_ci95'] == [0.0, 1.0]   # one prompt: no spread to estimate


def test_chunks_divide_over_the_mesh():
  """A sampler call's prompts divide over the data axis and its prompts x samples rows over data x fsdp, as
  training's do: rounded up to what the prompts need (padding), down to what batch_prompts allows, at least one
  such multiple. One device or no mesh: min(batch_prompts, prompts), as before meshes were used here."""
  size = lambda n, batch, k, mesh: eval_lib.chunk_size(n, batch, k, mesh and sharding.make_mesh(mesh))
  assert size(40, 64, 8, None) == size(40, 64, 8, (1, 1, 1)) == 40 and size(100, 64, 8, (1, 1, 1)) == 64
  assert size(16, 64, 8, (1, 8, 1)) == 16      # 128 rows, 16 per device
  assert size(5, 64, 3, (1, 8, 1)) == 8        # 3 samples: prompts in eights (24 rows)
  assert size(5, 64, 2, (1, 8, 1)) == 8        # 2 samples: fours
  assert size(5, 64, 4, (1, 8, 1)) == 6        # 4 samples: twos
  assert size(3, 64, 8, (2, 4, 1)) == 4        # the data axis splits prompts: twos
  assert size(100, 30, 1, (2, 4, 1)) == 24     # 1 sample: eights, batch_prompts rounded down
  assert size(100, 3, 1, (2, 4, 1)) == 8       # never below one multiple


def test_evaluate_on_a_mesh_pads_the_chunk_and_drops_the_padding(fake_generate):
  """5 prompts x 4 samples over 8 devices: one call of 6 prompts (the last repeated) with the training sampler's
  batch axes; the records are the 5 prompts' own."""
  res = eval_lib.evaluate(None, None, None, make_examples(), num_samples=4, max_new_tokens=8, temperature=1.0,
                          key=jax.random.key(0), mesh=sharding.make_mesh((1, 8, 1)))
  assert [(c[0], c[3]) for c in fake_generate] == [([f'prompt {i}' for i in (0, 1, 2, 3, 4, 4)], ('data', 'fsdp'))]
  assert res['num_prompts'] == 5 and res['avg@k'] == pytest.approx(0.4)


def test_evaluate_splits_the_rows_over_the_devices_and_matches_one_device(tmp_path, monkeypatch):
  """A tiny random policy on the 8 fake devices (FSDP): 5 prompts x 3 samples is padded to 8 prompts, whose 24
  rows (and KV cache) are split 3 per device instead of held whole on each; the completions are those of one
  device without a mesh."""
  cfg = model.Config(vocab_size=len(hf.CHAR_VOCAB), d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=48)
  rng = np.random.RandomState(0)   # numpy, not model.init_params: no compile for it
  params = jax.tree.map(lambda shape: np.float32(0.5) * rng.standard_normal(shape).astype(np.float32),
                        model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
  hf.build_char_tokenizer(str(tmp_path))
  text = hf.Text.load(str(tmp_path))
  examples = [data.Example(f'q{i}', str(i), p, None) for i, p in enumerate(['1+2=', '3+4=', 'x', '10-3=', 'ab'])]
  seen, real = [], eval_lib.sample.sample
  def spy(*a, **k):
    rollout = real(*a, **k)
    seen.append((rollout.tokens.shape, {s.data.shape[0] for s in rollout.tokens.addressable_shards}))
    return rollout
  monkeypatch.setattr(eval_lib.sample, 'sample', spy)
  kw = dict(num_samples=3, max_new_tokens=6, temperature=1.0, key=jax.random.key(1))
  mesh = sharding.make_mesh((1, 8, 1))
  got = eval_lib.evaluate(jax.device_put(params, sharding.param_shardings(cfg, mesh)), cfg, text, examples,
                          mesh=mesh, **kw)
  want = eval_lib.evaluate(params, cfg, text, examples, **kw)
  assert seen == [((24, 6), {3}), ((15, 6), {15})]
  assert [r['completions'] for r in got['records']] == [r['completions'] for r in want['records']]
  assert len({c for r in got['records'] for c in r['completions']}) > 5   # random samples, not one text


def test_a_model_or_data_that_does_not_resolve_leaves_the_workdir_unclaimed(tmp_path, offline):
  """train.py, offline, --model=ORG/NAME fails with its error before anything is written to --workdir, and
  so does an hf: --data; the same --workdir then takes a local --model, which claims it (run.json)."""
  workdir = tmp_path / 'run'
  rl, run = train.RLConfig(), train.RunConfig(workdir=str(workdir))
  dc = train.DataConfig(model='Qwen/Qwen3-4B-Base', data=train.EMBEDDED_DATA, data_size=64, eval_prompts=8)
  with pytest.raises(ValueError, match="'Qwen/Qwen3-4B-Base' is not a local directory"):
    train.resolve_inputs(rl, dc, run)
  with pytest.raises(ValueError, match="'hf:org/name/x.jsonl'"):
    train.resolve_inputs(rl, dataclasses.replace(dc, model=train.EMBEDDED_WARMSTART, data='hf:org/name/x.jsonl'), run)
  assert not workdir.exists()
  local = dataclasses.replace(dc, model=train.EMBEDDED_WARMSTART)
  got, (train_examples, eval_examples, _, _) = train.resolve_inputs(rl, local, run)
  assert got.model == train.EMBEDDED_WARMSTART and len(eval_examples) == 8
  assert json.loads((workdir / 'run.json').read_text()) == {'model': train.EMBEDDED_WARMSTART, 'mode': 'self',
                                                            'data': train.EMBEDDED_DATA}
  with pytest.raises(ValueError, match='holds a run with model='):   # a claimed workdir still refuses another model
    train.resolve_inputs(rl, dataclasses.replace(dc, model=str(tmp_path)), run)


# ------------------------------------------------------------------------------------------------ metrics
def test_avg_at_k():
  assert eval_lib.avg_at_k([1, 0, 1, 1]) == 0.75
  assert eval_lib.avg_at_k(np.array([True, False])) == 0.5
  assert eval_lib.avg_at_k([]) == 0.0


def test_maj_at_k_by_hand():
  assert eval_lib.maj_at_k(['3', '3', '4'], '3') == 1.0
  assert eval_lib.maj_at_k(['3', '4', '\\frac{8}{2}'], '3') == 0.0   # 4 and 8/2 outvote 3
  assert eval_lib.maj_at_k(['\\frac{1}{2}', '0.5', '1'], '1/2') == 1.0
  assert eval_lib.maj_at_k(['4', '3', '3', '4'], '4') == 1.0   # tie: 4 comes first
  assert eval_lib.maj_at_k(['3', '4', '4', '3'], '4') == 0.0
  assert eval_lib.maj_at_k([None, None], '3') == 0.0   # no label counts as wrong
  assert eval_lib.maj_at_k(['3'], None) == 0.0


def test_maj_at_k_with_a_verifier_is_full_credit_only():
  def by_name(answer, gold):
    return 1.0 if answer.lower() == gold.lower() else 0.01  # reasoning-gym style partial credit

  assert eval_lib.maj_at_k(['Alice', 'Bob', 'Alice'], 'alice', verifier=by_name) == 1.0
  assert eval_lib.maj_at_k(['Carol', 'carol', 'Alice'], 'alice', verifier=by_name) == 0.0   # partial: wrong
  assert eval_lib.maj_at_k([None], 'alice', verifier=by_name) == 0.0


def test_pass_at_k_by_hand():
  assert eval_lib.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
  assert eval_lib.pass_at_k(10, 0, 3) == 0.0
  assert eval_lib.pass_at_k(4, 3, 2) == 1.0  # only one wrong sample: every pair has a right one
  assert eval_lib.pass_at_k(4, 4, 4) == 1.0
  assert eval_lib.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
  assert eval_lib.pass_at_k(1000, 1, 1) == pytest.approx(0.001)
  assert eval_lib.pass_at_k(32, 8, 1) == pytest.approx(8 / 32)  # pass@1 is the mean
  assert 0.0 <= eval_lib.pass_at_k(10_000, 3, 5_000) <= 1.0  # no overflow from huge binomials


def test_pass_at_k_matches_enumeration():
  for n in range(1, 8):
    for c in range(n + 1):
      correct = [1] * c + [0] * (n - c)
      for k in range(1, n + 1):
        subsets = list(itertools.combinations(correct, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert eval_lib.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


@pytest.mark.parametrize('n, c, k', [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
  with pytest.raises(ValueError):
    eval_lib.pass_at_k(n, c, k)


def test_paired_gain_by_hand():
  # differences 0.25, 0.0, 0.5, -0.25: mean 0.125; squared deviations 1/64 + 1/64 + 9/64 + 9/64 = 20/64,
  # sd = sqrt(20/64 / 3), se = sd / sqrt(4)
  gain = eval_lib.paired_gain(np.array([0.5, 0.25, 0.0, 0.75]), np.array([0.75, 0.25, 0.5, 0.5]))
  assert gain['mean'] == pytest.approx(0.125)
  assert gain['paired_se'] == pytest.approx(math.sqrt(20 / 64 / 3) / 2)
  assert eval_lib.paired_gain([0.5], [1.0]) == {'mean': 0.5, 'paired_se': None}   # one prompt: no spread
  assert eval_lib.paired_gain([0.1, 0.2], [0.1, 0.2]) == {'mean': 0.0, 'paired_se': 0.0}
  for before, after in [([0.1, 0.2], [0.1]), ([], [])]:
    with pytest.raises(ValueError, match='paired_gain'):
      eval_lib.paired_gain(before, after)


def test_early_stopping_picks_the_best_step_earliest_on_ties():
  assert eval_lib.early_stopping_step([(0, 0.672), (25, 0.734), (50, 0.715), (75, 0.750), (150, 0.633)]) == 75
  assert eval_lib.early_stopping_step([(0, 0.5), (25, 0.7), (50, 0.7), (75, 0.2)]) == 25
  assert eval_lib.early_stopping_step([(0, 0.9), (25, 0.1)]) == 0   # training never helped: keep the start
  assert eval_lib.early_stopping_step([(50, 0.7), (25, 0.7)]) == 25   # earliest step, whatever the order
  with pytest.raises(ValueError, match='early_stopping_step'):
    eval_lib.early_stopping_step([])


def bigram_checkpoint(path, completion: str):
  """A 1-layer model whose next token depends on the current token only: the prompt's last character '.' is
  followed by `completion` (distinct characters) and then <eos>; every other token is followed by <eos>.
  Layers are zero (attention and MLP add nothing), the embedding is the identity and the LM head the bigram
  table with logit gap 100 * sqrt(D): sampling at temperature 1 is as good as greedy."""
  cfg = model.Config(vocab_size=128, d_model=128, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=2, mlp_dim=2)
  ids = {c: i for i, c in enumerate(hf.CHAR_VOCAB)}
  eos = ids['<eos>']
  params = jax.tree.map(np.zeros_like, jax.tree.map(np.asarray, model.init_params(cfg, jax.random.key(0))))
  params['embed'] = np.eye(128, dtype=np.float32)
  params['final_norm'][:] = 1
  head = np.zeros((128, 128), np.float32)
  head[:, eos] = 100
  chain = ['.'] + list(completion) + ['<eos>']
  assert len(set(chain)) == len(chain)
  for src, dst in zip(chain, chain[1:]):
    head[ids[src]] = 0
    head[ids[src], ids[dst]] = 100
  params['lm_head'] = head
  hf.save_checkpoint(path, cfg, params)
  hf.build_char_tokenizer(path)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  bigram_checkpoint(str(workdir / 'hf'), '\\boxed{7}')   # a training workdir: the checkpoint sits in <workdir>/hf
  questions = tmp_path / 'q.jsonl'
  questions.write_text(''.join(json.dumps({'question': f'Q{i}', 'answer': a}) + '\n' for i, a in
                               enumerate(['7', '7', '8'])))
  out = tmp_path / 'res.json'
  cmd = [sys.executable, os.path.join(ROOT, 'eval.py'), f'--model={workdir}', f'--data={questions}',
         '--eval_samples=4', '--max_new_tokens=16', f'--out={out}', '--records', '--batch_prompts=2']
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert [r['completions'] for r in res['records']] == [['\\boxed{7}'] * 4] * 3
  assert (res['avg@k'], res['maj@k'], res['pass@k'], res['parse_rate']) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 1))
  assert res['k'] == 4 and res['num_prompts'] == 3 and res['model'] == str(workdir / 'hf')
  assert res['per_prompt'] == [1, 1, 0]
  assert 'avg@4' in proc.stdout and 'prompts/s' in proc.stdout

  # Bad flags name the flag (checked before any model is loaded); the old names are unknown flags.
  empty = tmp_path / 'empty'
  empty.mkdir()
  for flag, message in [('--eval_samples=0', '--eval_samples=0 must be >= 1'),
                        (f'--model={empty}', f'--model={empty}: no config.json'),
                        (f'--model={tmp_path}/no/such/dir', f'--model={tmp_path}/no/such/dir'),
                        (f'--data={tmp_path}/none.jsonl', f'--data={tmp_path}/none.jsonl'),
                        ('--k=4', "Unknown command line flag 'k'")]:
    proc = subprocess.run(cmd + [flag], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr, (flag, proc.stderr[-2000:])


@pytest.mark.slow
def test_cli_on_the_shipped_checkpoint(tmp_path):
  """The warm start in assets/ as shipped (its own tokenizer files), greedy on sums of two one-digit numbers, the
  easiest level it learned: every sample of a prompt is the same, so avg@k, maj@k and pass@k agree per prompt."""
  out = tmp_path / 'res.json'
  cmd = [sys.executable, os.path.join(ROOT, 'eval.py'), f'--model={os.path.join(ROOT, "assets", "tiny-chain-sum")}',
         '--data=rg:chain_sum:min_terms=2,max_terms=2,max_digits=1', '--eval_prompts=16', '--eval_samples=2',
         '--temperature=0', f'--out={out}', '--records']
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res['num_prompts'] == 16 and res['k'] == 2 and len(res['per_prompt']) == 16
  for r, avg in zip(res['records'], res['per_prompt']):
    assert r['completions'][0] == r['completions'][1]
    assert avg == r['label_correct'] == max(r['correct'])
  assert res['parse_rate'] == 1.0 and res['avg@k'] >= 0.75, res['avg@k']   # measured: 1.0
