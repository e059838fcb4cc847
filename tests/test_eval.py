"""eval.py: metrics on hand-written completions equal the numbers worked out by hand; the CLI end to end on a
hand-built checkpoint whose output is known."""
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
import model

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

  def generate(params, cfg, tokenizer, prompts, *, num_samples, max_new_tokens, temperature, top_p=1.0, key,
               chat_template=False, mesh=None):
    calls.append((list(prompts), np.asarray(jax.random.key_data(key)).tolist(), num_samples))
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
                      lambda params, cfg, tok, prompts, **kw: [[B('lion'), B('lions'), B('lions'), B('tiger')]])
  res = eval_lib.evaluate(None, None, None, ex, num_samples=4, max_new_tokens=8, temperature=1.0,
                          key=jax.random.key(0), verifier=verifier)
  assert res['records'][0]['correct'] == [1, 0, 0, 0] and res['records'][0]['label'] == 'lions'
  assert (res['avg@k'], res['maj@k'], res['pass@k']) == (0.25, 0.0, 1.0)
  assert res['avg@k_ci95'] == [0.0, 1.0]   # one prompt: no spread to estimate


def bigram_checkpoint(path, completion: str):
  """A 1-layer model whose next token depends on the current token only: the prompt's last character '.' is
  followed by `completion` (distinct characters) and then <eos>; every other token is followed by <eos>.
  Layers are zero (attention and MLP add nothing), the embedding is the identity and the LM head the bigram
  table with logit gap 100 * sqrt(D): sampling at temperature 1 is as good as greedy."""
  cfg = model.Config(vocab_size=128, d_model=128, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=2, mlp_dim=2)
  ids = {c: i for i, c in enumerate(model.CHAR_VOCAB)}
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
  model.save_hf_checkpoint(path, cfg, params)
  model.build_char_tokenizer(path)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  bigram_checkpoint(str(workdir / 'hf'), '\\boxed{7}')   # a training workdir: the checkpoint sits in <workdir>/hf
  questions = tmp_path / 'q.jsonl'
  questions.write_text(''.join(json.dumps({'question': f'Q{i}', 'answer': a}) + '\n' for i, a in
                               enumerate(['7', '7', '8'])))
  out = tmp_path / 'res.json'
  cmd = [sys.executable, os.path.join(ROOT, 'eval.py'), f'--model={workdir}', f'--data={questions}', '--k=4',
         '--max_new_tokens=16', f'--out={out}', '--records', '--batch_prompts=2']
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert [r['completions'] for r in res['records']] == [['\\boxed{7}'] * 4] * 3
  assert (res['avg@k'], res['maj@k'], res['pass@k'], res['parse_rate']) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 1))
  assert res['k'] == 4 and res['num_prompts'] == 3 and res['model'] == str(workdir / 'hf')
  assert 'avg@4' in proc.stdout and 'prompts/s' in proc.stdout

  # Bad flags name the flag (checked before any model is loaded).
  nothing = f'--model={tmp_path}/nothing'
  for flag, message in [('--k=0', '--k=0 must be >= 1'), (nothing, nothing + ': no config.json')]:
    proc = subprocess.run(cmd + [flag], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
