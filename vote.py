"""Answers, answer equality, the majority vote, and scores against a label, for SRT.

SRT (arXiv 2505.21444) rewards a completion 1 when its final answer agrees with the majority answer of its
group of G samples. This file holds everything between the sampled text and those numbers, in that order:

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
       - the rest goes to math-verify in a child process with a hard deadline (verify_worker.py): a check that
         overruns counts as "not equal", with a warning.
  3. `group_answers` / `majority_vote`: classes of equivalent answers, built by key first, then by comparing
     class representatives only. Tie rule: the tied class whose first member comes earliest in the list wins.
  4. Scores of one prompt's group of answers: `agreement` with a label (SRT's reward with the majority label,
     RLVR's with the gold one), `class_shares` (the soft reward), `correct` (full-credit accuracy against the
     gold answer: the one notion of accuracy for training metrics and eval.py), `parse_rate`.

Every public call returns within `TIME_LIMIT` (plus a few ms) and never raises on any answer text, except the
first call that needs math-verify in a process: it waits once for the child to import sympy and warm up
(2-3 s); call `warmup()` to pay that up front. A user verifier or judge (a task's `(answer, gold) -> score`)
runs on a thread under the same limit; past it the call moves on with 0, but the thread itself cannot be killed.

  python -m pytest -q tests/test_vote.py   # the rules above, checked on ~250 hand-made cases
  python bench/vote_bench.py               # speed: 32 prompts x 32 answers, hostile inputs
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

import verify_worker
from verify_worker import TIME_LIMIT, Deadline, warmup  # noqa: F401 (TIME_LIMIT and warmup are vote's API too)

logger = logging.getLogger(__name__)

MAX_CHARS = 1000  # longer answers are never parsed (no competition answer is this long)
MAX_DEPTH = 16  # deeper {[( nesting is never parsed (sympy's recursion and time grow with it)

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


# --------------------------------------------------------------------------------- 2) equality: cheap keys
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


# ---------------------------------------------------------------------------------- 2) equality: the rules
def _clean(a) -> str | None:
  return a.strip() or None if isinstance(a, str) else None


def _equal(a: str, b: str, deadline: Deadline) -> bool:
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
  return verify_worker.equal(ka if ta == 'num' else a, kb if tb == 'num' else b, deadline)


def equivalent(a: str | None, b: str | None) -> bool:
  """Whether two extracted answers are mathematically equal (rules in the module docstring)."""
  a, b = _clean(a), _clean(b)
  return a is not None and b is not None and _equal(a, b, Deadline())


# --------------------------------------------------------------------------------------------- 3) the vote
Verifier = Callable[[str, str], float]  # a task's (answer, gold) -> score in [0, 1], e.g. reasoning-gym's


def group_answers(answers: Sequence[str | None], judge: Verifier | None = None) -> list[int]:
  """Class id per answer (-1 for None), ids in order of first appearance; each new key is compared with the
  first member of every existing class, in class order, so a class is found in O(classes) checks.
  judge: a task's verifier; then two answers are one class when their keys are equal or the judge gives the
  answer full credit against the class's first member (reasoning-gym's knights_knaves accepts the same
  assignment in either order; bitwise_arithmetic, hex and decimal forms of one number)."""
  deadline, ids, class_of_key, firsts = Deadline(), [], {}, []
  same = (lambda first, a: _guarded(judge, a, first, deadline) >= 1.0) if judge is not None else (
      lambda first, a: _equal(first, a, deadline))
  for a in answers:
    a = _clean(a)
    if a is None:
      ids.append(-1)
      continue
    key = _analyse(a)[0]
    if key not in class_of_key:
      found = next((c for c, first in enumerate(firsts) if same(first, a)), None)
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


def majority_vote(answers: Sequence[str | None], judge: Verifier | None = None) -> tuple[str | None, float]:
  """(pseudo-label, share): the first occurrence of the largest class, and class size / number of voters.
  (None, 0.0) when nobody voted. judge: the task's verifier as the notion of equality (group_answers)."""
  ids = group_answers(answers, judge)
  win, share = _winner(ids)
  return (answers[ids.index(win)].strip(), share) if win >= 0 else (None, 0.0)


# ----------------------------------------------------------------------------------------------- 4) scores


def agreement(answers: Sequence[str | None], label: str | None, judge: Verifier | None = None) -> np.ndarray:
  """(G,) float32: 1.0 where the answer agrees with `label`, else 0.0; 0.0 for None answers or a None label.
  Agreeing is `equivalent`, or with a judge (a task verifier) a full score, judge(answer, label) >= 1.0.
  With the majority label this is SRT's reward; with the gold label, RLVR's."""
  return _full_credit(answers, label, judge)


def class_shares(answers: Sequence[str | None], judge: Verifier | None = None) -> np.ndarray:
  """(G,) float32: the share of each answer's class among the voters (0.0 for None): SRT's soft reward, which
  pays a sample by how many others agree with it instead of whether its class won."""
  ids = group_answers(answers, judge)
  counts = np.bincount([i for i in ids if i >= 0])
  return np.array([counts[i] / counts.sum() if i >= 0 else 0.0 for i in ids], np.float32)


def correct(answers: Sequence[str | None], gold: str | None, verifier: Verifier | None = None) -> np.ndarray:
  """(G,) float32 full-credit correctness against the gold answer: 1.0 iff `equivalent` (or, with the task's
  verifier, a score >= 1.0), else 0.0; None answers and a None gold are wrong. The one notion of accuracy of
  training metrics and eval.py: a verifier's partial credit (reasoning-gym gives 0.01 or 0.5) is not accuracy."""
  return _full_credit(answers, gold, verifier)


def _full_credit(answers: Sequence[str | None], reference: str | None, judge: Verifier | None) -> np.ndarray:
  """1.0 / 0.0 per answer against one reference, memoised per distinct answer, all under one deadline."""
  deadline, reference, memo = Deadline(), _clean(reference), {}
  scores = []
  for a in map(_clean, answers):
    if a is None or reference is None:
      scores.append(0.0)
      continue
    if a not in memo:
      memo[a] = (_guarded(judge, a, reference, deadline) >= 1.0 if judge is not None
                 else _equal(a, reference, deadline))
    scores.append(float(memo[a]))
  return np.array(scores, np.float32)


def _guarded(verifier: Verifier, answer: str, gold: str, deadline: Deadline) -> float:
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


def parse_rate(answers: Sequence[str | None]) -> float:
  """Fraction of completions that produced an answer (a boxed one); 0.0 for an empty group."""
  return sum(_clean(a) is not None for a in answers) / len(answers) if len(answers) else 0.0
