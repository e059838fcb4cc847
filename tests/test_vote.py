"""Tests for vote.py and verify_worker.py: extraction, answer equality, the vote, scores against a label, hostile
inputs, time limits, the math-verify worker pool.

Every expectation below was worked out by hand. Run: python -m pytest -q tests/test_vote.py
"""

import concurrent.futures
import itertools
import os
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import verify_worker  # noqa: E402
import vote  # noqa: E402

LIMIT = 1.0  # seconds any call may take, on any input


@pytest.fixture(autouse=True)
def warm_workers():
  # Worker startup (a few seconds, once per process) is not what these tests time. This also waits for the
  # replacement after a test killed a worker, so no test sees a half-started pool.
  vote.warmup(standby=False)


# ------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize('text, expected', [
    ('The answer is \\boxed{5}.', '5'),
    ('so $\\boxed{\\frac{1}{2}}$', '\\frac{1}{2}'),  # nested braces
    ('\\boxed{\\frac{\\sqrt{3}}{2^{\\frac{1}{2}}}}', '\\frac{\\sqrt{3}}{2^{\\frac{1}{2}}}'),
    ('\\boxed{\\{x \\mid x^{2} > 1\\}}', '\\{x \\mid x^{2} > 1\\}'),  # escaped braces do not count
    ('\\boxed{a\\}b}', 'a\\}b'),
    ('\\boxed{a\\\\}', 'a\\\\'),  # \\ is a line break, then } closes the box
    ('first \\boxed{1}, then \\boxed{2}', '2'),  # the last box wins
    ('\\boxed{1} \\fbox{2}', '2'),
    ('\\fbox{7}', '7'),
    ('\\boxed 5', '5'),
    ('$\\boxed 5$ done', '5'),  # a bare token stops at $ or whitespace
    ('\\boxed5', '5'),
    ('\\boxed {4}', '4'),
    ('\\boxed{ 12 } because it is the only one', '12'),  # text after the box, spaces stripped
    ('\\boxed{\\text{(B)}}', '\\text{(B)}'),
    ('\\boxed{\\boxed{5}}', '5'),  # the box that starts last is the inner one
    ('\\boxed{1} and then \\boxed{2', None),  # the last box is unbalanced
    ('\\boxed{}', None),  # an empty box is no answer
    ('\\boxed{   }', None),
    ('no box here: 42', None),
    ('\\boxedfoo{3}', None),  # a different macro
    ('\\boxed', None),
    ('', None),
])
def test_extract_answer(text, expected):
  assert vote.extract_answer(text) == expected


@pytest.mark.parametrize('bad', [None, 5, b'\\boxed{1}', ['\\boxed{1}']])
def test_extract_answer_non_string(bad):
  assert vote.extract_answer(bad) is None


# ------------------------------------------------------------------------------------------- equality
EQUAL = [
    # integers, thousands separators, signs, leading zeros
    ('1000', '1,000'), ('1000', '1000.0'), ('1,000,000', '1000000'), ('1\\,000', '1000'), ('1{,}000', '1000'),
    ('-5', '-5.0'), ('+5', '5'), ('007', '7'), ('-0', '0'), ('3.', '3'), ('x = 1,000', '1000'),
    # fractions and decimals
    ('1/2', '\\frac{1}{2}'), ('\\dfrac12', '0.5'), ('\\tfrac{1}{2}', '1/2'), ('0.5', '.5'),
    ('-\\frac{1}{2}', '\\frac{-1}{2}'), ('-0.5', '-\\dfrac{1}{2}'), ('\\frac{3}{4}', '0.75'),
    ('\\frac{6}{8}', '\\frac34'), ('\\frac{1}{3}', '\\frac{2}{6}'), ('\\frac{10}{4}', '2.5'), ('\\frac{1}{4}', '0.25'),
    ('\\displaystyle\\frac{1}{2}', '1/2'), ('\\frac{1.5}{3}', '\\frac12'),
    # mixed numbers (competition convention: 2\frac{1}{2} is two and a half; math-verify agrees)
    ('2\\frac{1}{2}', '\\frac{5}{2}'), ('2\\frac{1}{2}', '2.5'), ('-1\\frac{1}{3}', '-\\frac{4}{3}'),
    # scientific notation
    ('1.5\\times10^{3}', '1500'), ('3 \\times 10^5', '300000'), ('2.5 \\cdot 10^{-2}', '0.025'), ('10^{3}', '1000'),
    ('10^{10}', '10000000000'),
    # radicals
    ('\\frac{\\sqrt{2}}{2}', '\\sqrt{2}/2'), ('\\frac{\\sqrt2}{2}', '\\frac{1}{\\sqrt{2}}'),
    ('2\\sqrt{3}', '\\sqrt{12}'), ('\\sqrt{8}', '2\\sqrt2'), ('3\\sqrt{2}', '\\sqrt{18}'),
    ('\\frac{\\sqrt{3}}{3}', '\\frac{1}{\\sqrt3}'),
    ('2', '\\sqrt{4}'), ('\\sqrt{3}', '3^{1/2}'), ('\\sqrt[3]{8}', '2'), ('\\sqrt{2}+1', '1+\\sqrt{2}'),
    ('2 \\sqrt 3', '2\\sqrt{3}'),
    # pi
    ('2\\pi', '\\pi \\cdot 2'), ('\\frac{\\pi}{2}', '\\pi/2'), ('\\frac{3\\pi}{4}', '\\frac{3}{4}\\pi'),
    ('\\pi r^2', 'r^2\\pi'),
    # degrees, percent, money, units: the mark or unit is dropped
    ('30^\\circ', '30'), ('30^{\\circ}', '30'), ('90°', '90'), ('50\\%', '50'), ('\\$5', '5'),
    ('5\\text{ dollars}', '\\$5'), ('5\\text{ cm}', '5'), ('5 \\text{cm}^2', '5'), ('12\\text{ inches}', '12'),
    ('\\frac{1}{2}\\text{ inch}', '0.5'), ('5\\mbox{ m}', '5\\mbox{ m}'),
    # assignments: the variable is dropped
    ('x = 3', '3'), ('x=3', 'y = 3'), ('\\theta = \\frac{\\pi}{4}', '\\frac{\\pi}{4}'), ('a_1 = 2', '2'),
    ('x = \\sqrt{2}', '\\frac{2}{\\sqrt{2}}'),
    # tuples, intervals, sets
    ('(1,2)', '(1, 2)'), ('\\left(1, 2\\right)', '(1,2)'), ('(\\frac12, 3)', '(0.5, 3)'), ('[0,1)', '[0, 1)'),
    ('(-\\infty, 2]', '(-\\infty,2]'), ('(-\\infty, 2]', 'x \\le 2'), ('\\{1,2\\}', '\\{2,1\\}'),
    ('\\{1, 2, 3\\}', '\\{3,2,1\\}'), ('1, 2', '2, 1'), ('1, 2', '\\{1,2\\}'), ('\\{3\\}', '3'),
    ('\\left[ 0, \\frac{1}{2} \\right]', '[0, 0.5]'), ('(\\sqrt{2}, 1)', '(\\frac{2}{\\sqrt{2}}, 1)'),
    # multiple choice and text
    ('\\text{(B)}', 'B'), ('(B)', 'B'), ('\\textbf{(B)}', '(B)'), ('\\textbf{(C) } 12', 'C'), ('\\text{A}', 'A'),
    ('\\mathrm{(D)}', 'D'), ('\\text{Tuesday}', 'Tuesday'), ('\\text{Yes}', '\\text{yes}'),
    ('\\text{no solution}', '\\text{No  solution}'),
    # expressions
    ('x^2+2x+1', '(x+1)^2'), ('2x+3', '3+2x'), ('\\frac{x}{2}', '0.5x'), ('e^{2}', 'e^2'), ('\\infty', '\\infty'),
    ('\\log_2 8', '3'), ('\\binom{5}{2}', '10'), ('5!', '120'), ('2^{10}', '1024'), ('2+3i', '3i+2'),
    ('\\begin{pmatrix}1\\\\2\\end{pmatrix}', '\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}'),
    ('\\frac{a+b}{2}', '\\frac{b+a}{2}'), ('\\sin x', '\\sin(x)'),
    # a number meets math-verify as its key, so the rules above hold there too
    ('50\\%', '\\sqrt{2500}'), ('2\\frac{1}{2}', '\\frac{\\sqrt{25}}{2}'), ('x = 1,000', '10^{3}'),
]

NOT_EQUAL = [
    ('1/2', '2'), ('(1,2)', '(2,1)'), ('[0,1)', '[0,1]'), ('(0,1)', '(0,1]'), ('(-\\infty, 2)', '(-\\infty, 2]'),
    ('3', '3.1'), ('1.0001', '1'), ('8', '0.8'), ('12', '21'), ('1000', '100'), ('-5', '5'), ('3', '-3'),
    ('-\\frac{1}{2}', '\\frac{1}{2}'), ('\\frac{1}{2}', '\\frac{1}{3}'), ('2^{10}', '2^{11}'), ('10^{10}', '10^{11}'),
    ('\\sqrt{2}', '2'), ('\\sqrt{2}/2', '\\sqrt{3}/2'), ('7', '7\\sqrt{2}'), ('\\sqrt{2}', '1.41'),
    ('\\pi', '3.14'), ('\\pi', '3.14159'), ('e', '2.718'),
    ('(1,234)', '1234'), ('1, 234', '1234'), ('1,0000', '10000'),  # a pair / a list / not a thousands separator
    ('\\{1,2\\}', '(1,2)'), ('\\{1,2\\}', '\\{1,2,3\\}'), ('(1,2)', '[1,2]'), ('(1,2,3)', '(1,2)'),
    ('(B)', '(C)'), ('\\text{(A)}', '\\text{(B)}'), ('B', '5'), ('\\text{Tuesday}', '\\text{Thursday}'),
    ('\\text{Tuesday}', '\\text{yadseuT}'),  # as symbols these would be equal products
    ('0', '\\text{none}'), ('\\emptyset', '0'),
    ('2\\frac{1}{2}', '1'),  # a mixed number, not 2 * 1/2
    ('1e3', '1000'),  # LaTeX has no e-notation: this is 1 * e * 3
    ('x=3', 'x=4'), ('x', 'y'), ('x^2', 'x^3'), ('2x+3', '2x-3'), ('x+1', 'x-1'), ('\\sin x', '\\cos x'),
    ('2+3i', '2-3i'), ('\\infty', '-\\infty'), ('\\frac{2}{3}', '0.67'),
    ('the answer is 5', '5'),  # prose is compared as text
    # Known limitations, on purpose (see vote.py's docstring):
    ('1/3', '0.333333'),  # numbers are exact; math-verify's 6-digit rounding would say equal, but is not transitive
    ('50\\%', '0.5'),  # % is dropped like a unit, so 50\% == 50; math-verify accepts both 50 and 0.5
    ('\\frac{\\pi}{6}', '30^\\circ'),  # degree marks are dropped, not converted to radians
    ('A', 'a'),  # choice letters are uppercase A-E; math-verify would lowercase both
]


@pytest.mark.parametrize('a, b', EQUAL)
def test_equal_pairs(a, b):
  assert vote.equivalent(a, b) and vote.equivalent(b, a)


@pytest.mark.parametrize('a, b', NOT_EQUAL)
def test_not_equal_pairs(a, b):
  assert not vote.equivalent(a, b) and not vote.equivalent(b, a)


def test_table_size():
  assert len(EQUAL) + len(NOT_EQUAL) >= 100


def test_equal_keys_imply_equivalent():
  answers = [x for pair in EQUAL + NOT_EQUAL for x in pair]
  for a, b in itertools.combinations(answers, 2):
    if vote.canonical_key(a) == vote.canonical_key(b):
      assert vote.equivalent(a, b), (a, b)


@pytest.mark.parametrize('a, key', [
    ('1,000', '1000'), ('\\dfrac{1}{2}', '1/2'), ('0.50', '1/2'), ('x = 3', '3'), ('5\\text{ cm}', '5'),
    ('\\left( 1, 2 \\right)', '(1,2)'), ('\\{2, 1\\}', '\\{1,2\\}'), ('\\text{(B)}', '(B)'), ('3.', '3'),
    ('2\\frac{1}{2}', '5/2'), ('1.5\\times10^{3}', '1500'), ('\\frac{\\sqrt2}{2}', '\\frac{\\sqrt{2}}{2}'),
])
def test_canonical_key(a, key):
  assert vote.canonical_key(a) == key


@pytest.mark.parametrize('a, b', [(None, None), (None, '1'), ('1', None), ('', ''), ('  ', '0'), (3, 3)])
def test_none_is_never_equivalent(a, b):
  assert not vote.equivalent(a, b)


# ----------------------------------------------------------------------------------------------- votes
def test_equivalent_forms_make_one_class():
  assert vote.group_answers(['1/2', '\\frac{1}{2}', '0.5']) == [0, 0, 0]
  assert vote.majority_vote(['1/2', '\\frac{1}{2}', '0.5']) == ('1/2', 1.0)


def test_group_ids_in_order_of_first_appearance():
  assert vote.group_answers(['2', None, '3', '2.0', '\\sqrt{4}', None, 'x', '3']) == [0, -1, 1, 0, 0, -1, 2, 1]


def test_label_is_first_member_of_the_largest_class():
  assert vote.majority_vote(['3', '\\frac{1}{2}', '0.5', '1/2']) == ('\\frac{1}{2}', 0.75)


def test_ties_go_to_the_class_that_appears_first():
  assert vote.majority_vote(['2', '3', '3', '2']) == ('2', 0.5)
  assert vote.majority_vote(['3', '2', '2', '3']) == ('3', 0.5)
  assert vote.majority_vote([None, '1/2', '3', '0.5', '3']) == ('1/2', 0.5)
  assert vote.majority_vote(['a', 'b', 'c']) == ('a', 1 / 3)


def test_none_does_not_vote():
  assert vote.majority_vote(['4', None, None, '5', '4']) == ('4', 2 / 3)


def srt_reward(answers):
  """SRT's hard reward as the trainer composes it: agreement with the group's own majority label."""
  return vote.agreement(answers, vote.majority_vote(answers)[0])


@pytest.mark.parametrize('answers', [[], [None], [None] * 32, ['', '  ', None]])
def test_nobody_voted(answers):
  assert vote.majority_vote(answers) == (None, 0.0)
  assert np.all(srt_reward(answers) == 0)
  assert np.all(vote.class_shares(answers) == 0)
  assert vote.class_shares(answers).shape == vote.agreement(answers, '1').shape == (len(answers),)


def test_unanimous():
  assert vote.majority_vote(['7'] * 5) == ('7', 1.0)
  np.testing.assert_array_equal(srt_reward(['7'] * 5), np.ones(5))
  np.testing.assert_array_equal(vote.class_shares(['7'] * 5), np.ones(5))


# --------------------------------------------------------------------------------------------- scores
def test_agreement_with_the_majority_label():
  np.testing.assert_array_equal(srt_reward(['4', '4.0', '5', None]), [1, 1, 0, 0])
  # The label is the class's first member; every member of its class agrees with it, no one else does.
  np.testing.assert_array_equal(srt_reward(['3', '\\frac{1}{2}', '0.5', '1/2', None, '3']), [0, 1, 1, 1, 0, 0])


def test_ties_are_deterministic():
  # 2 and 3 tie 2-2: the class that appears first wins, so the same group always gets the same rewards.
  for _ in range(3):
    np.testing.assert_array_equal(srt_reward(['2', '3', '3.0', '2']), [1, 0, 0, 1])
    np.testing.assert_array_equal(srt_reward(['3', '2', '2', '3']), [1, 0, 0, 1])
    np.testing.assert_array_equal(srt_reward([None, '1/2', '3', '0.5', '3']), [0, 1, 0, 1, 0])
    np.testing.assert_allclose(vote.class_shares(['2', '3', '3.0', '2']), [0.5] * 4)


def test_agreement_with_a_given_label():
  np.testing.assert_array_equal(vote.agreement(['1/2', '0.5', '2', None, 'x=\\frac12'], '\\frac{1}{2}'),
                                [1, 1, 0, 0, 1])
  np.testing.assert_array_equal(vote.agreement(['1', '2'], None), [0, 0])   # no label: nobody agrees
  assert vote.agreement(['1'], '1').dtype == np.float32


def test_agreement_with_a_judge():
  # A judge's score counts only in full: partial credit is disagreement.
  half = lambda answer, label: 1.0 if answer == label else 0.5
  np.testing.assert_array_equal(vote.agreement(['lion', 'lions', None], 'lion', judge=half), [1, 0, 0])
  np.testing.assert_array_equal(vote.agreement(['lions'], 'lion', judge=lambda a, g: 0.5), [0])
  np.testing.assert_array_equal(vote.agreement(['lions'], 'lion', judge=lambda a, g: 1.0), [1])
  # The judge replaces `equivalent`: a judge saying 0 overrides equal numbers.
  np.testing.assert_array_equal(vote.agreement(['0.5'], '1/2', judge=lambda a, g: 0.0), [0])
  np.testing.assert_array_equal(vote.agreement(['0.5'], None, judge=lambda a, g: 1.0), [0])


def test_class_shares_by_hand():
  np.testing.assert_allclose(vote.class_shares(['4', '4', '5', None]), [2 / 3, 2 / 3, 1 / 3, 0])
  # classes {1/2, 0.5}, {3}, {2, 2}: 5 voters
  np.testing.assert_allclose(vote.class_shares(['1/2', '0.5', '3', '2', None, '2']), [0.4, 0.4, 0.2, 0.4, 0, 0.4])
  np.testing.assert_allclose(vote.class_shares(['a', 'b', 'c']), [1 / 3] * 3)
  assert vote.class_shares(['1']).dtype == np.float32


def test_correct():
  np.testing.assert_array_equal(vote.correct(['1/2', '0.5', '2', None, 'x=\\frac12'], '\\frac{1}{2}'),
                                [1, 1, 0, 0, 1])
  np.testing.assert_array_equal(vote.correct(['1', '2'], None), [0, 0])   # no gold: wrong
  assert vote.correct(['1'], '1').dtype == np.float32


def test_correct_gives_no_partial_credit():
  def by_name(answer, gold):
    return 1.0 if answer.lower() == gold.lower() else 0.01  # reasoning-gym style partial credit

  np.testing.assert_array_equal(vote.correct(['Alice', 'alice', 'Bob', None], 'ALICE', verifier=by_name), [1, 1, 0, 0])
  np.testing.assert_array_equal(vote.correct(['4', '5'], '4', verifier=lambda a, g: 0.5), [0, 0])
  np.testing.assert_array_equal(vote.correct(['4', '5'], '4', verifier=lambda a, g: 1.0), [1, 1])


def test_verifier_errors_and_overruns_score_zero():
  def boom(answer, gold):
    raise RuntimeError('bad verifier')

  def sleepy(answer, gold):
    time.sleep(3)
    return 1.0

  for score in (vote.correct, vote.agreement):
    assert list(score(['1', '2'], '1', boom)) == [0, 0]
    assert list(score(['1'], '1', lambda a, g: float('nan'))) == [0]
    assert list(score(['1'], '1', lambda a, g: 'not a number')) == [0]
    start = time.monotonic()
    assert list(score(['1', '2', '3'], '1', sleepy)) == [0, 0, 0]
    assert time.monotonic() - start < LIMIT


def test_parse_rate():
  assert vote.parse_rate(['1', None, '2', None]) == 0.5
  assert vote.parse_rate([None, '', 'x']) == pytest.approx(1 / 3)
  assert vote.parse_rate([]) == 0.0


# -------------------------------------------------------------------------------------- hostile inputs
HOSTILE = {
    '1 MB string': 'x' * (1 << 20),
    '1 MB of boxes': '\\boxed{' * (1 << 17),
    '10,000 nested braces': '{' * 10_000 + '1' + '}' * 10_000,
    'tower 2^2^2^2^2^10': '2^{2^{2^{2^{2^{10}}}}}',
    'tower 10^10^10': '10^{10^{10}}',
    'big exponent': '10^{123456789}',
    'big factorial': '123456789!',
    'NUL bytes': '1\x00' * 1000,
    'long digit string': '9' * 100_000,
    'long digit string, parseable length': '9' * 999,
    '\\frac nested 500 deep': '\\frac{1}{' * 500 + '2' + '}' * 500,
    'parentheses 400 deep': '(' * 400 + '1' + ')' * 400,
    'slow polynomial': '(x+y+z+1)^{30}',
}


@pytest.mark.parametrize('name', list(HOSTILE))
def test_hostile_inputs_finish_in_time(name):
  s = HOSTILE[name]
  for call in (lambda: vote.extract_answer('\\boxed{' + s + '}'), lambda: vote.extract_answer(s),
               lambda: vote.equivalent(s, '2'), lambda: vote.equivalent(s, s + ' 1'),
               lambda: vote.majority_vote([s, '2', s + '1', None, '2']), lambda: vote.canonical_key(s),
               lambda: vote.correct([s, '2'], '(x+y+z+2)^{30}'), lambda: vote.class_shares([s, s, '2']),
               lambda: vote.agreement([s, s, '2'], '(x+y+z+2)^{30}')):
    start = time.monotonic()
    call()
    assert time.monotonic() - start < LIMIT, name


def test_code_in_a_box_is_just_a_wrong_answer(tmp_path):
  target = tmp_path / 'pwned'
  code = f"__import__('os').system('touch {target}')"
  text = f'The answer is \\boxed{{{code}}}'
  answer = vote.extract_answer(text)
  assert answer == code
  assert not vote.equivalent(answer, '0')
  assert vote.majority_vote([answer, '1', '1']) == ('1', 2 / 3)
  assert list(vote.correct([answer], '0')) == [0]
  # The cheap rules call this prose; push it (and friends) through math-verify's parser too.
  deadline = verify_worker.Deadline()
  for payload in (code, f"eval(\"__import__('os').system('touch {target}')\")", 'exec(1)', "open('x','w')"):
    assert not verify_worker.equal(payload, '0', deadline)
  assert not target.exists()


# -------------------------------------------------------------------------------- time limit off-thread
SLOW = ['(x+y+z+{0})^{{30}}'.format(i) for i in range(1, 4)]


def test_slow_input_is_cut_on_the_main_thread():
  start = time.monotonic()
  assert not vote.equivalent(SLOW[0], '(x+y+z+9)^{30}')
  assert time.monotonic() - start < LIMIT


def test_slow_input_is_cut_off_the_main_thread():
  result = {}

  def run():
    start = time.monotonic()
    result['equal'] = vote.equivalent(SLOW[1], '(x+y+z+9)^{30}')
    result['took'] = time.monotonic() - start

  thread = threading.Thread(target=run)
  thread.start()
  thread.join(10)
  assert result == {'equal': False, 'took': pytest.approx(result.get('took'))} and result['took'] < LIMIT


def test_slow_input_is_cut_in_a_thread_pool():
  vote.warmup(standby=False)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    start = time.monotonic()
    futures = [pool.submit(vote.equivalent, SLOW[2], '(x+y+z+9)^{30}'),
               pool.submit(vote.equivalent, '\\sqrt{8}', '2\\sqrt{2}')]
    results = [f.result(timeout=10) for f in futures]
  assert time.monotonic() - start < LIMIT
  # The second call waited for the lock while the first one ran out its time; with none left it says "no".
  assert results[0] is False


def test_workers_recover_after_a_kill():
  vote.warmup()  # the standby too
  vote.equivalent('(x+y+z+5)^{30}', '(x+y+z+9)^{30}')  # kills the active worker ...
  start = time.monotonic()
  assert vote.equivalent('\\sqrt{18}', '3\\sqrt{2}')  # ... and the standby answers at once
  assert not vote.equivalent('\\sqrt{18}', '3\\sqrt{3}')
  assert time.monotonic() - start < 0.5


def test_the_worker_runs_verify_worker_py():
  vote.warmup(standby=False)
  assert verify_worker._POOL.active.proc.args[-1] == os.path.abspath(verify_worker.__file__)
  assert vote.warmup is verify_worker.warmup and vote.TIME_LIMIT == verify_worker.TIME_LIMIT


def test_works_after_fork():
  if not hasattr(os, 'fork'):
    pytest.skip('no fork')
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:  # child: fresh workers of its own
    ok = vote.equivalent('\\sqrt{50}', '5\\sqrt{2}') and not vote.equivalent('\\sqrt{50}', '5')
    os.write(write, b'1' if ok else b'0')
    os._exit(0)
  os.close(write)
  assert os.read(read, 1) == b'1'
  os.waitpid(pid, 0)
  assert vote.equivalent('\\sqrt{72}', '6\\sqrt{2}')  # the parent's workers are untouched


def test_a_task_verifier_is_the_votes_notion_of_equality():
  """With a task's verifier as judge, answers it gives full credit against a class's first member join that class:
  reasoning-gym's knights_knaves accepts one assignment written in either order."""
  import data
  judge = data.make_verifier('rg:knights_knaves')
  answers = ['Ann is a knight, and Bob is a knave.', 'Bob is a knave, and Ann is a knight.',
             'Ann is a knave, and Bob is a knave.']
  assert vote.group_answers(answers) == [0, 1, 2]                    # as text: three different answers
  assert vote.group_answers(answers, judge) == [0, 0, 1]
  assert vote.majority_vote(answers, judge) == (answers[0], 2 / 3)
  np.testing.assert_allclose(vote.class_shares(answers, judge), [2 / 3, 2 / 3, 1 / 3])
  np.testing.assert_array_equal(vote.agreement(answers, answers[0], judge), [1, 1, 0])
