"""bench/findings.py: the pure parts on hand-made results (numbers worked out by hand), then the script end to end
on a two-step run of the embedded default, against a README that holds every marker."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
import findings  # noqa: E402  (bench/ is not a package)


def fake_run(before=0.60, after=0.70, evals=None, steps=10, alarms=(), task='embedded', command='python train.py',
             **history):
  """A run record as findings.collect writes it: held-out avg@8 `before` -> `after`, eval_avg@k at `evals`
  ({step: value}), the alarm on at `alarms`, and any other per-step columns given."""
  evals = evals or {}
  metrics = lambda a: {'avg@k': a, 'maj@k': a + 0.1, 'pass@k': 0.9, 'parse_rate': 1.0}
  summary = {'k': 8, 'before': metrics(before), 'after': metrics(after), 'steps': steps, 'seconds': 30.0,
             'collapse_step': alarms[0] if alarms else None,
             'gain': {'avg@k': {'mean': after - before, 'paired_se': 0.016},
                      'maj@k': {'mean': after - before, 'paired_se': 0.02},
                      'pass@k': {'mean': 0.0, 'paired_se': 0.01}}}
  steps_ = list(range(1, steps + 1))
  hist = {'step': steps_, 'eval_avg@k': [evals.get(s) for s in steps_],
          'collapse_alarm': [int(s in alarms) for s in steps_]}
  hist.update(history)
  return {'command': command, 'shows': '', 'task': task, 'summary': summary, 'history': hist, 'trace_end': None,
          'kept': None, 'seconds': 95.0, 'shared_machine': False,
          'machine': {'cpu': 'Test CPU', 'cores': 2, 'python': '3.11', 'jax': '0.1', 'jaxlib': '0.1', 'os': 'Linux'}}


# ---------------------------------------------------------------------------------------------------------------
# Derived numbers


def test_collapse_step_is_the_first_evaluation_five_points_below_the_start():
  assert findings.collapse_step([(0, 0.60), (25, 0.58), (50, 0.551), (75, 0.55), (100, 0.40)]) == 75
  assert findings.collapse_step([(0, 0.60), (5, 0.62), (10, 0.549)]) == 10
  assert findings.collapse_step([(0, 0.60), (50, 0.56), (100, 0.70)]) is None   # 4 points is not a collapse
  assert findings.collapse_step([(0, 0.60)]) is None and findings.collapse_step([]) is None
  assert findings.collapse_step([(0, 0.5), (5, 0.3)], drop=0.25) is None


def test_series_joins_before_evaluations_and_after():
  run = fake_run(before=0.6, after=0.4, evals={5: 0.55, 10: 0.5}, steps=12)
  assert findings.series(run) == [(0, 0.6), (5, 0.55), (10, 0.5), (12, 0.4)]
  assert findings.collapse_step(findings.series(run)) == 5   # exactly 5 points below counts
  # An evaluation at the last step is the after-evaluation: one point, summary.json's.
  run = fake_run(before=0.6, after=0.4, evals={12: 0.45}, steps=12)
  assert findings.series(run) == [(0, 0.6), (12, 0.4)]


def test_alarm_step_reads_the_summary_then_the_history():
  run = fake_run(alarms=(4, 7))
  assert findings.alarm_step(run) == 4 and findings.alarm_steps(run) == [4, 7]
  del run['summary']['collapse_step']
  assert findings.alarm_step(run) == 4
  assert findings.alarm_step(fake_run()) is None


def test_mean_last_and_gain():
  run = fake_run(steps=4, kl=[0.1, 0.2, 0.3, None])
  assert findings.mean_last(run, 'kl', 2) == pytest.approx(0.25)
  assert findings.mean_last(run, 'missing', 2) is None
  del run['summary']['gain']
  g = findings.gain(run, 'maj@k')
  assert g['mean'] == pytest.approx(0.1) and g['paired_se'] is None
  run['summary']['avg@k_gain'] = {'mean': 0.1, 'paired_se': 0.02}   # today's summary.json spells it so
  assert findings.gain(run, 'avg@k') == {'mean': 0.1, 'paired_se': 0.02}


def test_history_columns_drop_timing_and_round():
  rows = [{'step': 1, 'kl': 0.0123456789, 'step_time': 1.2, 'tokens_per_s': 900.0},
          {'step': 2, 'kl': 0.02, 'eval_avg@k': 0.5, 'rollout_time': 0.2}]
  assert findings.history_columns(rows) == {'step': [1, 2], 'kl': [0.012346, 0.02], 'eval_avg@k': [None, 0.5]}


def test_end_state_is_the_most_common_answer():
  run = fake_run()
  run['trace_end'] = {'step': 9, 'question': 'State the final answer: 5 + 4 - 2 =', 'answer': '7', 'samples': [
      {'text': ' 5. \\boxed{5}', 'extracted': '5'}, {'text': ' 9 - 2 = 7. \\boxed{7}', 'extracted': '7'},
      {'text': ' 5.. \\boxed{5}', 'extracted': '5'}]}
  assert findings.end_state(run) == ('5 + 4 - 2 =', '7', ' 5. \\boxed{5}', 2, 3)
  assert findings.end_state(fake_run()) is None


def test_merge_flags_later_replaces_earlier_in_place():
  assert findings.merge_flags(['--mode=self', '--steps=100', '--lr=1'], ['--steps=2']) == [
      '--mode=self', '--steps=2', '--lr=1']


def test_registry_holds_every_table_row_and_both_seeds():
  names = set(findings.NAMES)
  for _, seed0, seed1, _ in findings.TABLE1:
    assert seed0 in names and seed1 in names
  assert set(findings.TABLE2) <= names and {'default', 'teacher', 'gt', 'lr_1e-4'} <= names
  for e in findings.REGISTRY:
    if e['name'].endswith('_seed1'):
      base = next(b for b in findings.REGISTRY if b['name'] == e['name'][:-len('_seed1')])
      assert e['flags'] == base['flags'] + ['--seed=1']

# ---------------------------------------------------------------------------------------------------------------
# Rendering


def results():
  """Hand-made results: SRT +10 points (seed 1 +5), the teacher +8, true labels +20; a collapsing run."""
  runs = {'default': fake_run(0.60, 0.70, evals={5: 0.65}), 'default_seed1': fake_run(0.62, 0.67),
          'teacher': fake_run(0.60, 0.68), 'gt': fake_run(0.60, 0.80),
          'lr_1e-4': fake_run(0.60, 0.40, evals={5: 0.66}, alarms=(8,), command='python train.py --lr'),
          'collapse': fake_run(0.25, 0.02, evals={5: 0.24, 10: 0.10, 15: 0.03}, steps=20, alarms=(6, 7),
                               task='collapse', pseudo_reward=[0.5] * 10 + [0.9] * 10,
                               true_accuracy=[0.2] * 10 + [0.05] * 10, kl=[0.1] * 20,
                               response_length=[20.0] * 20),
          'collapse_offline': fake_run(0.25, 0.20, steps=20, task='collapse', kl=[0.01] * 20)}
  runs['lr_1e-4']['summary'].update(val_before={'avg@k': 0.6}, val_after={'avg@k': 0.5}, val_best_step=5)
  runs['lr_1e-4']['history']['val_avg@k'] = [0.7 if s == 5 else None for s in range(1, 11)]
  runs['collapse_offline']['kept'] = [504, 1529]
  runs['default_seed1']['summary']['collapse_step'] = 3   # one false alarm, at step 3
  runs['default_seed1']['history']['collapse_alarm'][2] = 1
  runs['collapse']['trace_end'] = {'step': 20, 'question': '29 + 12 - 30 =', 'answer': '11', 'samples': [
      {'text': ' 29. \\boxed{29}', 'extracted': '29', 'reward': 1.0}] * 8}
  return {'runs': runs}


def rows_of(block):
  return {line.split(' | ')[0].strip('| '): line.split(' | ') for line in block.splitlines() if line.startswith('|')}


def test_main_table_from_hand_made_results():
  rows = rows_of(findings.render_main_table(results()['runs']))
  assert rows['warm start'][2:5] == ['0.600', '0.700', '0.900']
  assert rows['SRT, live policy votes'][2:] == ['0.700', '0.800', '0.900', '+10.0 ± 1.6', '+5.0 ± 1.6 |']
  assert rows['SRT, fixed teacher votes'][5:] == ['+8.0 ± 1.6', '- |']
  assert rows['RL with true labels'][5] == '+20.0 ± 1.6'


def test_rewards_table_marks_runs_not_made():
  lines = [line.split(' | ') for line in findings.render_rewards_table(results()['runs']).splitlines()
           if line.startswith('| vote') or line.startswith('| soft_vote') or line.startswith('|  |')]
  vote0, vote1, soft0, soft1 = lines[:4]
  # maj@8 is avg@8 + 0.1 in fake_run; pass@8 0.9 before and after.
  assert vote0[2:] == ['0', '0.600 -> 0.700', '+10.0 ± 1.6', '0.700 -> 0.800', '+10.0 ± 2.0', '0.900 -> 0.900',
                       '+0.0 ± 1.0', '- |']
  assert vote1[:3] == ['| ', '', '1'] and vote1[3:5] == ['0.620 -> 0.670', '+5.0 ± 1.6'] and vote1[-1] == '3 |'
  assert soft0[1] == '`--reward=soft_vote`' and soft0[3:] == ['-'] * 6 + ['- |'] and soft1[3:] == ['-'] * 6 + ['- |']


def test_collapse_table_lead_time_and_end_state():
  block = findings.render_collapse_table(results()['runs'])
  row = rows_of(block)['collapse']
  # Start 0.25, lowest 0.02 at the end (step 20), 5 points below the start first at step 10; alarm at 6.
  assert row[1:10] == ['-', '0.250', '0.020 (20)', '0.020', '10', '6', '4', '0.900', '0.050 |']
  assert rows_of(block)['collapse_online'][1] == '(not run)'
  assert 'All at seed 0. Each run is `python train.py --mode=self --data=rg:chain_sum:' in block
  assert 'it cannot fire before step 10' in block
  assert '`29 + 12 - 30 =` -> ` 29. \\boxed{29}` (8 of 8 samples; the true answer is 11)' in block


def test_alarm_counts_false_alarms_on_healthy_runs_only():
  text = findings.render_alarm(results()['runs'])
  # Healthy embedded runs: default, default_seed1, teacher, gt (lr_1e-4 fell 20 points: not healthy).
  assert 'On the 4 embedded-task runs' in text and 'fired on 1 of 40 steps, in 1 run: `default_seed1` (1)' in text


def test_early_stopping_and_lr_collapse():
  runs = results()['runs']
  text = findings.render_early_stopping(runs)
  assert 'reads 0.600, 0.700, 0.500 at steps 0, 5, 10' in text
  assert 'picks step 5, where held-out avg@8 is 0.660, against the best, 0.660 at step 5, and 0.400 at the end' in text
  assert '0.600 (step 0), 0.660 (step 5), 0.400 (step 10)' in findings.render_lr_collapse(runs)


def test_curricula_table():
  rows = rows_of(findings.render_curricula(results()['runs']))
  assert rows['collapse'][1:5] == ['-', '0.250', '-', '-'] and rows['collapse'][6] == '0.100'
  assert rows['collapse_offline'][-1] == '504 of 1529 |' and rows['collapse'][-1] == 'all |'
  assert rows['collapse'][7] == '20.0' and rows['collapse_offline'][7] == '-'


def test_extra_flags_are_what_a_run_adds_to_the_collapse_command():
  run = {'command': ' '.join(['python', 'train.py'] + findings.merge_flags(findings.COLLAPSE, ['--steps=200',
                                                                                              '--reward=random']))}
  assert findings.extra_flags(run) == '`--steps=200 --reward=random`'
  assert findings.extra_flags({'command': ' '.join(['python', 'train.py'] + findings.COLLAPSE)}) == '-'


def test_machine_block_and_missing_runs():
  text = findings.render_machine(results()['runs'])
  assert '7 runs on Test CPU (2 cores), Python 3.11, jax 0.1' in text and '11 min 5 s of run time' in text
  empty = findings.render({'runs': {}})
  assert set(empty) == set(findings.BLOCKS) and 'not run yet' in empty['quickstart']


# ---------------------------------------------------------------------------------------------------------------
# Markers

README = """# Title

Quick start: <!-- findings:quickstart -->old numbers<!-- /findings:quickstart -->. Then more.

{blocks}
Text after, with a <!-- comment --> that stays.
"""


def readme():
  keys = [k for k in findings.BLOCKS if k != 'quickstart']
  return README.format(blocks=''.join(f'<!-- findings:{k} -->\nold {k}\n<!-- /findings:{k} -->\n\n' for k in keys))


def outside_markers(text):
  """The text with everything between each marker pair removed."""
  for key in findings.BLOCKS:
    start, end = findings.marker_span(text, key)
    text = text[:start] + text[end:]
  return text


def test_replace_blocks_inline_and_whole_lines():
  text = readme()
  new = findings.replace_blocks(text, {k: f'new {k}' for k in findings.BLOCKS})
  assert 'Quick start: <!-- findings:quickstart -->new quickstart<!-- /findings:quickstart -->. Then' in new
  assert '<!-- findings:alarm -->\nnew alarm\n<!-- /findings:alarm -->\n' in new
  assert outside_markers(new) == outside_markers(text)
  assert findings.replace_blocks(new, {k: f'new {k}' for k in findings.BLOCKS}) == new   # idempotent


def test_missing_or_repeated_marker_is_an_error_naming_it():
  text = readme().replace('<!-- /findings:curricula -->', '')
  with pytest.raises(ValueError, match='README.md: missing marker pair <!-- findings:curricula -->'):
    findings.replace_blocks(text, {k: 'x' for k in findings.BLOCKS}, 'README.md')
  text = readme() + '<!-- findings:alarm -->\n<!-- /findings:alarm -->\n'
  with pytest.raises(ValueError, match='findings:alarm -->  *appears more than once|appears more than once'):
    findings.replace_blocks(text, {'alarm': 'x'})


def test_readme_only_regenerates_from_the_json(tmp_path):
  (tmp_path / 'README.md').write_text(readme())
  findings.write_json(str(tmp_path / 'findings.json'), results())
  findings.main(['--readme_only', f'--out={tmp_path / "findings.json"}', f'--readme={tmp_path / "README.md"}',
                 f'--runs_dir={tmp_path / "runs"}'])
  new = (tmp_path / 'README.md').read_text()
  assert outside_markers(new) == outside_markers(readme())
  assert '| RL with true labels | `python train.py` | 0.800 |' in new
  assert (tmp_path / 'assets' / 'rewards_avg.png').stat().st_size > 1000


def test_a_missing_marker_stops_before_any_run(tmp_path):
  (tmp_path / 'README.md').write_text(readme().replace('<!-- findings:machine -->', ''))
  with pytest.raises(ValueError, match='findings:machine'):
    findings.main(['--only=default', f'--readme={tmp_path / "README.md"}', f'--runs_dir={tmp_path / "runs"}',
                   f'--out={tmp_path / "f.json"}'])
  assert not (tmp_path / 'runs').exists()


def test_compare_runs_ignores_timing_only(tmp_path):
  for d, t in (('a', 1.0), ('b', 2.0), ('c', 1.0)):
    os.makedirs(tmp_path / d)
    kl = 0.125 if d != 'c' else 0.12500001
    (tmp_path / d / 'metrics.jsonl').write_text(json.dumps({'step': 1, 'kl': kl, 'step_time': t}) + '\n')
    (tmp_path / d / 'summary.json').write_text(json.dumps({'k': 8, 'seconds': t}))
  assert findings.compare_runs(tmp_path / 'a', tmp_path / 'b') == {
      'metrics.jsonl': None, 'summary.json': None, 'trace.jsonl': None}
  assert findings.compare_runs(tmp_path / 'a', tmp_path / 'c')['metrics.jsonl'] == 'line 1 differs in kl'


def test_prepare_workdir_refuses_a_folder_it_did_not_make(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='not a run of this script'):
    findings.prepare_workdir(str(tmp_path))
  assert (tmp_path / 'notes.txt').exists()


def test_unknown_run_name_is_an_error(capsys):
  with pytest.raises(SystemExit):
    findings.parse_args(['--only=defualt'])
  assert 'unknown run defualt' in capsys.readouterr().err


def test_a_smoke_run_must_not_write_the_real_results(capsys, tmp_path):
  with pytest.raises(SystemExit):
    findings.parse_args(['--only=default', '--steps=2'])
  assert 'pass --out and --readme too' in capsys.readouterr().err
  args = findings.parse_args(['--steps=2', f'--out={tmp_path / "f.json"}', f'--readme={tmp_path / "README.md"}'])
  assert args.out == str(tmp_path / 'f.json')
  assert findings.parse_args([]).out == os.path.join(ROOT, 'assets', 'findings.json')

def test_the_readme_holds_every_marker():
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  for key in findings.BLOCKS:
    findings.marker_span(text, key, 'README.md')


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, 'assets', 'findings.json')),
                    reason='no assets/findings.json yet: run python bench/findings.py')
def test_the_readme_is_what_the_json_says(tmp_path):
  """The README's findings are the shipped JSON's, rendered: regenerating them changes nothing."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  (tmp_path / 'README.md').write_text(text)
  findings.main(['--readme_only', f'--readme={tmp_path / "README.md"}', f'--runs_dir={tmp_path / "runs"}'])
  assert (tmp_path / 'README.md').read_text() == text, 'README.md is stale: python bench/findings.py --readme_only'

# ---------------------------------------------------------------------------------------------------------------
# The runner, on a stand-in train.py (fast): subprocesses, progress, the JSON, --jobs, --repeat, a failing run

FAKE_TRAIN = """import json, os, sys, time
args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
if args['mode'] == 'gt':
  sys.exit('error: gt is broken today')
wd, steps = args['workdir'], int(args['steps'])
acc = lambda a: {'avg@k': a, 'maj@k': a, 'pass@k': a, 'parse_rate': 1.0}
print('offline curriculum: kept 5 of 15 prompts', flush=True)
print('eval 64/256 prompts: 2.3 prompts/s', flush=True)
with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
  for s in range(1, steps + 1):
    print(f'step {s}/{steps} | reward 0.500 | 0.01 s/step', flush=True)
    f.write(json.dumps({'step': s, 'kl': 0.01 * s, 'step_time': time.time()}) + '\\n')
with open(os.path.join(wd, 'trace.jsonl'), 'w') as f:
  f.write(json.dumps({'step': steps, 'question': '1 + 1 =', 'answer': '2', 'samples': []}) + '\\n')
with open(os.path.join(wd, 'summary.json'), 'w') as f:
  json.dump({'k': 8, 'before': acc(0.5), 'after': acc(0.625), 'steps': steps, 'seconds': time.time()}, f)
time.sleep(0.5)   # long enough for two runs at once to overlap
"""


def run_fake(tmp_path, monkeypatch, *args):
  (tmp_path / 'root').mkdir(exist_ok=True)
  (tmp_path / 'root' / 'train.py').write_text(FAKE_TRAIN)
  (tmp_path / 'README.md').write_text(readme())
  monkeypatch.setattr(findings, 'ROOT', str(tmp_path / 'root'))
  findings.main([*args, f'--runs_dir={tmp_path / "runs"}', f'--out={tmp_path / "f.json"}',
                 f'--readme={tmp_path / "README.md"}'])
  return json.loads((tmp_path / 'f.json').read_text())


def test_runner_records_runs_progress_and_determinism(tmp_path, monkeypatch, capsys):
  res = run_fake(tmp_path, monkeypatch, '--only=default,collapse_offline', '--steps=12', '--jobs=2',
                 '--repeat=default')
  out = capsys.readouterr().out
  run = res['runs']['default']
  assert run['command'] == 'python train.py --mode=self --steps=12'
  assert run['history'] == {'step': list(range(1, 13)), 'kl': [round(0.01 * s, 5) for s in range(1, 13)]}
  assert run['summary']['after']['avg@k'] == 0.625 and run['kept'] == [5, 15] and run['trace_end']['step'] == 12
  assert run['shared_machine'] and res['runs']['collapse_offline']['shared_machine']   # three runs, two at once
  assert res['determinism']['default']['differences'] == {
      'metrics.jsonl': None, 'summary.json': None, 'trace.jsonl': None}
  assert '[default] step 10/12' in out and '[default] step 12/12' in out and '[default] step 3/12' not in out
  assert '[default] start at' in out and '[default] done in' in out and '[default] offline curriculum' in out
  assert 'eval 64/256' not in out and 'eval 64/256' in (tmp_path / 'runs' / 'default' / 'stdout.log').read_text()
  readme_now = (tmp_path / 'README.md').read_text()
  assert 'held-out avg@8 0.500 -> 0.625' in readme_now and 'bit-identical' in readme_now
  assert outside_markers(readme_now) == outside_markers(readme())
  # A second invocation with --only keeps the other runs' results.
  res = run_fake(tmp_path, monkeypatch, '--only=collapse', '--steps=3')
  assert set(res['runs']) == {'default', 'collapse_offline', 'collapse'}


def test_a_failing_run_keeps_the_others_and_leaves_the_readme(tmp_path, monkeypatch):
  with pytest.raises(SystemExit, match='gt: .*exited with 1'):
    run_fake(tmp_path, monkeypatch, '--only=default,gt', '--steps=2')
  assert set(json.loads((tmp_path / 'f.json').read_text())['runs']) == {'default'}
  assert (tmp_path / 'README.md').read_text() == readme()
  assert 'gt is broken today' in (tmp_path / 'runs' / 'gt' / 'stdout.log').read_text()

# ---------------------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_two_steps_of_the_default_fill_the_json_and_the_readme(tmp_path):
  (tmp_path / 'README.md').write_text(readme())
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  p = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'findings.py'), '--only', 'default', '--steps', '2',
                      '--eval_prompts', '16', '--runs_dir', str(tmp_path / 'runs'),
                      '--out', str(tmp_path / 'findings.json'), '--readme', str(tmp_path / 'README.md')],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  assert '[default] start at' in p.stdout and '[default] done in' in p.stdout
  run = json.loads((tmp_path / 'findings.json').read_text())['runs']['default']
  assert run['command'] == 'python train.py --mode=self --steps=2 --eval_prompts=16'
  assert run['history']['step'] == [1, 2] and 'step_time' not in run['history']
  assert 0 <= run['summary']['before']['avg@k'] <= 1 and 0 <= run['summary']['after']['avg@k'] <= 1
  assert run['seconds'] > 0 and run['machine']['cores'] >= 1 and run['shared_machine'] is False
  new = (tmp_path / 'README.md').read_text()
  assert outside_markers(new) == outside_markers(readme())
  quick = new[slice(*findings.marker_span(new, 'quickstart'))]
  assert quick.startswith('held-out avg@8 ') and f'{run["summary"]["after"]["avg@k"]:.3f}' in quick
  assert (tmp_path / 'assets' / 'curves_srt_default.png').exists()
  assert (tmp_path / 'runs' / 'default' / 'stdout.log').stat().st_size > 0
