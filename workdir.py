"""Everything a run writes into its workdir, and how a rerun of the same command resumes from it.

    <workdir>/run.json             which model, mode and data the workdir belongs to (another is refused)
    <workdir>/checkpoints/<step>/  orbax: parameters, optimizer state (and the EMA teacher), data position
    <workdir>/checkpoints-damaged/ checkpoints that did not restore, moved aside (never deleted)
    <workdir>/metrics.jsonl        one line per step: the learner's signals, the hidden accuracies, timings
    <workdir>/trace.jsonl          a few prompts per step: sampled texts, answers, labels, rewards
    <workdir>/summary.json         held-out before/after, paired gains, early-stopping step, collapse alarm step
    <workdir>/training_curves.png  the curves of metrics.jsonl
    <workdir>/hf/                  the final policy as a Hugging Face directory

Checkpoints are written atomically (orbax writes a step under a temporary name and renames it when complete),
so a kill at any moment leaves the previous checkpoint whole. On resume the logs are cut back to the
checkpoint's step, so the history equals an uninterrupted run's. In a multi-process run every process takes
part in the checkpoint (each writes its own shards) and process 0 alone writes the logs, plot, summary and export.

What can go wrong, and what the run does (its logs and export always match the checkpoint it continues from):
  - SIGTERM (a preemption notice) or Ctrl-C: the step in flight finishes, its checkpoint is saved, a line says
    where, and the run exits with status 75 (`Preemption`); rerunning the same command ends as if uninterrupted.
  - The newest checkpoint does not restore (truncated files): one warning line, it is moved to
    checkpoints-damaged/<step>, and the run resumes from the newest one that restores, its logs cut back to that
    step. If none restores, a one-line error and nothing is touched (`restore`).
  - A save fails (disk full, permissions): a one-line error naming the directory; the checkpoints already there
    are intact and the rerun resumes from the latest of them (`save`).
"""
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp


def is_writer() -> bool:
  """Process 0 writes the logs, the plot, the summary and the export; every process writes its checkpoint shards."""
  return jax.process_index() == 0


def say(text: str):
  """Print a line on process 0 only (every process runs the same program)."""
  if is_writer():
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Run identity and checkpoints


def check_identity(workdir: str, identity: dict):
  """A workdir belongs to one model, mode and data; resuming it with another is an error, not a silent mix."""
  file = os.path.join(workdir, 'run.json')
  if os.path.exists(file):
    with open(file) as f:
      old = json.load(f)
    for k in identity:
      if old.get(k) != identity[k]:
        raise ValueError(f'--workdir={workdir!r} holds a run with {k}={old.get(k)!r}, not {identity[k]!r}; '
                         'use a new --workdir (nothing there was changed)')
  elif is_writer():
    os.makedirs(workdir, exist_ok=True)
    with open(file, 'w') as f:
      json.dump(identity, f, indent=1)


DAMAGED = 'checkpoints-damaged'   # <workdir>/checkpoints-damaged/<step>: where a checkpoint that does not restore goes
PREEMPTED_EXIT = 75   # os.EX_TEMPFAIL, "temporary failure, retry": the run stopped on a signal after saving


def checkpoint_manager(workdir):
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False))


class Preemption:
  """SIGTERM (a preemption notice) or SIGINT (Ctrl-C): finish the step, save its checkpoint, exit.

  train.py asks `reached(step)` once per step on every process, saves when it says True, then calls `exit`, which
  prints one line saying where the checkpoint is and exits with PREEMPTED_EXIT (75), so that a wrapper can tell
  "stopped on a signal, rerun me" from success (0) and from an error (1). Rerunning the same command resumes and
  ends as an uninterrupted run would. A signal that comes before the loop (setup, the first evaluation) stops the
  run after its first step; `close()` after the loop gives the signals back, so a signal during the final
  evaluation and export stops the run at once (its last checkpoint holds every step).

  One process: the handler only sets a flag (and prints a line), checked at the step's end. Further signals while
  the step finishes and saves are ignored with a line saying so: a second Ctrl-C must not cut the save short
  (`kill -9` still stops the run at once; orbax's atomic rename then leaves the previous checkpoint whole).
  Several processes (jax.process_count() > 1): the hosts must save the same step, and SIGTERM reaches each at a
  different moment, so JAX's preemption service decides (multihost_utils.reached_preemption_sync_point: every host
  saves at the step after the largest any host had reached when the first notice came). That service catches
  SIGTERM in C++ when jax.distributed.initialize() runs, so no Python handler is installed for it, and SIGINT keeps
  its default (one host's Ctrl-C cannot be agreed on). With the service off (jax_enable_preemption_service=False)
  a warning says that SIGTERM stops the run without a checkpoint.
  Tested: one process, in-process (flag, second signal, exit status, handlers given back) and end to end (SIGTERM,
  rerun, identical history and export); the multi-process branch only with the service stubbed out.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None   # name of the first signal
    self.previous = {}     # signal -> the handler before ours, given back by close()
    self.sync = jax.process_count() > 1
    if self.sync:
      if not jax.config.jax_enable_preemption_service:
        self._service_off()
    elif threading.current_thread() is threading.main_thread():   # signal.signal works only there
      for sig in self.SIGNALS:
        self.previous[sig] = signal.signal(sig, self._handle)

  def _service_off(self):
    self.sync = None
    if is_writer():
      print('warning: the JAX preemption service is off (jax_enable_preemption_service), so SIGTERM stops this '
            'multi-process run without a checkpoint; a rerun resumes from the last --checkpoint_every one',
            file=sys.stderr, flush=True)

  def _handle(self, signum, frame):
    # os.write, not print: the signal may land inside a print to the same stream (a reentrant call would raise).
    name = signal.Signals(signum).name
    if self.received is None:
      self.received = name
      msg = f'{name}: finishing this step, then saving its checkpoint and exiting'
    else:
      msg = f'{name} ignored: still finishing the step and saving its checkpoint (kill -9 stops at once)'
    os.write(2, (msg + '\n').encode())

  def reached(self, step: int) -> bool:
    """Whether to save `step` and exit; ask once per step, on every process."""
    if not self.sync:
      return self.received is not None
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:   # the service did not start on this process
      self._service_off()
      return False

  def exit(self, step: int, workdir: str):
    self.close()
    if is_writer():
      print(f'preempted{f" ({self.received})" if self.received else ""}: saved step {step} to '
            f'{os.path.join(workdir, "checkpoints")}; rerun the same command to resume', file=sys.stderr, flush=True)
    raise SystemExit(PREEMPTED_EXIT)

  def close(self):
    """Give the signals back to the handlers before ours (the default where that one was not set in Python)."""
    for sig, handler in self.previous.items():
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    self.previous = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _orbax_file(path: str) -> bool:
  """Whether a source file is orbax's own (its records and exceptions are the ones quieted here)."""
  return f'{os.sep}orbax{os.sep}' in path


class _QuietOrbax(logging.Filter):
  """orbax logs each failure of its worker threads as an ERROR with a traceback, before the same error reaches the
  caller, who turns it into one line; those records are dropped while a save or restore runs."""

  def filter(self, record):
    return record.levelno < logging.ERROR or not _orbax_file(record.pathname)


def _from_orbax(exc) -> bool:
  """Whether an exception was raised in orbax's code or names tensorstore (whose errors carry its spec)."""
  tb = getattr(exc, '__traceback__', None)
  return 'tensorstore' in str(exc) or any(_orbax_file(frame.f_code.co_filename) for frame, _ in traceback.walk_tb(tb))


class _DropLeftovers(logging.Filter):
  """asyncio's "Future/Task exception was never retrieved" for orbax's reads and writes of the other arrays."""

  def filter(self, record):
    exc = record.exc_info[1] if record.exc_info else None
    unretrieved = str(record.msg).split('\n', 1)[0].endswith('exception was never retrieved')
    return not (unretrieved and exc is not None and _from_orbax(exc))


def _drop_failed_call_leftovers():
  """Once one array of a save or restore fails, orbax closes its event loop and gives up on the others, which
  tensorstore is still reading or writing. Each of those then leaves noise, during the call or seconds after it:
  an unraisable "RuntimeError: Event loop is closed" (when it completes onto the closed loop), an asyncio "exception
  was never retrieved" record, a "coroutine was never awaited" warning. The caller has already turned the one
  failure that matters into one line, so these are dropped, from the first save or restore on. Every other
  unraisable exception, asyncio record and warning is still reported."""
  previous = sys.unraisablehook
  if not getattr(previous, 'drops_orbax_leftovers', False):   # installed once (again if another replaced it)
    def hook(unraisable):
      if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'):
        previous(unraisable)
    hook.drops_orbax_leftovers = True
    sys.unraisablehook = hook
  asyncio_logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _DropLeftovers) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropLeftovers())
  # "never awaited" is warned from wherever the coroutine was dropped (often asyncio's own code), so it is told
  # apart by the coroutine itself, which CPython hands to this hook of the warnings module.
  warn = getattr(warnings, '_warn_unawaited_coroutine', None)
  if warn is not None and not getattr(warn, 'drops_orbax_leftovers', False):
    def warn_unless_orbax(coro):
      if _orbax_file(getattr(getattr(coro, 'cr_code', None), 'co_filename', '')):
        return
      if getattr(coro, 'cr_origin', None) is None:   # the hook's own warning, from the frame it would name
        warnings.warn(f"coroutine '{coro.__qualname__}' was never awaited", RuntimeWarning, stacklevel=2, source=coro)
      else:
        warn(coro)
    warn_unless_orbax.drops_orbax_leftovers = True
    warnings._warn_unawaited_coroutine = warn_unless_orbax


@contextlib.contextmanager
def _quiet_orbax():
  _drop_failed_call_leftovers()   # before the call: the noise can come while it still runs
  absl_logger, quiet = logging.getLogger('absl'), _QuietOrbax()
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


def _reason(e: Exception, root: str, with_file: bool = True) -> str:
  """One short line for a failed save or restore: tensorstore's last clause (the cause) and the file, not the
  spec it dumps after it; other errors as type and message."""
  if isinstance(e, OSError) and e.strerror:
    text, file = e.strerror, e.filename
  else:
    text = (str(e).strip().splitlines() or [''])[0].split(' [tensorstore_spec')[0]
    file = (re.findall(r'local file "([^"]+)"', text) or [None])[-1]
    if re.match(r'[A-Z_]+: ', text):   # a tensorstore status: CODE: context: context: cause [details]
      text = re.sub(r'\s*\[[^\]]*\]$', '', text.rsplit(': ', 1)[-1])
    else:
      text = f'{type(e).__name__}: {text}'
  if file and with_file:
    text += f' ({os.path.relpath(os.fspath(file), root)})'
  return text if len(text) <= 200 else text[:197] + '...'


def save(mngr, step: int, state: dict, data_pos: int):
  """Checkpoint `step`: the state (every process its shards) and the data position. orbax writes it under
  `<step>.orbax-checkpoint-tmp` and renames it when complete, so a failed save (disk full, permissions) leaves the
  earlier checkpoints as they were; it raises a ValueError naming the directory, after removing the temporary
  directory it made (a later restore would not list it, but it holds the disk space that ran out)."""
  directory = os.fspath(mngr.directory)
  before = set(os.listdir(directory)) if os.path.isdir(directory) else set()
  try:
    with _quiet_orbax():
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              meta=ocp.args.JsonSave({'data_pos': data_pos, 'step': step})), force=True)
      mngr.wait_until_finished()
  except (OSError, ValueError, RuntimeError) as e:
    if is_writer() and os.path.isdir(directory):
      for name in set(os.listdir(directory)) - before:
        if name.startswith(f'{step}.orbax-checkpoint-tmp'):
          shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    cause = _reason(e, directory, with_file=False)   # the file named would be in the temporary directory, gone
    raise ValueError(f'could not save the checkpoint of step {step} in {directory}: {cause}; the checkpoints '
                     'already there are intact (free some space or fix the permissions, then rerun the same command '
                     'to resume from the latest)') from None


def _everywhere(ok: bool) -> bool:
  """True when every process says ok: the processes must agree on which checkpoint they continue from."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def restore(mngr, state: dict) -> tuple[dict, int, int] | None:
  """(state, step, data_pos) of the newest checkpoint that restores, placed like `state`; None when there is none.

  A checkpoint that does not restore (truncated or missing files from a bad disk or an interrupted copy) gets one
  warning line naming its step and the cause, and is moved, never deleted, to <workdir>/checkpoints-damaged/<step>
  (renaming it back retries it); the run continues from the newest one that restores, and `mngr` is reloaded so it
  no longer lists the moved ones. When none restores: a one-line ValueError naming the workdir and each step's
  cause, and nothing is moved (every step is tried before anything changes)."""
  directory = os.fspath(mngr.directory)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  damaged = []   # (step, cause), newest first
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      with _quiet_orbax():
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                              meta=ocp.args.JsonRestore()))
      found, cause = (restored['state'], step, int(restored['meta']['data_pos'])), None
    except Exception as e:   # whatever the damage raises (ValueError, OSError, KeyError, ...): this step is out
      cause = _reason(e, directory)
    if _everywhere(cause is None):
      _move_aside(mngr, damaged, step)
      return found
    damaged.append((step, cause or 'did not restore on another process'))
  if damaged:
    raise ValueError(f'--workdir={os.path.dirname(directory)}: no checkpoint restores ('
                     + '; '.join(f'step {s}: {c}' for s, c in damaged)
                     + '); nothing was changed; use a new --workdir')
  return None


def _move_aside(mngr, damaged: list, resumed: int):
  """Rename the damaged steps out of orbax's directory (process 0; the others wait), then reload `mngr`."""
  if not damaged:
    return
  directory = os.fspath(mngr.directory)
  aside = os.path.join(os.path.dirname(directory), DAMAGED)
  if is_writer():
    for step, cause in damaged:
      target, n = os.path.join(aside, str(step)), 1
      while os.path.exists(target):   # the same step damaged in an earlier run too
        n += 1
        target = os.path.join(aside, f'{step}.{n}')
      try:
        os.makedirs(aside, exist_ok=True)
        os.rename(os.path.join(directory, str(step)), target)
      except OSError as e:
        raise ValueError(f'checkpoint step {step} in {directory} does not restore ({cause}) and could not be moved '
                         f'to {target}: {e.strerror}; move it aside by hand and rerun') from None
      print(f'warning: checkpoint step {step} does not restore ({cause}); moved it to {target} and resuming from '
            f'step {resumed}', file=sys.stderr, flush=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('workdir.restore: damaged checkpoints moved aside')
  mngr.reload()


# ----------------------------------------------------------------------------------------------------------------
# Logs


def read_jsonl(file) -> list[dict]:
  with open(file) as f:
    return [json.loads(l) for l in f if l.strip()]


class Logs:
  """metrics.jsonl and trace.jsonl: appended a line at a time, cut back to a checkpoint's step on resume."""

  def __init__(self, workdir: str):
    self.metrics = os.path.join(workdir, 'metrics.jsonl')
    self.trace = os.path.join(workdir, 'trace.jsonl')

  def start(self, resumed_step: int | None):
    """Fresh run: remove old logs. Resumed run: drop lines written after the checkpoint."""
    if not is_writer():
      return
    for file in (self.metrics, self.trace):
      if resumed_step is None:
        if os.path.exists(file):
          os.remove(file)
      elif os.path.exists(file):
        with open(file) as f:
          lines = [l for l in f if l.strip() and json.loads(l).get('step', -1) <= resumed_step]
        with open(file + '.tmp', 'w') as f:
          f.writelines(lines)
        os.replace(file + '.tmp', file)

  def write(self, file, record: dict):
    if is_writer():
      with open(file, 'a') as f:
        f.write(json.dumps(record) + '\n')

  def history(self) -> list[dict]:
    return read_jsonl(self.metrics) if os.path.exists(self.metrics) else []


def progress(step, steps, m, t0):
  """The line a user watches: the learner's reward, the hidden accuracies, the KL, the speed."""
  keys = [('loss', 'loss'), ('reward', 'pseudo_reward'), ('acc', 'true_accuracy'), ('label_acc', 'label_accuracy'),
          ('share', 'majority_share'), ('kl', 'kl'), ('len', 'response_length')]
  parts = [f'{short} {m[k]:.3f}' for short, k in keys if m.get(k) is not None]
  if m.get('collapse_alarm'):
    parts.append('COLLAPSE ALARM')
  rate = f'{m["step_time"]:.2f} s/step'
  if 'rollout_time' in m:
    rate += f' (rollout {m["rollout_time"]:.2f}, update {m["update_time"]:.2f}, {m["tokens_per_s"]:.0f} tok/s)'
  say(f'step {step}/{steps} | ' + ' | '.join(parts) + f' | {rate} | {time.time() - t0:.0f}s')


# ----------------------------------------------------------------------------------------------------------------
# Summary and plot


def write_summary(workdir: str, summary: dict):
  if is_writer():
    with open(os.path.join(workdir, 'summary.json.tmp'), 'w') as f:
      json.dump(summary, f, indent=1)
    os.replace(os.path.join(workdir, 'summary.json.tmp'), os.path.join(workdir, 'summary.json'))


def summary_table(summary: dict, num_prompts: int) -> str:
  """The before/after table printed at the end of a run."""
  k, cols = summary['k'], ('avg@k', 'maj@k', 'pass@k', 'parse_rate')
  lines = [f'held-out, k={k}     ' + '  '.join(f'{c:>10}' for c in cols)]
  for when in ('before', 'after'):
    lines.append(f'{when:<18}' + '  '.join(f'{summary[when][c]:>10.3f}' for c in cols))
  gain = summary['gain']['avg@k']
  if gain['paired_se'] is not None:
    lines.append(f'avg@{k} gain {gain["mean"]:+.3f} (paired standard error {gain["paired_se"]:.3f} over '
                 f'{num_prompts} prompts)')
  return '\n'.join(lines)


PANELS = [('pseudo_reward', 'true_accuracy', 'label_accuracy'), ('eval_avg@k', 'eval_maj@k', 'val_avg@k'),
          ('kl',), ('entropy',), ('response_length',), ('majority_share', 'parse_rate')]


def plot(workdir: str):
  """training_curves.png: the curves a user looks at instead of reading metrics.jsonl. Per-step metrics of 16
  prompts are noisy: each is drawn faint, with its 10-step moving average on top. The held-out panel adds the
  before/after evaluations of summary.json at the first and last step; a red line marks the collapse alarm."""
  if not is_writer():
    return
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  summary_file = os.path.join(workdir, 'summary.json')
  summary = json.load(open(summary_file)) if os.path.exists(summary_file) else {}
  last = rows[-1]['step'] if rows else 0
  for when, step in (('before', 0), ('after', last)):
    if when in summary:
      rows.append({'step': step, **{f'eval_{k}': v for k, v in summary[when].items()}})
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  for ax, keys in zip(axes.flat, PANELS):
    for k in keys:
      pts = sorted((r['step'], r[k]) for r in rows if r.get(k) is not None)
      if not pts:
        continue
      x, y = map(np.asarray, zip(*pts))
      if k.startswith(('eval', 'val')):
        ax.plot(x, y, marker='o', ms=4, label=k.replace('@k', f'@{summary.get("k", "k")}'))
      else:
        line, = ax.plot(x, y, alpha=0.3, lw=0.8)
        w = min(10, len(y))
        ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode='valid'), color=line.get_color(), label=k)
    if summary.get('collapse_step'):
      ax.axvline(summary['collapse_step'], color='red', lw=0.8, ls='--')
    ax.set_xlabel('step')
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'training_curves.png'), dpi=90)
  plt.close(fig)
