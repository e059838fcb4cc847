"""Speed of vote.py: a batch of 32 prompts x 32 sampled answers voted and scored, plus hostile inputs.

Run: python bench/vote_bench.py
The answers imitate what a math policy writes: per prompt one true value written mostly in one form, some
equivalent rewrites (3/4, 0.75, \\dfrac34; \\sqrt{12} for 2\\sqrt{3}), a few wrong values, a few unboxed
completions (None) and a little junk. Values differ per prompt so caches do not carry one prompt to the next.
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vote  # noqa: E402

G = 32  # samples per prompt
NUM_PROMPTS = 32


def forms(rng: random.Random) -> tuple[list[str], list[str]]:
  """(equivalent writings of one true value, the main one first; some wrong values)."""
  kind = rng.choice(['int', 'int', 'frac', 'radical', 'radical_frac', 'pi', 'tuple'])
  a, b = rng.randint(2, 999), rng.randint(2, 9)
  if kind == 'int':
    right = [f'{a * 1000 + b:,}', str(a * 1000 + b), f'{a * 1000 + b}.0', f'x = {a * 1000 + b}']
    wrong = [str(a * 1000 + b + 1), str(a), str(2 * a)]
  elif kind == 'frac':
    right = [f'\\frac{{{b}}}{{{b + 1}}}', f'{b}/{b + 1}', f'\\dfrac{{{b}}}{{{b + 1}}}']
    if b + 1 in (2, 4, 5, 8, 10):
      right.append(str(b / (b + 1)))
    wrong = [f'\\frac{{{b + 1}}}{{{b}}}', f'\\frac{{1}}{{{b}}}', str(b)]
  elif kind == 'radical':
    right = [f'{b}\\sqrt{{3}}', f'\\sqrt{{{3 * b * b}}}', f'{b} \\sqrt 3']
    wrong = [f'{b}\\sqrt{{2}}', f'\\sqrt{{{3 * b}}}', str(3 * b)]
  elif kind == 'radical_frac':
    right = [f'\\frac{{\\sqrt{{{b}}}}}{{2}}', f'\\frac{{\\sqrt{b}}}{{2}}', f'\\sqrt{{{b}}}/2']
    wrong = [f'\\frac{{\\sqrt{{{b + 1}}}}}{{2}}', f'\\frac{{{b}}}{{2}}', f'\\sqrt{{{b}}}']
  elif kind == 'pi':
    right = [f'{b}\\pi', f'{b} \\pi', f'\\pi \\cdot {b}']
    wrong = [f'{b + 1}\\pi', f'\\frac{{{b}\\pi}}{{2}}', str(b)]
  else:
    right = [f'({b}, {a})', f'\\left({b},{a}\\right)', f'({b},{a})']
    wrong = [f'({a}, {b})', f'({b}, {a + 1})', str(b)]
  return right, wrong


JUNK = ['I think', '\\text{undefined}', 'x', '\\frac{', 'the answer', '\\text{no solution}', 'n']


def make_group(rng: random.Random) -> list[str | None]:
  right, wrong = forms(rng)
  group = []
  for _ in range(G):
    u = rng.random()
    if u < 0.55:
      group.append(right[0])
    elif u < 0.70:
      group.append(rng.choice(right[1:]))
    elif u < 0.85:
      group.append(rng.choice(wrong))
    elif u < 0.93:
      group.append(None)
    else:
      group.append(rng.choice(JUNK))
  return group


def vote_and_reward(batch):
  """SRT's rewards: the majority label, agreement with it, and the soft reward (class shares)."""
  for group in batch:
    label, _ = vote.majority_vote(group)
    vote.agreement(group, label)
    vote.class_shares(group)


HOSTILE = {
    '1 MB string': 'x' * (1 << 20),
    '10,000 nested braces': '{' * 10_000 + '1' + '}' * 10_000,
    'exponent tower': '2^{2^{2^{2^{2^{10}}}}}',
    '10^{10^{10}}': '10^{10^{10}}',
    'code in a box': "__import__('os').system('touch /tmp/pwned')",
    'NUL bytes': '1\x00' * 100,
    '100k digits': '9' * 100_000,
    '\\frac nested 500 deep': '\\frac{1}{' * 500 + '2' + '}' * 500,
    'slow polynomial (cut by the deadline)': '(x+y+z+1)^{30}',
}


def main():
  t = time.perf_counter()
  vote.warmup(standby=False)
  print(f'worker startup (once per process; vote.warmup() pays it up front): {time.perf_counter() - t:.2f} s')
  vote.warmup()  # and the standby, so its import does not run during the timings

  rng = random.Random(0)
  batch = [make_group(rng) for _ in range(NUM_PROMPTS)]
  t = time.perf_counter()
  vote_and_reward(batch)
  cold = time.perf_counter() - t
  t = time.perf_counter()
  vote_and_reward(batch)
  warm = time.perf_counter() - t
  print(f'{NUM_PROMPTS} prompts x {G} answers, majority_vote + agreement + class_shares: {cold:.3f} s first pass, '
        f'{warm:.3f} s repeated (caches hot)')

  rng = random.Random(1)
  fresh = [make_group(rng) for _ in range(NUM_PROMPTS)]
  t = time.perf_counter()
  for group in fresh:
    ids = vote.group_answers(group)
    vote.correct(group, next(a for a in group if a is not None))
    vote.parse_rate(group), len(set(ids))
  print(f'another fresh batch, group_answers + correct + parse_rate: {time.perf_counter() - t:.3f} s')

  slowest = (0.0, '')
  for name, s in HOSTILE.items():
    other = '(x+y+z+2)^{30}' if 'polynomial' in name else '2'
    calls = {'extract_answer': lambda: vote.extract_answer('\\boxed{' + s + '}'),
             'equivalent': lambda: vote.equivalent(s, other),
             'majority_vote': lambda: vote.majority_vote([s, s + ' ', other, None]),
             'agreement': lambda: vote.agreement([s, s + ' ', other, None], other + '+1'),
             'class_shares': lambda: vote.class_shares([s, s + ' ', other, None]),
             'correct': lambda: vote.correct([s, s + ' '], other + '+1')}
    took = {}
    for fn, call in calls.items():
      t = time.perf_counter()
      call()
      took[fn] = time.perf_counter() - t
    worst = max(took, key=took.get)
    slowest = max(slowest, (took[worst], f'{worst} on {name}'))
    print(f'  hostile {name:40s} slowest call {took[worst]:.3f} s ({worst})')
  print(f'slowest single call on a hostile input: {slowest[0]:.3f} s ({slowest[1]}); '
        f'/tmp/pwned exists: {os.path.exists("/tmp/pwned")}')


if __name__ == '__main__':
  main()
