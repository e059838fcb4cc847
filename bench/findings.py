"""Every number in the README's findings comes from this script: it runs the experiments with the project's own
commands, keeps their results in one JSON file, and regenerates the README's tables, numbers and figures from it.

    python bench/findings.py                      # every run of REGISTRY, then README.md and the figures
    python bench/findings.py --only default,gt    # just these runs (the other results in the JSON are kept)
    python bench/findings.py --readme_only        # README.md and the figures from assets/findings.json, no runs
    python bench/findings.py --repeat default     # runs `default` twice: are its logs bit-identical?
    python bench/findings.py --jobs 2             # two runs at once
    python bench/findings.py --only default --steps 2 --runs_dir /tmp/r --out /tmp/f.json --readme /tmp/README.md
                  # a two-step smoke test on a copy of README.md, leaving the project's files alone

Each run is `python train.py FLAGS --workdir=RUNS_DIR/NAME` in a subprocess (stdout saved as stdout.log there;
the workdir is emptied first, since train.py resumes from a workdir's checkpoints). The JSON (--out) holds, per
run, its command, summary.json, its per-step metrics (timing fields aside, 5 significant digits), the end state of
its trace, its wall time and the machine it ran on. The figures are drawn from it, except the two training-curve
figures, copied from the runs' workdirs (left as they are when a workdir is gone). The README's generated parts
sit between `<!-- findings:KEY -->` and `<!-- /findings:KEY -->` (KEY in BLOCKS); nothing outside the markers is
touched, and a missing marker stops the script before any run starts. A marker followed by a line break holds
whole lines (a table); one followed by text on its line holds inline text.

Time: the default run alone takes about 4 minutes on an idle 2-core CPU; 29 of the 30 runs with --jobs 2 took about 2
hours there (7-12 minutes a run while two share the machine). Results are deterministic on one machine: `--jobs 2`
gives the same numbers, only the times differ (a run that shared the machine is marked so in the JSON and the README).
"""
import argparse
import collections
import concurrent.futures
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import alarm as alarm_lib  # noqa: E402  (the collapse alarm's constants, for the tables' notes)

# ----------------------------------------------------------------------------------------------------------------
# The registry: one entry per run. `flags` follow `python train.py`; later flags of a name replace earlier ones.

COLLAPSE = ['--mode=self', '--data=rg:chain_sum:min_terms=3,max_terms=4,min_digits=1,max_digits=2',
            '--learning_rate=1e-4', '--max_new_tokens=64', '--eval_prompts=128', '--eval_every=5', '--steps=100']
REWARDS = [('soft_vote', ['--reward=soft_vote']), ('self_certainty', ['--reward=self_certainty']),
           ('neg_entropy', ['--reward=neg_entropy']), ('random', ['--reward=random']),
           ('format', ['--reward=format']), ('ema', ['--label_source=ema']), ('ttrl', ['--vote_samples=16'])]


def merge_flags(*groups):
  """Flag lists joined; a later `--name=...` replaces an earlier one in place (one flag, one value)."""
  out = {}
  for flag in (f for g in groups for f in g):
    out[flag.split('=', 1)[0]] = flag
  return list(out.values())


def entry(name, flags, shows, task='embedded'):
  return {'name': name, 'flags': merge_flags(flags), 'shows': shows, 'task': task}


def seeds(name, flags, shows):
  """A claim that depends on the seed: the run at seed 0 and at seed 1."""
  return [entry(name, flags, shows), entry(f'{name}_seed1', flags + ['--seed=1'], shows + ' (seed 1)')]


REGISTRY = [
    *seeds('default', ['--mode=self'], 'SRT on the embedded default: quick start, main table, Table 1'),
    *seeds('teacher', ['--mode=self', '--label_source=teacher'], 'SRT with the fixed teacher\'s votes'),
    *seeds('gt', ['--mode=gt'], 'RL with true labels'),
    entry('lr_1e-4', ['--mode=self', '--learning_rate=1e-4', '--eval_every=25', '--val_prompts=32'],
          'a learning rate twice the default collapses; early stopping on 32 labelled prompts'),
    *[e for reward, flags in REWARDS for e in seeds(f'reward_{reward}', ['--mode=self'] + flags,
                                                    f'Table 1: {" ".join(flags)}')],
    entry('collapse', COLLAPSE, 'Table 2: prolonged SRT on prompts too hard for the policy', 'collapse'),
    entry('collapse_online', COLLAPSE + ['--agreement_threshold=0.6'], 'online curriculum', 'collapse'),
    entry('collapse_offline', merge_flags(COLLAPSE, ['--easiest_fraction=0.33', '--data_size=1536', '--steps=200',
                                                     '--eval_every=25']), 'offline curriculum', 'collapse'),
    *[entry(f'collapse_{reward}', COLLAPSE + flags, f'Table 2: {flags[0]}', 'collapse') for reward, flags in
      REWARDS[:5]],
    entry('collapse_gt', merge_flags(COLLAPSE, ['--mode=gt']), 'Table 2: true labels, the control that should not '
          'collapse (does the alarm stay quiet?)', 'collapse'),
]
NAMES = [e['name'] for e in REGISTRY]
assert len(set(NAMES)) == len(NAMES), 'REGISTRY: duplicate run names'

# Table 1's rows: label, run at seed 0, run at seed 1, the flags that make it.
LABELS = {'ema': 'EMA teacher', 'ttrl': 'TTRL split (16 vote, 8 train)'}
TABLE1 = [('vote (SRT)', 'default', 'default_seed1', '(default)')] + [
    (LABELS.get(reward, reward), f'reward_{reward}', f'reward_{reward}_seed1', ' '.join(flags))
    for reward, flags in REWARDS] + [('true labels', 'gt', 'gt_seed1', '--mode=gt')]
TABLE2 = (['collapse', 'collapse_online', 'collapse_offline'] + [f'collapse_{r}' for r, _ in REWARDS[:5]]
          + ['collapse_gt'])
TIMING = {'step_time', 'rollout_time', 'update_time', 'tokens_per_s', 'seconds'}
DROP = 0.05   # "collapsed": held-out avg@k 5 points below its start

# ----------------------------------------------------------------------------------------------------------------
# Reading a finished workdir into the JSON's record


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def short(v):
  """5 significant digits: the JSON stays small, and no reported number needs more."""
  return float(f'{v:.5g}') if isinstance(v, float) else v


def history_columns(rows):
  """metrics.jsonl rows -> {key: [value per step or None]}, timing fields left out (they vary run to run)."""
  keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in TIMING]
  return {k: [short(r.get(k)) for r in rows] for k in keys}


def trace_end(trace_rows):
  """The first traced prompt of the last traced step: the end state a reader can look at."""
  if not trace_rows:
    return None
  last = max(r['step'] for r in trace_rows)
  return next(r for r in trace_rows if r['step'] == last)


def collect(workdir):
  def path(name):
    return os.path.join(workdir, name)
  with open(path('summary.json')) as f:
    summary = json.load(f)
  trace = read_jsonl(path('trace.jsonl')) if os.path.exists(path('trace.jsonl')) else []
  with open(path('stdout.log')) as f:
    m = re.search(r'kept (\d+) of (\d+) prompts', f.read())   # the offline curriculum's report
  return {'summary': summary, 'history': history_columns(read_jsonl(path('metrics.jsonl'))),
          'trace_end': trace_end(trace), 'kept': [int(m[1]), int(m[2])] if m else None}


def machine():
  cpu = platform.processor() or 'unknown CPU'
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()

  def version(pkg):
    try:
      return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      return None
  return {'cpu': cpu, 'cores': cores, 'python': platform.python_version(), 'jax': version('jax'),
          'jaxlib': version('jaxlib'), 'os': platform.platform()}


def compare_runs(dir_a, dir_b):
  """Whether two workdirs of one command hold the same logs, timing fields aside: {file: first difference or
  None}. Floats are compared as written (repr), so equal here means bit-identical."""
  def strip(x):
    return {k: v for k, v in x.items() if k not in TIMING} if isinstance(x, dict) else x

  def rows(d, name):
    p = os.path.join(d, name)
    if name.endswith('.json'):
      with open(p) as f:
        return [strip(json.load(f))]
    return [strip(r) for r in read_jsonl(p)] if os.path.exists(p) else []

  out = {}
  for name in ('metrics.jsonl', 'summary.json', 'trace.jsonl'):
    a, b = rows(dir_a, name), rows(dir_b, name)
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if diff is not None:
      keys = sorted(k for k in set(a[diff]) | set(b[diff]) if a[diff].get(k) != b[diff].get(k))
      out[name] = f'line {diff + 1} differs in {", ".join(keys)}'
    else:
      out[name] = None if len(a) == len(b) else f'{len(a)} lines against {len(b)}'
  return out

# ----------------------------------------------------------------------------------------------------------------
# Running: one subprocess per run, up to --jobs at once, the JSON written after each


class Runner:
  STEP = re.compile(r'^step (\d+)/(\d+) \|')
  EVAL_PROGRESS = re.compile(r'^eval \d+/\d+ prompts')

  def __init__(self, args, results):
    self.args, self.results = args, results
    self.lock = threading.Lock()
    self.running, self.shared = set(), set()
    self.failed = []

  def say(self, text):
    with self.lock:
      print(text, flush=True)

  def command(self, spec):
    flags = merge_flags(spec['flags'], [f'--steps={self.args.steps}'] if self.args.steps else [],
                        [f'--eval_prompts={self.args.eval_prompts}'] if self.args.eval_prompts else [])
    return ['python', 'train.py', *flags]

  def start(self, key):
    # Two runs overlap iff one starts while the other runs: mark both.
    with self.lock:
      if self.running:
        self.shared |= self.running | {key}
      self.running.add(key)

  def run(self, spec, workdir, key):
    cmd = self.command(spec)
    prepare_workdir(workdir)
    self.say(f'[{key}] start at {time.strftime("%H:%M:%S")}: {" ".join(cmd)} --workdir={workdir}')
    self.start(key)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    t0 = time.monotonic()
    try:
      with open(os.path.join(workdir, 'stdout.log'), 'w') as log, subprocess.Popen(
          [sys.executable, *cmd[1:], f'--workdir={os.path.abspath(workdir)}'], cwd=ROOT, env=env, text=True,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
          log.write(line)
          m = self.STEP.match(line)
          # Step lines every 10 steps and the last; evaluation results, warnings and errors as they come (an
          # evaluation's own progress lines only in stdout.log).
          if line.strip() and not self.EVAL_PROGRESS.match(line) and (not m or int(m[1]) % 10 == 0 or m[1] == m[2]):
            self.say(f'[{key}] {line.rstrip()}')
    finally:
      seconds = time.monotonic() - t0
      with self.lock:
        self.running.discard(key)
    if proc.returncode:
      raise RuntimeError(f'[{key}] `{" ".join(cmd)}` exited with {proc.returncode} after {duration(seconds)}; '
                         f'its output: {os.path.join(workdir, "stdout.log")}')
    self.say(f'[{key}] done in {duration(seconds)}')
    return {'command': ' '.join(cmd), 'shows': spec['shows'], 'task': spec['task'], **collect(workdir),
            'seconds': round(seconds, 1), 'machine': machine(),
            'finished': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}

  def record(self, key, rec):
    rec['shared_machine'] = key in self.shared
    if not key.endswith('#2'):   # a repeat is compared, not reported
      self.results.setdefault('runs', {})[key] = rec

  def run_all(self, specs, repeat):
    jobs = [(s, os.path.join(self.args.runs_dir, s['name']), s['name']) for s in specs]
    jobs += [(s, os.path.join(self.args.runs_dir, s['name'] + '.repeat'), s['name'] + '#2') for s in repeat]
    m = machine()
    self.say(f'{len(jobs)} runs, up to {self.args.jobs} at once, in {self.args.runs_dir}, on {m["cpu"]} '
             f'({m["cores"]} cores), Python {m["python"]}, jax {m["jax"]}')
    recs = {}
    with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as pool:
      futures = {pool.submit(self.run, *job): job for job in jobs}
      for i, fut in enumerate(concurrent.futures.as_completed(futures)):
        _, _, key = futures[fut]
        try:
          recs[key] = fut.result()
          with self.lock:   # written after each run: a crash later keeps the runs done
            self.record(key, recs[key])
            write_json(self.args.out, self.results)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
          self.failed.append(f'{key}: {e}')
          self.say(f'[{key}] FAILED: {e}')
        self.say(f'{i + 1} of {len(jobs)} runs finished')
    # Shared flags are final only now: a run that ended early may have overlapped one that started later.
    for key, rec in recs.items():
      self.record(key, rec)
    for spec in repeat:
      a, b = (os.path.join(self.args.runs_dir, spec['name'] + s) for s in ('', '.repeat'))
      if spec['name'] in recs and spec['name'] + '#2' in recs:
        self.results.setdefault('determinism', {})[spec['name']] = {
            'command': recs[spec['name']]['command'], 'differences': compare_runs(a, b)}
    write_json(self.args.out, self.results)


def prepare_workdir(workdir):
  """An empty workdir: train.py would resume from a stale one. Refuses to delete a folder no run wrote."""
  if os.path.isdir(workdir) and os.listdir(workdir):
    if not {'stdout.log', 'metrics.jsonl', 'summary.json'} & set(os.listdir(workdir)):
      raise ValueError(f'{workdir} is not a run of this script (no stdout.log, metrics.jsonl or summary.json); '
                       'not deleting it: pass another --runs_dir')
    shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)


def dumps(x, indent=0):
  """JSON with a line per key, but lists and flat dicts on one line: readable diffs, not a line per number."""
  if isinstance(x, dict) and any(isinstance(v, (dict, list)) for v in x.values()):
    pad = ' ' * (indent + 1)
    items = [f'{pad}{json.dumps(k)}: {dumps(v, indent + 1)}' for k, v in x.items()]
    return '{\n' + ',\n'.join(items) + '\n' + ' ' * indent + '}'
  return json.dumps(x)


def write_json(path, results):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    f.write(dumps(results) + '\n')
  os.replace(path + '.tmp', path)   # a run killed mid-write leaves the previous file whole

# ----------------------------------------------------------------------------------------------------------------
# Numbers derived from a run's record (at render time, so a changed derivation needs no rerun)


def last_step(run):
  steps = run['history'].get('step') or [0]
  return run['summary'].get('steps') or steps[-1]


def series(run, metric='avg@k', prefix='eval_', before='before', after='after'):
  """(step, held-out metric) at every evaluation: step 0 and the end from summary.json, the rest from metrics."""
  s, h = run['summary'], run['history']
  pts = {0: s[before][metric]} if before in s else {}
  pts.update((st, v) for st, v in zip(h.get('step', []), h.get(prefix + metric, [])) if v is not None)
  if after in s:
    pts[last_step(run)] = s[after][metric]
  return sorted(pts.items())


def collapse_step(points, drop=DROP):
  """The first step whose score is `drop` or more below the start's (points: sorted (step, score)), or None."""
  if not points:
    return None
  start = points[0][1]
  return next((st for st, v in points[1:] if v <= start - drop + 1e-9), None)


def alarm_steps(run):
  return [st for st, a in zip(run['history'].get('step', []), run['history'].get('collapse_alarm', [])) if a]


def alarm_step(run):
  """The first step the label-free collapse alarm fired (summary.json's collapse_step), or None."""
  if 'collapse_step' in run['summary']:
    return run['summary']['collapse_step']
  return (alarm_steps(run) or [None])[0]


def mean_last(run, key, n):
  vals = [v for v in run['history'].get(key, []) if v is not None][-n:]
  return sum(vals) / len(vals) if vals else None


def gain(run, metric):
  """{'mean', 'paired_se'} of after - before; the SE is None where summary.json has none."""
  s = run['summary']
  g = s.get('gain', {}).get(metric) or (s.get('avg@k_gain') if metric == 'avg@k' else None)
  if g is None and 'before' in s and 'after' in s:
    g = {'mean': s['after'][metric] - s['before'][metric], 'paired_se': None}
  return g


def end_state(run):
  """The most common answer of the last traced prompt: (question, true answer, a text with it, count, of)."""
  t = run.get('trace_end')
  if not t or not t.get('samples'):
    return None
  counts = collections.Counter(s['extracted'] for s in t['samples'])
  answer, n = counts.most_common(1)[0]
  text = next(s['text'] for s in t['samples'] if s['extracted'] == answer)
  # A reasoning-gym question opens with an instruction ("State the final answer to ...: 7 - 3 + 8 ="); the
  # problem after it is what a reader needs.
  question = t['question'].rsplit(': ', 1)[-1] or t['question']
  return question, t['answer'], text, n, len(t['samples'])

# ----------------------------------------------------------------------------------------------------------------
# Rendering: Markdown from the JSON


def num(x):
  return '-' if x is None else f'{x:.3f}'


def one_decimal(x):
  return '-' if x is None else f'{x:.1f}'


def pts(g):
  """A gain in points of the metric, with its paired standard error when known: +12.5 ± 1.6."""
  if g is None:
    return '-'
  return f'{100 * g["mean"]:+.1f}' + (f' ± {100 * g["paired_se"]:.1f}' if g.get('paired_se') is not None else '')


def duration(seconds):
  m, s = divmod(round(seconds), 60)
  h, m = divmod(m, 60)
  return f'{h} h {m} min' if h else f'{m} min {s} s' if m else f'{s} s'


def code(text):
  """Inline code that survives a Markdown table: pipes escaped, line breaks shown as spaces."""
  return '`' + str(text).replace('\n', ' ').replace('|', '\\|') + '`'


def runs_count(n):
  return f'{n} run' + 's' * (n != 1)


def table(header, rows):
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def k_of(runs):
  return next((r['summary'].get('k') for r in runs.values() if 'k' in r['summary']), 'k')


def before_after(run, metric='avg@k'):
  s = run['summary']
  return f'{num(s["before"][metric])} -> {num(s["after"][metric])}' if 'after' in s else '-'


def render_quickstart(runs):
  run = runs.get('default')
  if run is None:
    return '(not run yet: `python bench/findings.py --only default`)'
  s, k, m = run['summary'], run['summary']['k'], run['machine']
  return (f'held-out avg@{k} {num(s["before"]["avg@k"])} -> {num(s["after"]["avg@k"])}, maj@{k} '
          f'{num(s["before"]["maj@k"])} -> {num(s["after"]["maj@k"])}, in {duration(run["seconds"])} '
          f'({m["cpu"]}, {m["cores"]} cores)')


def render_main_table(runs):
  k = k_of(runs)
  header = ['run', 'command', f'avg@{k}', f'maj@{k}', f'pass@{k}', f'avg@{k} gain', f'seed 1: avg@{k} gain']
  rows = []
  if 'default' in runs:
    b = runs['default']['summary']['before']
    rows.append(['warm start', '(before)', num(b['avg@k']), num(b['maj@k']), num(b['pass@k']), '-', '-'])
  for label, name in (('SRT, live policy votes', 'default'), ('SRT, fixed teacher votes', 'teacher'),
                      ('RL with true labels', 'gt')):
    run, seed1 = runs.get(name), runs.get(name + '_seed1')
    if run is None:
      rows.append([label, '(not run)', '-', '-', '-', '-', pts(seed1 and gain(seed1, 'avg@k'))])
      continue
    a = run['summary'].get('after', {})
    rows.append([label, code(run['command']), num(a.get('avg@k')), num(a.get('maj@k')), num(a.get('pass@k')),
                 pts(gain(run, 'avg@k')), pts(seed1 and gain(seed1, 'avg@k'))])
  note = f'Gains in points of avg@{k}, ± the paired standard error over the held-out prompts.'
  return table(header, rows) + '\n\n' + note


def render_rewards_table(runs):
  """Table 1: a row per reward and seed, each metric before -> after with its gain."""
  k = k_of(runs)
  header = ['reward', 'flags', 'seed', f'avg@{k}', 'gain', f'maj@{k}', 'gain', f'pass@{k}', 'gain', 'alarm step']
  rows = []
  for label, name0, name1, flags in TABLE1:
    for seed, run in ((0, runs.get(name0)), (1, runs.get(name1))):
      cells = [c for metric in ('avg@k', 'maj@k', 'pass@k')
               for c in (run and before_after(run, metric) or '-', pts(run and gain(run, metric)))]
      alarm = '-' if run is None or alarm_step(run) is None else str(alarm_step(run))
      rows.append([label if seed == 0 else '', code(flags) if seed == 0 else '', seed, *cells, alarm])
  base = ' '.join(['python train.py'] + next(e['flags'] for e in REGISTRY if e['name'] == 'default'))
  return table(header, rows) + (f'\n\nEach run is the default command (`{base}`) with these flags, and `--seed=1` '
                                'for seed 1; gains in points ± paired standard error over the held-out prompts.')


def extra_flags(run):
  """The flags a collapse-setting run adds to (or changes in) COLLAPSE, as inline code; '-' for none."""
  base = set(COLLAPSE)
  extra = [f for f in run['command'].split()[2:] if f not in base]
  return code(' '.join(extra)) if extra else '-'


def collapse_note():
  return f'All at seed 0. Each run is `python train.py {" ".join(COLLAPSE)}` with the flags shown.'


def render_collapse_table(runs):
  k = k_of(runs)
  header = ['run', 'flags', f'avg@{k} start', 'min (step)', 'end', 'collapse step', 'alarm step', 'lead time',
            'pseudo-reward, last 10', 'true accuracy, last 10']
  rows, examples = [], []
  for name in TABLE2:
    run = runs.get(name)
    if run is None:
      rows.append([name, '(not run)'] + ['-'] * (len(header) - 2))
      continue
    pts_ = series(run)
    low = min(pts_, key=lambda p: p[1]) if pts_ else None
    fell, alarm = collapse_step(pts_), alarm_step(run)
    lead = '-' if fell is None or alarm is None else str(fell - alarm)
    rows.append([name, extra_flags(run), num(pts_[0][1]) if pts_ else '-',
                 f'{num(low[1])} ({low[0]})' if low else '-', num(pts_[-1][1]) if pts_ else '-',
                 'none' if fell is None else str(fell), '-' if alarm is None else str(alarm), lead,
                 num(mean_last(run, 'pseudo_reward', 10)), num(mean_last(run, 'true_accuracy', 10))])
    state = end_state(run)
    if state:
      q, answer, text, n, of = state
      examples.append(f'- `{name}` at step {run["trace_end"]["step"]}: {code(q)} -> {code(text)} ({n} of {of} '
                      f'samples; the true answer is {answer})')
  note = (f'\n\n{collapse_note()} Collapse step: the first evaluation where held-out avg@{k} is '
          f'{round(100 * DROP)} points or more below its start; lead time: collapse step minus the first step the '
          f'label-free alarm fired (it cannot fire before step {max(alarm_lib.WINDOW, alarm_lib.BASELINE)}). The '
          'end state, the most common answer to the last traced prompt:\n\n')
  return table(header, rows) + note + '\n'.join(examples or ['- (no trace)'])


def render_alarm(runs):
  healthy = {n: r for n, r in runs.items() if r.get('task') == 'embedded' and collapse_step(series(r)) is None}
  logged = {n: r for n, r in healthy.items() if 'collapse_alarm' in r['history']}
  if not logged:
    return 'No healthy embedded-task run logs `collapse_alarm` yet.'
  fired = {n: len(alarm_steps(r)) for n, r in logged.items() if alarm_steps(r)}
  total = sum(len(r['history']['step']) for r in logged.values())
  which = ', '.join(f'`{n}` ({c})' for n, c in sorted(fired.items())) or 'none'
  return (f'On the {len(logged)} embedded-task runs whose held-out avg@{k_of(runs)} never fell '
          f'{round(100 * DROP)} points below its start, the collapse alarm fired on {sum(fired.values())} of '
          f'{total} steps, in {runs_count(len(fired))}: {which}.')


def render_lr_collapse(runs):
  run = runs.get('lr_1e-4')
  if run is None:
    return '(not run yet: `python bench/findings.py --only lr_1e-4`)'
  k = run['summary']['k']
  held = ', '.join(f'{num(v)} (step {st})' for st, v in series(run))
  text = (f'At learning rate 1e-4 held-out avg@{k} reads {held}, while the pseudo-reward of the last 10 steps is '
          f'{num(mean_last(run, "pseudo_reward", 10))} and the true accuracy of the samples '
          f'{num(mean_last(run, "true_accuracy", 10))}.')
  state = end_state(run)
  if state:
    q, answer, t, n, of = state
    text += f' At the end, {n} of {of} samples of {code(q)} read {code(t)} (the true answer is {answer}).'
  return text + f' Command: {code(run["command"])}.'


def render_early_stopping(runs):
  run = runs.get('lr_1e-4')
  if run is None or 'val_best_step' not in run['summary']:
    return '(not run yet: `python bench/findings.py --only lr_1e-4`)'
  k, pick = run['summary']['k'], run['summary']['val_best_step']
  val = series(run, prefix='val_', before='val_before', after='val_after')
  held = dict(series(run))
  best = max(held.items(), key=lambda p: (p[1], -p[0]))
  return (f'Validation avg@{k} reads {", ".join(num(v) for _, v in val)} at steps '
          f'{", ".join(str(st) for st, _ in val)}; early stopping picks step {pick}, where held-out avg@{k} is '
          f'{num(held.get(pick))}, against the best, {num(best[1])} at step {best[0]}, and '
          f'{num(held[last_step(run)]) if last_step(run) in held else "-"} at the end.')


def render_curricula(runs):
  k = k_of(runs)
  header = ['run', 'flags', f'avg@{k} start', 'step 25', 'step 50', 'end (step)', 'KL, last 30 steps',
            'response length, last 30', 'prompts kept']
  rows = []
  for name in TABLE2[:3]:
    run = runs.get(name)
    if run is None:
      rows.append([name, '(not run)'] + ['-'] * (len(header) - 2))
      continue
    held = dict(series(run))
    end = last_step(run)
    rows.append([name, extra_flags(run), num(held.get(0)), num(held.get(25)), num(held.get(50)),
                 f'{num(held.get(end))} ({end})', num(mean_last(run, 'kl', 30)),
                 one_decimal(mean_last(run, 'response_length', 30)), kept(run)])
  return table(header, rows) + '\n\n' + collapse_note()


def kept(run):
  """The offline curriculum's "kept N of M prompts", or the online one's share of each batch that had a label."""
  if run.get('kept'):
    return f'{run["kept"][0]} of {run["kept"][1]}'
  if '--agreement_threshold' in run['command'] and run['history'].get('labelled_fraction'):
    return f'{mean_last(run, "labelled_fraction", 10 ** 6):.2f} of each batch'
  return 'all'


def render_machine(runs):
  if not runs:
    return '(no runs yet)'
  machines = collections.Counter(json.dumps(r['machine'], sort_keys=True) for r in runs.values())
  lines = []
  for m, n in machines.most_common():
    m = json.loads(m)
    lines.append(f'- {runs_count(n)} on {m["cpu"]} ({m["cores"]} cores), Python {m["python"]}, jax {m["jax"]}, jaxlib '
                 f'{m["jaxlib"]}, {m["os"]}')
  total = sum(r['seconds'] for r in runs.values())
  shared = sum(r.get('shared_machine', False) for r in runs.values())
  lines.append(f'- {runs_count(len(runs))}, {duration(total)} of run time in all'
               + (f'; {shared} shared the machine with another run (their times are longer)' if shared else ''))
  rows = [[n, code(r['command']), last_step(r), duration(r['seconds']), 'yes' if r.get('shared_machine') else 'no']
          for n, r in runs.items()]
  return '\n'.join(lines) + '\n\n' + table(['run', 'command', 'steps', 'time', 'shared'], rows)


def render_determinism(results):
  checks = results.get('determinism', {})
  if not checks:
    return '(no run repeated yet: `python bench/findings.py --only default --repeat default`)'
  out = []
  for name, c in checks.items():
    diffs = {f: d for f, d in c['differences'].items() if d}
    verdict = 'bit-identical' if not diffs else 'different: ' + '; '.join(f'{f} {d}' for f, d in diffs.items())
    out.append(f'`{name}` run twice ({code(c["command"])}): metrics.jsonl (timing fields aside), summary.json and '
               f'trace.jsonl {verdict}.')
  return ' '.join(out)


BLOCKS = {'quickstart': render_quickstart, 'main_table': render_main_table, 'rewards_table': render_rewards_table,
          'collapse_table': render_collapse_table, 'alarm': render_alarm, 'lr_collapse': render_lr_collapse,
          'early_stopping': render_early_stopping, 'curricula': render_curricula, 'machine': render_machine,
          'determinism': render_determinism}
WHOLE = {'determinism'}   # renderers that read the whole JSON rather than its runs


def render(results):
  runs = results.get('runs', {})
  return {key: fn(results if key in WHOLE else runs) for key, fn in BLOCKS.items()}

# ----------------------------------------------------------------------------------------------------------------
# The README: replace what lies between markers, nothing else


def marker_span(text, key, source='README'):
  """(start, end) of the text between `<!-- findings:KEY -->` and `<!-- /findings:KEY -->`; loud if absent."""
  open_, close = f'<!-- findings:{key} -->', f'<!-- /findings:{key} -->'
  i, j = text.find(open_), text.find(close)
  if i < 0 or j < 0 or j < i:
    raise ValueError(f'{source}: missing marker pair {open_} ... {close}')
  if text.count(open_) > 1 or text.count(close) > 1:
    raise ValueError(f'{source}: marker {open_} appears more than once')
  return i + len(open_), j


def replace_blocks(text, blocks, source='README'):
  """The README with each block's text between its markers: after a marker that ends its line, as whole lines;
  otherwise inline. Every marker is checked before anything is replaced."""
  spans = {key: marker_span(text, key, source) for key in blocks}
  for key, (start, end) in sorted(spans.items(), key=lambda kv: -kv[1][0]):
    body = blocks[key].strip('\n')
    if text[start:start + 1] == '\n':
      body = '\n' + body + '\n'
    text = text[:start] + body + text[end:]
  return text


def write_figures(results, runs_dir, fig_dir):
  """The figures the README shows: two runs' training curves (copied from their workdirs when present) and
  held-out avg@k against step for every Table 1 reward at seed 0 (from the JSON)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  os.makedirs(fig_dir, exist_ok=True)
  for name, fig in (('default', 'curves_srt_default.png'), ('collapse', 'curves_collapse.png')):
    src = os.path.join(runs_dir, name, 'training_curves.png')
    if os.path.exists(src):
      shutil.copyfile(src, os.path.join(fig_dir, fig))
    else:
      print(f'{fig}: no {src}, kept as it was', flush=True)
  runs = results.get('runs', {})
  fig, ax = plt.subplots(figsize=(8, 5))
  for label, name, _, _ in TABLE1:
    if name in runs and series(runs[name]):
      x, y = zip(*series(runs[name]))
      ax.plot(x, y, marker='o', ms=3, label=label)
  ax.set_xlabel('step')
  ax.set_ylabel(f'held-out avg@{k_of(runs)}')
  ax.set_title('Rewards on the embedded task (seed 0)')
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(fig_dir, 'rewards_avg.png'), dpi=90)
  plt.close(fig)

# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--only', default='', help=f'comma-separated run names (default: all); of {", ".join(NAMES)}')
  p.add_argument('--readme_only', action='store_true', help='regenerate the README and figures from --out')
  p.add_argument('--steps', type=int, default=0, help='override every run\'s step count (for tests)')
  p.add_argument('--eval_prompts', type=int, default=0, help='override every run\'s held-out prompts (for tests)')
  p.add_argument('--jobs', type=int, default=1, help='runs at once (same numbers, other times)')
  p.add_argument('--repeat', default='', help='comma-separated run names to run twice and compare bit for bit')
  p.add_argument('--runs_dir', default=os.path.join(ROOT, 'runs', 'findings'), help='one workdir per run here')
  p.add_argument('--out', default=None, help='the results JSON (default: assets/findings.json)')
  p.add_argument('--readme', default=None, help='the README to regenerate (default: README.md)')
  p.add_argument('--figures', default='', help='where the figures go (default: assets/ next to --readme)')
  args = p.parse_args(argv)
  for flag in ('only', 'repeat'):
    unknown = [n for n in getattr(args, flag).split(',') if n and n not in NAMES]
    if unknown:
      p.error(f'--{flag}: unknown run {", ".join(unknown)}; runs: {", ".join(NAMES)}')
  if args.readme_only and (args.only or args.repeat or args.steps or args.eval_prompts):
    p.error('--readme_only runs nothing: drop --only / --repeat / --steps')
  if args.jobs < 1:
    p.error('--jobs must be at least 1')
  if (args.steps or args.eval_prompts) and (args.out is None or args.readme is None):
    p.error('--steps / --eval_prompts make a smoke run, not the findings: pass --out and --readme too (a copy of '
            'README.md), so that assets/findings.json and README.md keep the real results')
  args.out = args.out or os.path.join(ROOT, 'assets', 'findings.json')
  args.readme = args.readme or os.path.join(ROOT, 'README.md')
  args.figures = args.figures or os.path.join(os.path.dirname(os.path.abspath(args.readme)), 'assets')
  return args


def main(argv=None):
  args = parse_args(argv)
  with open(args.readme) as f:
    readme = f.read()
  for key in BLOCKS:   # a missing marker fails now, not after an hour of runs
    marker_span(readme, key, args.readme)
  results = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      results = json.load(f)
  elif args.readme_only:
    sys.exit(f'error: --readme_only: no results file {args.out}; run the experiments first')
  if not args.readme_only:
    only = [n for n in args.only.split(',') if n] or NAMES
    repeat = [n for n in args.repeat.split(',') if n]
    specs = [e for e in REGISTRY if e['name'] in set(only) | set(repeat)]
    runner = Runner(args, results)
    t0 = time.monotonic()
    runner.run_all(specs, [e for e in REGISTRY if e['name'] in repeat])
    print(f'all runs finished in {duration(time.monotonic() - t0)}; results in {args.out}', flush=True)
    if runner.failed:
      sys.exit('error: runs failed, README left as it was:\n  ' + '\n  '.join(runner.failed))
  with open(args.readme, 'w') as f:
    f.write(replace_blocks(readme, render(results), args.readme))
  write_figures(results, args.runs_dir, args.figures)
  print(f'wrote {args.readme} and the figures in {args.figures}', flush=True)


if __name__ == '__main__':
  main()
