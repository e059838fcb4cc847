"""workdir.py's checkpoints under what goes wrong: a preemption signal, a damaged checkpoint, a save that fails.

In-process, on a tiny state: the signal flag (a second signal ignored, exit status 75, the handlers given back),
the multi-process branch with JAX's preemption service stubbed out, the fall-back past a truncated checkpoint, the
error that changes nothing when none restores, a save into a full disk or a read-only directory (a child process:
a file-size limit stands in for the full disk, and root needs its permission override dropped to meet a
read-only directory). End to end, train.py in subprocesses: SIGTERM mid-run and the rerun, SIGKILL mid-run and
the rerun, a truncated latest checkpoint and the rerun, every checkpoint truncated -- each compared with one
uninterrupted run (history, trace and exported weights identical, timing fields aside) or with the workdir as it
was before.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf
import workdir as wd_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = 'rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1'
ARGS = ['--mode=self', '--model=assets/tiny-chain-sum', f'--data={TASK}', '--data_size=64', '--num_prompts=4',
        '--num_samples=4', '--max_new_tokens=24', '--learning_rate=1e-3', '--eval_prompts=0', '--steps=6']
TIMING = ('step_time', 'rollout_time', 'update_time', 'tokens_per_s')
ENV = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')


def truncate(workdir, step):
  """What a bad disk or an interrupted copy leaves: every array data file of the checkpoint cut to half its size."""
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(workdir, 'checkpoints', str(step), 'state'))
           if os.path.basename(root) == 'd' for f in names]
  assert files
  for f in files:
    os.truncate(f, os.path.getsize(f) // 2)


def fingerprint(workdir):
  """Size and modification time of every file and directory under the workdir."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      st = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), workdir)] = (st.st_size, st.st_mtime_ns)
  return out


def tiny_state(scale):
  return {'w': jnp.arange(1000, dtype=jnp.float32) * scale, 'opt': {'mu': jnp.full((7, 5), scale, jnp.float32)}}


# ---------------------------------------------------------------------------------------------------------------
# Preemption, in-process


def test_a_signal_is_a_flag_a_second_is_ignored_and_exit_gives_the_handlers_back(capfd):
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  p = wd_lib.Preemption()
  try:
    assert not p.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)   # the run goes on: the handler only sets the flag
    assert p.reached(2)
    os.kill(os.getpid(), signal.SIGINT)    # no KeyboardInterrupt: the save must not be cut short
    assert p.reached(2) and p.received == 'SIGTERM'
    with pytest.raises(SystemExit) as e:
      p.exit(2, 'runs/x')
  finally:
    p.close()
  assert e.value.code == wd_lib.PREEMPTED_EXIT == 75
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  err = capfd.readouterr().err.splitlines()
  assert err == ['SIGTERM: finishing this step, then saving its checkpoint and exiting',
                 'SIGINT ignored: still finishing the step and saving its checkpoint (kill -9 stops at once)',
                 'preempted (SIGTERM): saved step 2 to runs/x/checkpoints; rerun the same command to resume']


def test_several_processes_save_where_the_preemption_service_says(monkeypatch, capfd):
  """Multi-process preemption is not run here (one host); this checks the branch asks JAX's service at every step,
  leaves SIGTERM to it, and says so when the service is off."""
  from jax.experimental import multihost_utils
  before = signal.getsignal(signal.SIGTERM)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  asked = []
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point', lambda step: asked.append(step) or step == 3)
  with wd_lib.Preemption() as p:
    assert signal.getsignal(signal.SIGTERM) is before   # the service catches SIGTERM itself
    assert [p.reached(s) for s in (1, 2, 3)] == [False, False, True] and asked == [1, 2, 3]

  def not_started(step):
    raise RuntimeError('Preemption sync manager has not been initialized.')
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point', not_started)
  with wd_lib.Preemption() as p:
    assert not p.reached(1) and not p.reached(2)
  assert capfd.readouterr().err.count('warning: the JAX preemption service is off') == 1
  jax.config.update('jax_enable_preemption_service', False)
  try:
    with wd_lib.Preemption() as p:
      assert 'warning: the JAX preemption service is off' in capfd.readouterr().err and not p.reached(1)
  finally:
    jax.config.update('jax_enable_preemption_service', True)


# ---------------------------------------------------------------------------------------------------------------
# Damaged checkpoints, in-process


def test_restore_moves_a_damaged_checkpoint_aside_and_falls_back(tmp_path, capfd):
  wd = str(tmp_path)
  mngr = wd_lib.checkpoint_manager(wd)
  for step in (2, 4):
    wd_lib.save(mngr, step, tiny_state(step), 10 * step)
  truncate(wd, 4)
  damaged = {k: v[0] for k, v in fingerprint(os.path.join(wd, 'checkpoints', '4')).items()}
  capfd.readouterr()
  state, step, data_pos = wd_lib.restore(mngr, tiny_state(0))
  assert (step, data_pos) == (2, 20)
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(tiny_state(2))):
    np.testing.assert_array_equal(x, y)
  err = capfd.readouterr().err.splitlines()
  assert len(err) == 1, err
  assert re.fullmatch(r'warning: checkpoint step 4 does not restore \(.+ \(4/state/d/\w+\)\); moved it to '
                      + re.escape(os.path.join(wd, 'checkpoints-damaged', '4')) + ' and resuming from step 2', err[0])
  # Moved, not deleted, and not listed any more: by this manager (reloaded) nor by a new one.
  assert {k: v[0] for k, v in fingerprint(os.path.join(wd, 'checkpoints-damaged', '4')).items()} == damaged
  assert mngr.all_steps() == [2] and list(wd_lib.checkpoint_manager(wd).all_steps()) == [2]
  # The run goes on: step 4 saved again, and damaged again, lands beside the first.
  wd_lib.save(mngr, 4, tiny_state(4), 40)
  truncate(wd, 4)
  assert wd_lib.restore(wd_lib.checkpoint_manager(wd), tiny_state(0))[1] == 2
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints-damaged'))) == ['4', '4.2']


def test_when_no_checkpoint_restores_nothing_changes(tmp_path):
  wd = str(tmp_path)
  mngr = wd_lib.checkpoint_manager(wd)
  for step in (2, 4):
    wd_lib.save(mngr, step, tiny_state(step), 10 * step)
  truncate(wd, 2)
  truncate(wd, 4)
  before = fingerprint(wd)
  with pytest.raises(ValueError) as e:
    wd_lib.restore(wd_lib.checkpoint_manager(wd), tiny_state(0))
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith(f'--workdir={wd}: no checkpoint restores (step 4: ')
  assert '; step 2: ' in msg and msg.endswith('nothing was changed; use a new --workdir')
  assert fingerprint(wd) == before
  assert wd_lib.restore(wd_lib.checkpoint_manager(str(tmp_path / 'new')), tiny_state(0)) is None


FAILED_RESTORES = r'''
import gc, os, sys, time
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], 'tests')]
import jax.numpy as jnp
import workdir as wd_lib
from test_workdir import truncate
wd = sys.argv[2]
state = {f'w{i}': jnp.arange(1000 * (i + 1), dtype=jnp.float32) for i in range(60)}
mngr = wd_lib.checkpoint_manager(wd)
for step in (2, 4):
  wd_lib.save(mngr, step, state, step)
  truncate(wd, step)
for _ in range(5):
  try:
    wd_lib.restore(mngr, state)
  except ValueError as e:
    assert str(e).startswith('--workdir='), e
gc.collect()
time.sleep(1)   # the reads orbax gave up on complete meanwhile
# An abandoned coroutine is warned about wherever the garbage collector meets it, here outside orbax's code:
from orbax.checkpoint._src.metadata.array_metadata_store import Store
async def users_own():
  pass
Store._get_array_metadatas(None, wd)
users_own()
'''


def test_a_failed_restore_leaves_no_noise_behind(tmp_path):
  """Once one array fails, orbax abandons the reads of the others; as they complete (during the call or after it)
  they leave "Event loop is closed" tracebacks, "exception was never retrieved" records and "never awaited"
  warnings. With 60 arrays and 5 failed restores every run showed some before they were dropped. A coroutine that
  is not orbax's is still warned about."""
  r = subprocess.run([sys.executable, '-c', FAILED_RESTORES, ROOT, str(tmp_path)], capture_output=True, text=True,
                     env=ENV, timeout=300)
  line = FAILED_RESTORES.splitlines().index('users_own()') + 1
  warning = f"<string>:{line}: RuntimeWarning: coroutine 'users_own' was never awaited\n"
  assert r.returncode == 0 and r.stderr.startswith(warning), r.stderr[-3000:]
  assert r.stderr[len(warning):] == 'RuntimeWarning: Enable tracemalloc to get the object allocation traceback\n'


# ---------------------------------------------------------------------------------------------------------------
# A save that fails: in a child process, so the file-size limit and the dropped permission override end with it.

FAILED_SAVE = r'''
import os, resource, signal, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, jax.numpy as jnp
import workdir as wd_lib
wd, how = sys.argv[2], sys.argv[3]
big = lambda s: {'w': jnp.asarray(np.random.default_rng(s).standard_normal(1 << 20, np.float32))}   # 4 MB, no zeros
mngr = wd_lib.checkpoint_manager(wd)
wd_lib.save(mngr, 2, big(2), 20)
if how == 'disk_full':   # writes past 1 MB fail with EFBIG, as with ENOSPC on a full disk
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
else:
  os.chmod(os.path.join(wd, 'checkpoints'), 0o555)
try:
  wd_lib.save(mngr, 4, big(4), 40)
except ValueError as e:
  print(e)
'''


@pytest.mark.parametrize('how', ['disk_full', 'read_only'])
def test_a_failed_save_names_the_directory_and_keeps_the_earlier_checkpoints(tmp_path, how):
  wd = str(tmp_path)
  cmd = [sys.executable, '-c', FAILED_SAVE, ROOT, wd, how]
  if how == 'read_only' and os.geteuid() == 0:   # root writes into read-only directories unless told otherwise
    if not shutil.which('setpriv'):
      pytest.skip('running as root without setpriv: a read-only directory does not stop root')
    cmd = ['setpriv', '--bounding-set', '-dac_override,-dac_read_search,-fowner'] + cmd
  p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
  os.chmod(os.path.join(wd, 'checkpoints'), 0o755)
  assert p.returncode == 0, p.stderr[-3000:]
  cause = 'File too large' if how == 'disk_full' else 'Permission denied'
  assert p.stdout.splitlines() == [
      f'could not save the checkpoint of step 4 in {os.path.join(wd, "checkpoints")}: {cause}; the checkpoints '
      'already there are intact (free some space or fix the permissions, then rerun the same command to resume '
      'from the latest)'], p.stdout
  assert p.stderr == '', p.stderr   # none of orbax's thread tracebacks
  # No half-written directory left (the failed save's temporary one is removed), and step 2 restores whole.
  assert os.listdir(os.path.join(wd, 'checkpoints')) == ['2']
  state, step, data_pos = wd_lib.restore(wd_lib.checkpoint_manager(wd), {'w': jnp.zeros(1 << 20, jnp.float32)})
  assert (step, data_pos) == (2, 20)
  np.testing.assert_array_equal(state['w'], np.random.default_rng(2).standard_normal(1 << 20, np.float32))


# ---------------------------------------------------------------------------------------------------------------
# train.py end to end


def run_train(*args, check=True):
  p = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *ARGS, *args], capture_output=True, text=True,
                     timeout=600, env=ENV, cwd=ROOT)
  if check and p.returncode != 0:
    raise AssertionError(f'train.py {" ".join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
  return p


def assert_same_run(a, b):
  """The history, the trace and the exported weights of two workdirs are identical, timing fields aside."""
  strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  for log in ('metrics.jsonl', 'trace.jsonl'):
    rows_a, rows_b = (wd_lib.read_jsonl(os.path.join(wd, log)) for wd in (a, b))
    assert len(rows_a) > 0 and strip(rows_a) == strip(rows_b), log
  _, pa = hf.load_checkpoint(os.path.join(a, 'hf'))
  _, pb = hf.load_checkpoint(os.path.join(b, 'hf'))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def full(tmp_path_factory):
  """The uninterrupted run: 6 steps, checkpoints at 4 and 6 kept."""
  wd = str(tmp_path_factory.mktemp('full'))
  run_train(f'--workdir={wd}', '--checkpoint_every=2')
  return wd


def signal_after_step_3(signum, *args) -> subprocess.Popen:
  """train.py started with ARGS and `args`, sent `signum` as soon as it prints the line of step 3."""
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *ARGS, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
  for line in proc.stdout:
    if line.startswith('step 3/6'):
      proc.send_signal(signum)
      break
  return proc


@pytest.mark.slow
def test_sigterm_saves_the_step_in_flight_and_the_rerun_ends_as_if_uninterrupted(full, tmp_path):
  wd = str(tmp_path / 'cut')
  proc = signal_after_step_3(signal.SIGTERM, f'--workdir={wd}', '--checkpoint_every=100')
  sent = time.time()
  out, _ = proc.communicate(timeout=300)
  print(f'SIGTERM to exit: {time.time() - sent:.2f} s')
  assert proc.returncode == 75, out[-3000:]
  # The line of step 3 is printed just before the step's preemption check, so the signal almost always lands
  # during step 4 (saved), and rarely before that check (step 3 saved).
  m = re.search(r'^preempted \(SIGTERM\): saved step (\d) to (.*); rerun the same command to resume$', out, re.M)
  assert m and m.group(2) == os.path.join(wd, 'checkpoints'), out[-3000:]
  saved = int(m.group(1))
  assert saved in (3, 4) and 'SIGTERM: finishing this step' in out and 'Traceback' not in out
  assert os.listdir(os.path.join(wd, 'checkpoints')) == [str(saved)]
  assert [r['step'] for r in wd_lib.read_jsonl(os.path.join(wd, 'metrics.jsonl'))] == list(range(1, saved + 1))
  p = run_train(f'--workdir={wd}', '--checkpoint_every=100')
  assert f'resumed from step {saved}' in p.stdout
  assert_same_run(full, wd)


@pytest.mark.slow
def test_a_kill_loses_only_the_steps_since_the_last_checkpoint_and_the_rerun_ends_as_if_uninterrupted(full, tmp_path):
  """SIGKILL (no grace period) once step 3 is logged: step 2's checkpoint is on disk, step 3's log line is cut
  away on resume, and steps 3 to 6 run again."""
  wd = str(tmp_path / 'killed')
  proc = signal_after_step_3(signal.SIGKILL, f'--workdir={wd}', '--checkpoint_every=2')
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert len(wd_lib.read_jsonl(os.path.join(wd, 'metrics.jsonl'))) == 3
  p = run_train(f'--workdir={wd}', '--checkpoint_every=2')
  assert 'resumed from step 2' in p.stdout
  assert_same_run(full, wd)


def damaged_copy(full, path, *steps) -> str:
  """A copy of the uninterrupted run's workdir at `path` with the checkpoints of `steps` truncated."""
  wd = str(path)
  shutil.copytree(full, wd)
  for step in steps:
    truncate(wd, step)
  return wd


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_falls_back(full, tmp_path):
  wd = damaged_copy(full, tmp_path / 'damaged', 6)
  sizes = {k: v[0] for k, v in fingerprint(os.path.join(wd, 'checkpoints', '6')).items()}
  shutil.rmtree(os.path.join(wd, 'hf'))   # so the export compared below is the rerun's
  p = run_train(f'--workdir={wd}', '--checkpoint_every=2')
  assert 'resumed from step 4' in p.stdout and 'Traceback' not in p.stderr
  warnings = [l for l in p.stderr.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1 and warnings[0].startswith('warning: checkpoint step 6 does not restore ('), p.stderr
  assert warnings[0].endswith(f'moved it to {os.path.join(wd, "checkpoints-damaged", "6")} and resuming from step 4')
  assert {k: v[0] for k, v in fingerprint(os.path.join(wd, 'checkpoints-damaged', '6')).items()} == sizes
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['4', '6']   # step 6 saved again, whole
  assert_same_run(full, wd)


@pytest.mark.slow
def test_when_no_checkpoint_restores_the_run_stops_with_one_line_and_changes_nothing(full, tmp_path):
  wd = damaged_copy(full, tmp_path / 'lost', 4, 6)
  before = fingerprint(wd)
  p = run_train(f'--workdir={wd}', '--checkpoint_every=2', check=False)
  assert p.returncode == 1
  assert 'Traceback' not in p.stderr and 'Event loop' not in p.stderr, p.stderr[-3000:]
  errors = [l for l in p.stderr.splitlines() if l.strip()]
  assert len(errors) == 1 and errors[0].startswith(f'error: --workdir={wd}: no checkpoint restores (step 6: '), errors
  assert '; step 4: ' in errors[0] and errors[0].endswith('nothing was changed; use a new --workdir')
  assert fingerprint(wd) == before
