"""data.py: reasoning-gym specs and prompt formats, local files, and loud errors naming file and line."""
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data

CHAIN = 'rg:chain_sum:min_terms=2,max_terms=4,min_digits=1,max_digits=2'


def test_chain_sum_format_and_partial_sums():
  examples = data.load_examples(CHAIN, size=200, seed=0)
  assert len(examples) == 200
  lengths = set()
  for ex in examples:
    expression = ex.prompt[:-len(' =')]
    assert ex.prompt == expression + ' =' and ex.question.endswith(ex.prompt)   # compact: no English preamble
    terms = expression.split()
    lengths.add(len(terms[::2]))
    steps, box = re.fullmatch(r' (.*)\. \\boxed\{(-?\d+)\}', ex.target).groups()
    assert box == ex.answer
    steps = steps.split(', ')
    assert len(steps) == len(terms) // 2
    # Each step is `a op b = c` with c right, starting from the first term, each next step from the last result.
    running = terms[0]
    for step, op, term in zip(steps, terms[1::2], terms[2::2]):
      a, op_, b, eq, c = step.split(' ')
      assert (a, op_, b, eq) == (running, op, term, '=')
      assert int(c) == (int(a) + int(b) if op == '+' else int(a) - int(b))
      running = c
    assert running == ex.answer
  assert lengths == {2, 3, 4}


def test_chain_sum_target_by_hand():
  assert data.chain_sum_target('12 - 7 + 3', '8') == ' 12 - 7 = 5, 5 + 3 = 8. \\boxed{8}'
  assert data.chain_sum_target('12 - 7', '5') == ' 12 - 7 = 5. \\boxed{5}'
  assert data.chain_sum_target('5 - -3', '8') == ' 5 - -3 = 8. \\boxed{8}'   # allow_negation
  with pytest.raises(ValueError, match='reasoning-gym says'):
    data.chain_sum_target('12 - 7', '6')
  with pytest.raises(ValueError, match='is not "a op b op c"'):
    data.chain_sum_target('12 * 7', '84')


def test_seeds_are_reproducible_and_differ():
  a, b, c = (data.load_examples('rg:chain_sum:min_digits=3,max_digits=4', size=50, seed=s) for s in (0, 0, 1))
  assert a == b
  # reasoning-gym alone would give seed 1 = seed 0 shifted by one item; here the sets barely meet.
  assert len({x.prompt for x in a} & {x.prompt for x in c}) <= 1


def test_other_rg_task_format():
  (ex,) = data.load_examples('rg:family_relationships', size=1, seed=0)
  assert ex.prompt == ex.question + " Let's think step by step and output the final answer within \\boxed{}."
  assert ex.target == '\\boxed{' + ex.answer + '}'


def test_spec_values_are_typed():
  assert data._parse_rg_spec('rg:x:a=2,b=0.5,c=true,d=abc') == ('x', {'a': 2, 'b': 0.5, 'c': True, 'd': 'abc'})


@pytest.mark.parametrize('spec, message', [
    ('rg:chain_sam', r"'rg:chain_sam': unknown reasoning-gym task 'chain_sam'; close names: chain_sum"),
    ('rg:chain_sum:max_term=3', r'chain_sum has no option max_term; its options: min_terms, max_terms'),
    ('rg:chain_sum:min_terms=5,max_terms=2', r'invalid configuration for chain_sum: max_terms must be >= min_terms'),
    ('rg:chain_sum:min_terms', r"'min_terms' is not key=value"),
    ('rg:chain_sum:seed=3', r'give seed to load_examples'),
])
def test_bad_rg_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    data.load_examples(spec, size=4)


def test_verifiers():
  assert data.make_verifier(CHAIN) is None             # numbers: vote.equivalent
  assert data.make_verifier('data.jsonl') is None
  family = data.make_verifier('rg:family_relationships')
  assert family('Grandmother', 'grandmother') == 1.0 and family('aunt', 'grandmother') == 0.0
  bitwise = data.make_verifier('rg:bitwise_arithmetic')
  assert bitwise('0xA', '0xa') == bitwise('10', '0xa') == 1.0
  assert bitwise('0xb', '0xa') == bitwise('0xa', '__import__("os")') == 0.0   # a non-literal gold is never run


@pytest.mark.parametrize('task', ['family_relationships', 'bitwise_arithmetic', 'knights_knaves'])
def test_the_papers_reasoning_gym_tasks(task):
  """The paper's Reasoning Gym tasks load with a boxed-answer prompt, and their verifiers give every gold answer
  full credit and a wrong answer (another prompt's gold that differs, or nonsense) none."""
  examples = data.load_examples(f'rg:{task}', size=8, seed=0)
  verifier = data.make_verifier(f'rg:{task}')
  assert verifier is not None and len(examples) == 8
  for ex in examples:
    assert ex.prompt.startswith(ex.question) and ex.prompt.endswith(data.SUFFIX) and ex.answer
    assert verifier(ex.answer, ex.answer) == 1.0
    assert verifier('no idea', ex.answer) == 0.0
    other = next(o.answer for o in examples if verifier(o.answer, ex.answer) < 1.0)
    assert verifier(other, ex.answer) < 1.0


RECORDS = [
    {'problem': 'What is 1+1?', 'solution': 'It is $\\boxed{2}$.', 'answer': '2'},
    {'question': 'What is 2+2?', 'answer': 4},
    {'prompt': 'Half of 1?', 'solution': 'So $\\boxed{\\frac{1}{2}}$.'},   # answer from the last box
    {'question': 'Unknown?'},
    {'prompt': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Q5. Box it.'}],
     'reward_model': {'ground_truth': '5', 'style': 'rule'}},               # verl / DAPO layout
]


def check_records(examples):
  assert [ex.answer for ex in examples] == ['2', '4', '\\frac{1}{2}', None, '5']
  assert [ex.question for ex in examples] == ['What is 1+1?', 'What is 2+2?', 'Half of 1?', 'Unknown?', 'Q5. Box it.']
  suffix = " Let's think step by step and output the final answer within \\boxed{}."
  assert [ex.prompt for ex in examples] == [q + suffix for q in ['What is 1+1?', 'What is 2+2?', 'Half of 1?',
                                                                   'Unknown?']] + ['Q5. Box it.']
  assert [ex.target for ex in examples] == ['It is $\\boxed{2}$.', None, 'So $\\boxed{\\frac{1}{2}}$.', None, None]


def test_jsonl_json_parquet(tmp_path):
  jsonl, js, parquet = tmp_path / 'a.jsonl', tmp_path / 'a.json', tmp_path / 'a.parquet'
  lines = [json.dumps(r) for r in RECORDS]
  jsonl.write_text('\n'.join(lines[:3]) + '\n\n' + '\n'.join(lines[3:]))   # a blank line is skipped
  js.write_text(json.dumps(RECORDS, indent=2))
  check_records(data.load_examples(str(jsonl)))
  check_records(data.load_examples(str(js)))
  rows = [dict(r, answer=str(r['answer'])) if 'answer' in r else r for r in RECORDS[:4]]
  schema = pa.schema([(name, pa.string()) for name in ('question', 'problem', 'prompt', 'answer', 'solution')])
  pq.write_table(pa.Table.from_pylist(rows, schema=schema), parquet)   # missing fields are nulls
  check_records(data.load_examples(str(parquet)) + data.load_examples(str(jsonl))[4:])
  assert [ex.answer for ex in data.load_examples(str(jsonl), size=2)] == ['2', '4']
  assert len(data.load_examples(str(js), size=3)) == 3


def test_bad_files(tmp_path):
  def expect(name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=re.escape(message.format(path=path))):
      data.load_examples(str(path))

  good = json.dumps({'question': 'q', 'answer': '1'})
  expect('empty.jsonl', '', '{path}: no records (empty file)')
  expect('blank.jsonl', '\n  \n', '{path}: no records')
  expect('empty.json', '[]', '{path}: no records')
  expect('bytes.jsonl', good.encode() + b'\n' + good.encode() + b'\n{"question": "\xff"}\n', '{path}:3: not UTF-8')
  expect('bytes.json', b'[\n' + good.encode() + b',\n{"question": "\xc3("}]', '{path}:3: not UTF-8')
  expect('bad.jsonl', good + '\n' + good + '\n{"question": "q",}\n', '{path}:3: invalid JSON')
  expect('bad.json', '[\n' + good + ',\n' + good + '\n' + good + ']', "{path}:4: invalid JSON (expected ',' or ']'")
  expect('dict.json', '{"question": "q"}', '{path}:1: invalid JSON (expected a list of objects')
  expect('noq.jsonl', good + '\n\n{"query": "q", "answer": "1"}\n',
         '{path}:3: no question field (looked for question, problem, prompt; the record has answer, query)')
  expect('noq.json', '[\n' + good + ',\n  {"answer": "1"}\n]', '{path}:3: no question field')
  expect('list.jsonl', '[1, 2]\n', '{path}:1: expected an object, got list')
  expect('ans.jsonl', good + '\n{"question": "q", "answer": [1, 2]}\n',
         '{path}:2: answer is a list ([1, 2]); expected a string or a number')
  expect('bool.json', '[{"question": "q", "answer": true}]', '{path}:1: answer is a bool')
  expect('qnum.jsonl', '{"question": 5}\n', "{path}:1: field 'question' holds int '5', not the text of a question")
  expect('a.csv', 'question,answer\n', "unsupported extension '.csv'")
  schema = pa.schema([('question', pa.string()), ('text', pa.string())])
  pq.write_table(pa.Table.from_pylist([{'question': 'q'}, {'text': 't'}], schema=schema), tmp_path / 'noq.parquet')
  with pytest.raises(ValueError, match=re.escape(f'{tmp_path}/noq.parquet: row 1: no question field (looked for '
                                                 'question, problem, prompt; the record has text)')):
    data.load_examples(str(tmp_path / 'noq.parquet'))
  (tmp_path / 'junk.parquet').write_bytes(b'not parquet')
  with pytest.raises(ValueError, match='junk.parquet: not a readable parquet file'):
    data.load_examples(str(tmp_path / 'junk.parquet'))
  with pytest.raises(FileNotFoundError, match='missing.jsonl: no such file'):
    data.load_examples(str(tmp_path / 'missing.jsonl'))
  with pytest.raises(ValueError, match='size=0 must be >= 1'):
    data.load_examples(str(tmp_path / 'missing.jsonl'), size=0)
