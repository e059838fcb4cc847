"""math-verify in a long-lived child process, with a hard deadline: the slow half of vote.py's answer equality.

vote.py decides most answer pairs with cheap rules; the rest (`\\sqrt{12}` vs `2\\sqrt{3}`, `x^2+2x+1` vs
`(x+1)^2`) go to math-verify, which parses LaTeX into sympy and compares. sympy can run for minutes or eat
gigabytes on an innocent-looking answer, and a training step must not wait on it. math-verify's own timeout uses
signals, which only work on the main thread of the main interpreter (not in a thread pool, not under a server);
a child process works anywhere and can be killed outright. So:

  - `equal(a, b, deadline)` sends the pair to a worker (a fresh interpreter running `_serve`, one JSON pair per
    line in, '1' or '0' per line out) and waits until the caller's `Deadline`. A worker that overruns is killed
    and the pair counts as "not equal", with a warning; the verdict is cached, so the same pair gets the same
    answer for the rest of the run.
  - The pool keeps a standby worker next to the active one: when the active one is killed the standby, already
    warm, takes over at once and a new standby starts in the background. The standby is started only after the
    first worker is ready, so two imports of sympy never compete for the CPU at startup.
  - The first worker of a process needs 2-3 s to import sympy and warm math-verify's parser; that wait is not
    charged to the caller's deadline. `warmup()` pays it up front.
  - Workers are capped at WORKER_MEMORY of address space, get EOF when the parent exits, and are not inherited
    across fork (a forked child starts its own pool).

The child loads this file by path (not `import verify_worker`), so it works whatever the parent's sys.path is.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import selectors
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

TIME_LIMIT = 0.75  # seconds of slow checks one public call of vote.py may spend; keeps every call under 1 s
MIN_ASK = 0.05  # seconds a check must have left to be worth sending
STARTUP_LIMIT = 60.0  # seconds the first worker of a process may take to import sympy and math-verify
WORKER_MEMORY = 2 << 30  # address-space cap of a worker, so a runaway expression fails instead of swapping


class Deadline:
  """When one public call must stop spending time on slow checks; all its checks share it."""

  def __init__(self, seconds: float = TIME_LIMIT):
    self.at = time.monotonic() + seconds

  def left(self) -> float:
    return self.at - time.monotonic()


# -------------------------------------------------------------------------------------------- in the child
def _serve() -> None:
  """Worker main loop: one JSON [a, b] per stdin line -> '1' or '0' per stdout line. Runs in the child."""
  import resource
  try:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
  except (ValueError, OSError):
    pass
  out = os.fdopen(os.dup(1), 'wb', buffering=0)  # replies go to a private copy of stdout ...
  os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # ... so stray prints from libraries cannot corrupt them
  logging.disable(logging.CRITICAL)  # math-verify warns that its (signal) timeout is off: we enforce ours
  from math_verify import LatexExtractionConfig, parse, verify  # LaTeX only: ExprExtractionConfig evals text
  from sympy import Expr, FiniteSet, Interval, Tuple
  config = [LatexExtractionConfig(boxed_match_priority=0)]

  @functools.lru_cache(maxsize=8192)
  def parsed(s):
    """(sympy objects, whether it is one number, that number as a complex when finite)."""
    exprs = parse('\\boxed{' + s + '}', config, fallback_mode='no_fallback', parsing_timeout=None)
    number = len(exprs) == 1 and getattr(exprs[0], 'is_number', False) is True
    value = None
    try:  # a numeric fingerprint lets two different numbers skip math-verify's slow symbolic paths
      value = complex(exprs[0].evalf(30)) if number else None
      value = value if math.isfinite(abs(value)) else None
    except Exception:
      value = None
    return exprs, number, value

  def never_a_number(e):
    # Shortcuts for math-verify's slowest "no" (simplify(a - b)): a number never equals an expression in
    # free variables (misses constants in disguise such as sin^2 x + cos^2 x), an interval or a tuple.
    return ((isinstance(e, Expr) and bool(e.free_symbols)) or isinstance(e, (Interval, Tuple))
            or (isinstance(e, FiniteSet) and len(e) != 1))

  def check(a, b):
    (pa, na, va), (pb, nb, vb) = parsed(a), parsed(b)
    if not pa or not pb:
      return False
    if va is not None and vb is not None and abs(va - vb) > 1e-5 * max(1.0, abs(va), abs(vb)):
      return False  # far beyond math-verify's rounding (6 decimals), so it would say "not equal" too
    if (na and never_a_number(pb[0])) or (nb and never_a_number(pa[0])):
      return False
    # math-verify is not symmetric (e.g. gold `x \le 2` vs `(-\infty, 2]`); equality must be
    return verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)

  # Warm sympy's caches and the LaTeX parser's per-construct tables (the first fraction, tuple, root, ...
  # parsed in a process costs 20-100 ms, later ones about 3 ms) before declaring the worker ready.
  warm = ['\\frac{\\sqrt{3}}{2}', '\\sqrt3/2', '(1,2)', '[0,1)', '\\{1,2\\}', 'x^2+1', '3\\pi', '\\frac{5\\pi}{3}',
          '2\\sqrt{5}', '0.25', '50\\%', 'x=3', '(-\\infty, 2]', '1.5\\times10^{3}']
  for a, b in zip(warm, warm[1:] + warm[:1]):
    try:
      check(a, b)
    except Exception:
      pass
  out.write(b'ready\n')
  for line in sys.stdin.buffer:
    try:
      ok = check(*json.loads(line))
    except Exception:  # includes MemoryError and RecursionError from sympy
      ok = False
    out.write(b'1\n' if ok else b'0\n')


# ------------------------------------------------------------------------------------------- in the parent
# The child runs this file (argv[1]) as a module of its own name and calls its `_serve`.
_BOOT = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('_verify_worker', sys.argv[1]); "
         "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m._serve()")


class _Worker:
  """One child process running `_serve`. A fresh interpreter (not fork: the parent may hold JAX threads)."""

  def __init__(self):
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    self.proc = subprocess.Popen([sys.executable, '-c', _BOOT, os.path.abspath(__file__)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 start_new_session=True)  # Ctrl-C hits the parent; the child sees EOF
    self.selector = selectors.DefaultSelector()
    self.selector.register(self.proc.stdout, selectors.EVENT_READ)
    self.buffer, self.ready = b'', False

  def _read_line(self, deadline: float) -> bytes | None:
    while b'\n' not in self.buffer:
      left = deadline - time.monotonic()
      if left <= 0 or not self.selector.select(left):
        return None
      chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
      if not chunk:
        return None  # the child died
      self.buffer += chunk
    line, _, self.buffer = self.buffer.partition(b'\n')
    return line

  def wait_ready(self, deadline: float) -> bool:
    self.ready = self.ready or self._read_line(deadline) == b'ready'
    return self.ready

  def ask(self, a: str, b: str, deadline: float) -> bool | None:
    try:
      self.proc.stdin.write(json.dumps([a, b]).encode() + b'\n')
      self.proc.stdin.flush()
    except OSError:
      return None
    line = self._read_line(deadline)
    return None if line is None else line == b'1'

  def close(self, kill: bool = True) -> None:
    if kill:
      self.proc.kill()
      self.proc.wait()
    self.selector.close()
    self.proc.stdin.close()
    self.proc.stdout.close()


class _Pool:
  """An active worker and a standby, so a worker killed at its deadline is replaced at once."""

  def __init__(self):
    self.lock = threading.Lock()
    self.active: _Worker | None = None
    self.spare: _Worker | None = None
    self.warm = False  # a worker has been ready in this process: from now on startup counts as time
    self.broken = False  # the first worker never came up (math-verify missing?): stop trying

  def _worker(self, deadline: float) -> _Worker | None:
    if self.active is None:
      self.active, self.spare = self.spare or _Worker(), None
    if self.active.wait_ready(deadline if self.warm else time.monotonic() + STARTUP_LIMIT):
      self.warm = True
      if self.spare is None:  # started only now: two imports of sympy at once would slow the first
        self.spare = _Worker()
      return self.active
    if self.active.proc.poll() is not None:  # died while starting: try a fresh one next time
      self.active.close()
      self.active = None
    if not self.warm:
      logger.error('the math-verify worker did not start; slow checks now say "not equal"')
      self.broken = True
    return None

  def check(self, a: str, b: str, deadline: Deadline) -> bool | str:
    """math-verify's verdict; 'overran' when the pair used up the time (its worker is killed), or
    'unavailable' when there was no worker or too little time to ask one."""
    started, warm = time.monotonic(), self.warm
    if self.broken or not self.lock.acquire(timeout=max(0.0, deadline.left() if warm else STARTUP_LIMIT)):
      return 'unavailable'
    try:
      worker = self._worker(deadline.at)
      if not warm:  # the first start of the process is not the caller's time (see warmup())
        deadline.at += time.monotonic() - started
      if worker is None or deadline.left() < MIN_ASK:
        return 'unavailable'  # do not kill a healthy worker for a deadline it never had a chance at
      verdict = worker.ask(a, b, deadline.at)
      if verdict is None:  # overran (or died): kill it, the spare takes over
        worker.close()
        self.active = None
        return 'overran'
      return verdict
    finally:
      self.lock.release()

  def warmup(self, standby: bool) -> None:
    with self.lock:
      if self._worker(time.monotonic() + STARTUP_LIMIT) and standby:
        self.spare.wait_ready(time.monotonic() + STARTUP_LIMIT)

  def shutdown(self, kill: bool = True) -> None:
    for worker in (self.active, self.spare):
      if worker is not None:
        worker.close(kill)
    self.active = self.spare = None


_POOL = _Pool()
atexit.register(lambda: _POOL.shutdown())


def _after_fork() -> None:
  # The workers belong to the parent: close our copies of their pipes (so they still see EOF when the parent
  # exits) and start afresh; the old lock may have been held by a thread that does not exist here.
  global _POOL
  _POOL.shutdown(kill=False)
  _POOL = _Pool()


os.register_at_fork(after_in_child=_after_fork)


def warmup(standby: bool = True) -> None:
  """Start the math-verify worker now (2-3 s) instead of inside the first call that needs one; with
  standby=True also wait for the standby worker, so no import runs in the background afterwards."""
  _POOL.warmup(standby)


_CACHE: dict[tuple[str, str], bool] = {}


def equal(a: str, b: str, deadline: Deadline) -> bool:
  """math-verify's verdict on two answers (symmetric, cached); "not equal" when it cannot answer in time."""
  pair = (a, b) if a <= b else (b, a)
  if pair in _CACHE:
    return _CACHE[pair]
  verdict = _POOL.check(*pair, deadline)
  if isinstance(verdict, str):
    logger.warning('math-verify %s, counted as not equal: %.60r vs %.60r', verdict, *pair)
    if verdict == 'unavailable':
      return False  # not cached: the next call may find a worker and time
    verdict = False  # an overrun is cached, so the same pair gets the same answer for the rest of the run
  if len(_CACHE) > 1 << 17:
    _CACHE.clear()
  _CACHE[pair] = verdict
  return verdict
