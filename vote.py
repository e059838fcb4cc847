"""Answers, answer equality, the majority vote, rewards and per-group metrics for SRT.

SRT (arXiv 2505.21444) rewards a completion 1 when its final answer agrees with the majority answer of its
group of G samples. This file holds everything between the sampled text and those numbers:

  1. `extract_answer`: the content of the LAST `\\boxed{...}` / `\\boxed x` / `\\fbox{...}`, brace-matched.
     No box, an empty box or an unbalanced last box -> None, and None never votes.
  2. `equivalent`: ONE notion of answer equality, used by the vote, the rewards and every metric (the official
     code votes on raw strings but rewards with math-verify, which splits `1/2` from `\\frac{1}{2}`).
     Cheap rules on a `canonical_key` first; math-verify (LaTeX -> sympy, never Python eval) only when they
     cannot decide:
       - identical strings or equal keys -> equal. Keys drop spacing, `\\left`/`\\right`, `\\text{}` wrappers,
         units, degree marks, `\\%` and `\\$` (so 50\\% == 50, not 0.5), a leading `x =`, thousands separators;
       - numbers (integers, decimals, fractions, mixed numbers 2\\frac{1}{2} = 5/2, `a\\times10^k`) and
         tuples / intervals / sets of them are decided by key, as exact rationals: 0.5 == 1/2 and
         (1,2) != (2,1), but 0.333333 != 1/3 (math-verify rounds to 6 digits, which is not transitive);
       - choice letters A-E (`B`, `(B)`, `\\text{(B)}`) compare by letter; `\\text{}` words and prose (4+
         letters in a row outside a command) compare as case-insensitive text;
       - inputs that could hang or blow up sympy (over 1000 chars, control bytes, nesting deeper than 16,
         nested or 5-digit exponents, unbalanced braces) equal only themselves and are never parsed;
       - the rest goes to math-verify in a long-lived child process with a hard deadline: a check that overruns
         gets its process killed (a standby process takes over) and counts as "not equal", with a warning.
         Signals (math-verify's own timeout) only work on the main thread; a child process works anywhere.
  3. `group_answers` / `majority_vote`: classes of equivalent answers, built by key first, then by comparing
     class representatives only. Tie rule: the tied class whose first member comes earliest in the list wins.
  4. `self_rewards` (SRT), `gt_rewards` (RLVR), and the metrics avg@k, maj@k, pass@k, pseudo-label accuracy,
     parse rate, each a function of one prompt's group.

Every public call returns within `TIME_LIMIT` (plus a few ms) and never raises on any answer text, except the
first call that needs math-verify in a process: it waits once for the child to import sympy and warm up
(2-3 s); call `warmup()` to pay that up front. A user verifier (`gt_rewards(..., verifier=)`) runs on a thread
under the same limit; past it the call moves on with 0, but the thread itself cannot be killed.

  python -m pytest -q tests/test_vote.py   # the rules above, checked on ~250 hand-made cases
  python bench/vote_bench.py               # speed: 32 prompts x 32 answers, hostile inputs
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

TIME_LIMIT = 0.75  # seconds of slow checks one public call may spend; keeps every call under 1 s
MIN_ASK = 0.05  # seconds a check must have left to be worth sending
STARTUP_LIMIT = 60.0  # seconds the first worker of a process may take to import sympy and math-verify
MAX_CHARS = 1000  # longer answers are never parsed (no competition answer is this long)
MAX_DEPTH = 16  # deeper {[( nesting is never parsed (sympy's recursion and time grow with it)
WORKER_MEMORY = 2 << 30  # address-space cap of a worker, so a runaway expression fails instead of swapping

# ---------------------------------------------------------------------------------------------- 1) extract
_BOX = re.compile(r'\\(?:boxed|fbox)(?![A-Za-z])')  # not \boxedfoo or \fboxsep
_BRACE_TOKENS = re.compile(r'\\.|[{}]', re.S)  # an escaped char (\{, \}, \\) is skipped as a unit
_BARE_TOKEN = re.compile(r'[^\s$]+')


def extract_answer(text: str) -> str | None:
  """Content of the last box in `text` (the box that STARTS last), stripped; None if none/empty/unbalanced."""
  if not isinstance(text, str):
    return None
  last = None
  for last in _BOX.finditer(text):  # one left-to-right pass: linear time
    pass
  if last is None:
    return None
  j, n = last.end(), len(text)
  while j < n and text[j].isspace():
    j += 1
  if j < n and text[j] == '{':
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, j):
      depth += {'{': 1, '}': -1}.get(m.group(), 0)
      if depth == 0:
        return text[j + 1:m.start()].strip() or None
    return None  # the last box never closes
  m = _BARE_TOKEN.match(text, j)  # `\boxed 5` / `\boxed5`: one token, up to whitespace or `$`
  return m.group() if m and not m.group().startswith('}') else None


# ----------------------------------------------------------------------------------------- 2) cheap keys
_CONTROL_BYTES = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_NESTED_POWER = re.compile(r'\^\s*\{[^{}]*\^|\^\s*[\w.]+\s*\^')  # 2^{2^{10}}, 2^2^2: towers
_BIG_POWER = re.compile(r'\^\s*\{?\s*[+-]?\d{5,}')  # 10^{99999}
_BIG_FACTORIAL = re.compile(r'\d{5,}\s*!')
_NESTING = re.compile(r'\\.|[{}()\[\]]', re.S)


def _too_hard(s: str) -> bool:
  """Answers that must never reach sympy: they can hang it or eat memory before any deadline bites."""
  if len(s) > MAX_CHARS or _CONTROL_BYTES.search(s):
    return True
  if _NESTED_POWER.search(s) or _BIG_POWER.search(s) or _BIG_FACTORIAL.search(s):
    return True
  depth = braces = 0
  for m in _NESTING.finditer(s):
    c = m.group()
    if len(c) == 2:
      continue
    depth += 1 if c in '{([' else -1
    braces += {'{': 1, '}': -1}.get(c, 0)
    if depth > MAX_DEPTH or braces < 0:
      return True
  return braces != 0  # unbalanced braces would also break the `\boxed{...}` we wrap answers in


_WORD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm)\{\s*([A-Za-z][A-Za-z '-]*[A-Za-z])\s*\}\.?")
_SPACING = re.compile(r'\\(?:left|right|displaystyle|q?quad)(?![A-Za-z])|\\[,;:! ]|~|\{,\}')
_MARKS = re.compile(r'\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\%|%|\\\$|\$')  # degrees, percent, dollars
_UNIT = re.compile(r'(?<=.)\\(?:text|textnormal|mbox|mathrm)\{\s*([A-Za-z][A-Za-z. ]*[A-Za-z.])\s*\}(?:\^\{?[23]\}?)?$')
_TEXT = re.compile(r'\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|operatorname)\{([^{}]*)\}')
_SPACES = re.compile(r'\\[A-Za-z]+\s+(?=[A-Za-z])|\s+')
_SHORT_ARGS = [(re.compile(r'\\[dt]frac(?![A-Za-z])'), r'\\frac'),
               (re.compile(r'\\frac(\d)(\d)'), r'\\frac{\1}{\2}'),  # \frac12 is \frac{1}{2} in TeX
               (re.compile(r'\\frac(\d)\{'), r'\\frac{\1}{'),
               (re.compile(r'\\frac\{([^{}]*)\}(\d)'), r'\\frac{\1}{\2}'),
               (re.compile(r'\\sqrt(\d)'), r'\\sqrt{\1}'),
               (re.compile(r'\^(\w)'), r'^{\1}')]
_ASSIGNMENT = re.compile(r"\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?'?\s*=")  # `x =`, `\theta=`, `a_1=`
_LETTER = re.compile(r'\(?([A-E])\)?|\(([A-E])\).+')
_THOUSANDS = re.compile(r'[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?')  # whole answer only: `(1,234)` is a pair
_NUM = r'([+-]?(?:\d+\.?\d*|\.\d+))'
_NUMBER_FORMS = [(re.compile(_NUM), lambda g: Fraction(g[0])),
                 (re.compile(_NUM + '/' + _NUM), lambda g: Fraction(g[0]) / Fraction(g[1])),
                 (re.compile(r'([+-]?)\\frac\{' + _NUM + r'\}\{' + _NUM + r'\}'),
                  lambda g: Fraction(g[0] + '1') * Fraction(g[1]) / Fraction(g[2])),
                 (re.compile(r'([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}'),  # mixed number 2\frac{1}{2} = 5/2
                  lambda g: Fraction(g[0] + '1') * (int(g[1]) + Fraction(int(g[2]), int(g[3])))),
                 (re.compile(r'(?:' + _NUM + r'(?:\\times|\\cdot|\*))?10\^\{?([+-]?\d{1,3})\}?'),
                  lambda g: Fraction(g[0] or 1) * Fraction(10) ** int(g[1]))]
_INFINITIES = {'\\infty': math.inf, '+\\infty': math.inf, '-\\infty': -math.inf}
_BRACKETED = re.compile(r'(\(|\[|\\\{)(.*)(\)|\]|\\\})', re.S)
_COMMAND = re.compile(r'\\(?:begin|end)\{[A-Za-z*]+\}|\\[A-Za-z]+')  # with environment names
_PROSE = re.compile(r'[A-Za-z]{4,}')  # outside commands, four letters in a row are words, not a product


def _number(s: str) -> Fraction | None:
  """Exact value of a plain number in one of _NUMBER_FORMS, else None."""
  for pattern, value in _NUMBER_FORMS:
    if m := pattern.fullmatch(s):
      try:
        return value(m.groups())
      except (ZeroDivisionError, ValueError):
        return None
  return None


def _numbers_key(s: str) -> str | None:
  """Key of a number, or of a tuple / interval / set / bare list of numbers (and +-infinity), else None.
  Sets (`\\{..\\}`, and a bare `1,2`, which math-verify reads as a set) are sorted; tuples and intervals keep
  their order and brackets, so (1,2) != (2,1) and [0,1) != [0,1]. One bracketed number is that number."""
  m = _BRACKETED.fullmatch(s)
  opening, body, closing = m.groups() if m else ('\\{', s, '\\}')
  values = []
  for part in body.split(','):  # a comma inside an element's braces leaves a non-number: no key
    value = _number(part) if part not in _INFINITIES else _INFINITIES[part]
    if value is None:
      return None
    values.append(value)
  if len(values) == 1:
    return None if isinstance(values[0], float) else str(values[0])  # a lone infinity is left to math-verify
  if opening == '\\{':
    values = sorted(set(values))
  return opening + ','.join({math.inf: '\\infty', -math.inf: '-\\infty'}.get(v) or str(v) for v in values) + closing


@functools.lru_cache(maxsize=1 << 16)
def _analyse(s: str) -> tuple[str, str]:
  """(key, kind) of a stripped answer. Kinds: 'hard' (never parsed), 'word' (compared as text), 'letter'
  (a choice), 'num' (numbers and lists of numbers, compared by key) and 'expr' (anything else)."""
  try:
    return _analyse_unchecked(s)
  except Exception:  # a gap in the rules must not crash a training step: such an answer equals only itself
    logger.exception('canonical key failed on %.60r', s)
    return s, 'hard'


def _analyse_unchecked(s: str) -> tuple[str, str]:
  if _too_hard(s):
    return s, 'hard'
  if m := _WORD.fullmatch(s):
    return ' '.join(m.group(1).split()), 'word'
  s = _SPACING.sub(lambda m: ',' if m.group() == '{,}' else '', s).strip().rstrip('.').strip()
  s = _MARKS.sub('', s)
  s = _UNIT.sub('', s) if (u := _UNIT.search(s)) and len(u.group(1).strip(' .')) >= 2 else s
  for _ in range(2):  # \text{\textbf{(B)}}
    s = _TEXT.sub(r'\1', s)
  if s.count('=') == 1 and (m := _ASSIGNMENT.match(s)) and s[m.end():].strip():
    s = s[m.end():]
  if _THOUSANDS.fullmatch(s.strip()):  # before spaces go: `1, 234` is a list, `1,234` is a number
    s = s.replace(',', '')
  s = _SPACES.sub(lambda m: m.group().split()[0] + ' ' if m.group()[0] == '\\' else '', s).rstrip('.')
  for pattern, repl in _SHORT_ARGS:
    s = pattern.sub(repl, s)
  if m := _LETTER.fullmatch(s):
    return f'({m.group(1) or m.group(2)})', 'letter'
  if (key := _numbers_key(s)) is not None:
    return key, 'num'
  if _PROSE.search(_COMMAND.sub(' ', s)):
    return s, 'word'
  return s, 'expr'


def canonical_key(a: str) -> str:
  """A normalised form of an answer; equal keys imply `equivalent` (never the other way round)."""
  return _analyse(a.strip())[0] if isinstance(a, str) else ''


# --------------------------------------------------------------------------- 3) math-verify in a child
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


_BOOT = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('_vote_worker', sys.argv[1]); "
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


class _Deadline:
  """When one public call must stop spending time on slow checks; all its checks share it."""

  def __init__(self, seconds: float = TIME_LIMIT):
    self.at = time.monotonic() + seconds

  def left(self) -> float:
    return self.at - time.monotonic()


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

  def check(self, a: str, b: str, deadline: _Deadline) -> bool | str:
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


_SLOW_CACHE: dict[tuple[str, str], bool] = {}


def _slow_equal(a: str, b: str, deadline: _Deadline) -> bool:
  pair = (a, b) if a <= b else (b, a)
  if pair in _SLOW_CACHE:
    return _SLOW_CACHE[pair]
  verdict = _POOL.check(*pair, deadline)
  if isinstance(verdict, str):
    logger.warning('math-verify %s, counted as not equal: %.60r vs %.60r', verdict, *pair)
    if verdict == 'unavailable':
      return False  # not cached: the next call may find a worker and time
    verdict = False  # an overrun is cached, so the same pair gets the same answer for the rest of the run
  if len(_SLOW_CACHE) > 1 << 17:
    _SLOW_CACHE.clear()
  _SLOW_CACHE[pair] = verdict
  return verdict


def _clean(a) -> str | None:
  return a.strip() or None if isinstance(a, str) else None


def _equal(a: str, b: str, deadline: _Deadline) -> bool:
  """`equivalent` on cleaned answers, with a deadline shared by the caller's other checks."""
  if a == b:
    return True
  (ka, ta), (kb, tb) = _analyse(a), _analyse(b)
  if ka == kb:
    return True
  if 'word' in (ta, tb):
    return ka.casefold() == kb.casefold()
  if 'hard' in (ta, tb) or 'letter' in (ta, tb) or ta == tb == 'num':
    return False  # keys decide these kinds completely
  # A number goes to math-verify as its key: 2\frac{1}{2} and 50\% then mean what they mean in the key (5/2, 50).
  return _slow_equal(ka if ta == 'num' else a, kb if tb == 'num' else b, deadline)


def equivalent(a: str | None, b: str | None) -> bool:
  """Whether two extracted answers are mathematically equal (rules in the module docstring)."""
  a, b = _clean(a), _clean(b)
  return a is not None and b is not None and _equal(a, b, _Deadline())


# ------------------------------------------------------------------------------------------- 4) the vote
def group_answers(answers: Sequence[str | None]) -> list[int]:
  """Class id per answer (-1 for None), ids in order of first appearance; each new key is compared with the
  first member of every existing class, in class order, so a class is found in O(classes) checks."""
  return _group(answers, _Deadline())


def _group(answers: Sequence[str | None], deadline: _Deadline) -> list[int]:
  ids, class_of_key, firsts = [], {}, []
  for a in answers:
    a = _clean(a)
    if a is None:
      ids.append(-1)
      continue
    key = _analyse(a)[0]
    if key not in class_of_key:
      found = next((c for c, first in enumerate(firsts) if _equal(first, a, deadline)), None)
      if found is None:
        found = len(firsts)
        firsts.append(a)
      class_of_key[key] = found
    ids.append(class_of_key[key])
  return ids


def _winner(ids: Sequence[int]) -> tuple[int, float]:
  """(winning class id or -1, share). Ties go to the lowest id (argmax returns the first maximum), i.e. to
  the tied class whose first member appears earliest in the list."""
  counts = np.bincount([i for i in ids if i >= 0])
  if counts.size == 0:
    return -1, 0.0
  win = int(np.argmax(counts))
  return win, float(counts[win] / counts.sum())


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, float]:
  """(pseudo-label, share): the first occurrence of the largest class, and class size / number of voters.
  (None, 0.0) when nobody voted."""
  return _vote(answers, _Deadline())


def _vote(answers: Sequence[str | None], deadline: _Deadline) -> tuple[str | None, float]:
  ids = _group(answers, deadline)
  win, share = _winner(ids)
  return (answers[ids.index(win)].strip(), share) if win >= 0 else (None, 0.0)


# -------------------------------------------------------------------------------------------- 5) rewards
def self_rewards(answers: Sequence[str | None], threshold: float = 0.0, soft: bool = False) -> np.ndarray:
  """SRT reward per sample: 1 if in the majority class else 0; all 0 when nobody voted or share < threshold.
  soft=True: reward = share of the sample's own class (0 for None), also gated by the threshold."""
  ids = group_answers(answers)
  win, share = _winner(ids)
  if win < 0 or share < threshold:
    return np.zeros(len(ids), np.float32)
  if soft:
    counts = np.bincount([i for i in ids if i >= 0])
    return np.array([counts[i] / counts.sum() if i >= 0 else 0.0 for i in ids], np.float32)
  return np.array([float(i == win) for i in ids], np.float32)


Verifier = Callable[[str, str], float]


def _guarded(verifier: Verifier, answer: str, gold: str, deadline: _Deadline) -> float:
  """A user verifier (e.g. a reasoning-gym `score_answer` wrapped as (answer, gold) -> float) on a daemon
  thread: past the deadline the caller moves on with 0. Unlike math-verify the thread cannot be killed
  (verifiers are arbitrary, possibly unpicklable closures); reasoning-gym's are short string checks."""
  box = []

  def run():
    try:
      box.append(float(verifier(answer, gold)))
    except BaseException:
      pass

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(max(0.0, deadline.left()))
  if thread.is_alive():
    logger.warning('verifier overran the time limit on %.60r, scored 0', answer)
    return 0.0
  return box[0] if box and math.isfinite(box[0]) else 0.0


def _scorer(gold: str | None, verifier: Verifier | None, deadline: _Deadline) -> Callable[[str | None], float]:
  """answer -> score against gold, memoised per distinct answer, all under the caller's deadline."""
  memo, gold = {}, _clean(gold)

  def score(a):
    a = _clean(a)
    if a is None or gold is None:
      return 0.0
    if a not in memo:
      memo[a] = (_guarded(verifier, a, gold, deadline) if verifier is not None
                 else float(_equal(a, gold, deadline)))
    return memo[a]
  return score


def gt_rewards(answers: Sequence[str | None], gold: str | None, verifier: Verifier | None = None) -> np.ndarray:
  """RLVR reward per sample: 1.0 if equivalent to gold (or the verifier's score), 0 for None."""
  score = _scorer(gold, verifier, _Deadline())
  return np.array([score(a) for a in answers], np.float32)


# -------------------------------------------------------------------------------------------- 6) metrics
def avg_at_k(correct: Sequence[float]) -> float:
  """Mean correctness of the k samples ("pass@1" in the paper's plots); 0.0 for an empty group."""
  return float(np.mean(correct)) if len(correct) else 0.0


def maj_at_k(answers: Sequence[str | None], gold: str | None, verifier: Verifier | None = None) -> float:
  """Correctness of the majority answer (the verifier's score of it, if given); 0.0 when nobody voted."""
  deadline = _Deadline()  # one time limit for the vote and the check together
  return _scorer(gold, verifier, deadline)(_vote(answers, deadline)[0])


def pseudo_label_accuracy(answers: Sequence[str | None], gold: str | None) -> float:
  """Whether the SRT pseudo-label equals the hidden gold answer: the same number as maj@k, named for where it
  is logged (training batches). No label (nobody voted) counts as wrong: 0.0."""
  return maj_at_k(answers, gold)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k),
  as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f'pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}')
  if n - c < k:
    return 1.0  # every k-subset contains a correct sample
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def parse_rate(answers: Sequence[str | None]) -> float:
  """Fraction of completions that produced an answer (a boxed one); 0.0 for an empty group."""
  return sum(_clean(a) is not None for a in answers) / len(answers) if len(answers) else 0.0
