"""Where prompts and answers come from: reasoning-gym tasks and local files, as a list of `Example`s.

    examples = load_examples('rg:chain_sum:min_terms=2,max_terms=4,max_digits=2', size=1000, seed=0)
    held_out = load_examples('rg:chain_sum:min_terms=2,max_terms=4,max_digits=2', size=256, seed=1)
    math500 = load_examples('data/math500.jsonl')
    verifier = make_verifier(spec)   # None: vote.equivalent compares answers with the gold

A spec is one of
  rg:NAME[:key=value,...]   a reasoning-gym task, `reasoning_gym.create_dataset(NAME, size=, seed=, **kwargs)`;
                            values are read as int, float, true/false, else string (no commas inside a value).
  PATH.jsonl | .json | .parquet
                            records with a question (`question`, else `problem`, else `prompt`) and an answer
                            (`answer`, else verl's `reward_model.ground_truth`, else the last \\boxed{} of
                            `solution`). The MATH-500 / AIME / MATH-12k / DAPO layouts all fit.

The prompt format follows from the spec (there is no separate flag):
  chain_sum   (the embedded tiny char-level policy) prompt `12 - 7 + 3 =`, target ` 12 - 7 = 5, 5 + 3 = 8. \\boxed{8}`.
              The partial sums make a wrong sample go wrong at a step, so errors scatter over many answers and
              the majority vote carries information (a small policy that writes only the answer stays far less
              accurate, and its wrong answers agree with each other more).
  other rg:   the task's question + SUFFIX (the paper's instruction), target `\\boxed{answer}`.
  files       question + SUFFIX, target the `solution` field or None.
              SUFFIX is the paper's: " Let's think step by step and output the final answer within \\boxed{}."
              A verl chat-message prompt ([{'role': 'user', 'content': ...}]) is used verbatim: it already holds
              its instruction.

Seeds: reasoning-gym seeds item i with `seed + i`, so its seeds 0 and 1 share all items but one. We pass it
`seed * SEED_STRIDE mod 2**31`, so sets drawn with different seeds come from different generator streams
(held-out evaluation uses another seed), and seed + i still fits the 32 bits np.random.seed takes (pool_matrix).
Small tasks can still repeat a prompt by chance.

Training reads its prompts through a `PromptStream`: a fresh shuffle per epoch, resumable from a position.
"""
import dataclasses
import difflib
import json
import logging
import os
import re
from typing import Callable

import numpy as np

import vote

SEED_STRIDE = 1_000_000   # more items than any one set draws
# The instruction the paper's runs append to every question, math and Reasoning Gym alike (its data preprocessing;
# the question and this go in one user message, which the runs wrap in the model's chat template: --chat_template).
SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
QUESTION_FIELDS = ('question', 'problem', 'prompt')
_NUMBER = re.compile(r'[+-]?(\d+(\.\d*)?|\.\d+)(/\d+)?')
_INTEGER = re.compile(r'[+-]?\d+')


@dataclasses.dataclass(frozen=True)
class Example:
  question: str        # the problem as the dataset states it
  answer: str | None   # the true answer (hidden from the learner in SRT mode; used for metrics)
  prompt: str          # the text fed to the model
  target: str | None   # a worked solution ending in \boxed{answer}, for the supervised warm start (None if unknown)


def load_examples(spec: str, *, size: int | None = None, seed: int = 0) -> list[Example]:
  """The first `size` examples of a spec (None: all records of a file, or the task's default size)."""
  if size is not None and size < 1:
    raise ValueError(f'{spec!r}: size={size} must be >= 1 (or None for all)')
  if spec.startswith('rg:'):
    name, kwargs = _parse_rg_spec(spec)
    return [_rg_example(name, entry) for entry in _rg_dataset(spec, name, kwargs, size, seed)]
  return [_file_example(where, record) for where, record in _read_records(spec, size)]


def make_verifier(spec: str) -> Callable[[str, str], float] | None:
  """A `(answer, gold) -> score` function for tasks whose answers are not math, else None (vote.equivalent).

  Decided on 8 entries of the task: all gold answers plain numbers -> None (vote.equivalent is exact on numbers;
  chain_sum is such a task). Otherwise the task's own `score_answer(answer, {'answer': gold, 'metadata': ...})`,
  with the metadata the task needs rebuilt from the gold (bitwise_arithmetic) or empty. A task whose scorer needs
  each entry's own metadata (word_ladder, sudoku, ...: it scores its gold below 1 from an entry rebuilt this way)
  cannot be served by an (answer, gold) function: None with a warning, i.e. exact match with the gold.
  Scores below 1 are partial credit; eval.py counts a sample correct only at full credit.
  """
  if not spec.startswith('rg:'):
    return None
  name, kwargs = _parse_rg_spec(spec)
  dataset = _rg_dataset(spec, name, kwargs, 8, 0)
  golds = [str(entry['answer']) for entry in dataset]
  if all(_NUMBER.fullmatch(g.strip()) for g in golds):
    return None
  rebuild = _METADATA_FROM_GOLD.get(name, lambda gold: {})

  def verifier(answer: str, gold: str) -> float:
    return float(dataset.score_answer(answer, {'question': '', 'answer': gold, 'metadata': rebuild(gold)}))

  try:
    ok = all(verifier(g, g) == 1.0 for g in golds)
  except Exception:   # a scorer reading metadata we did not rebuild (KeyError, TypeError, ...)
    ok = False
  if not ok:
    logging.warning('%s: score_answer does not give its own gold full credit without the entry\'s metadata; '
                    'scoring by vote.equivalent with the gold answer instead (exact for unique answers, '
                    'undercounts tasks with several valid answers)', spec)
    return None
  return verifier


# bitwise_arithmetic (one of the paper's tasks) checks `eval(metadata['problem']) == int(answer, 0)`: the gold
# itself is a valid problem. Only a hex/decimal literal is passed on, so nothing else ever reaches its eval().
_METADATA_FROM_GOLD = {
    'bitwise_arithmetic': lambda gold: {'problem': gold} if re.fullmatch(r'-?(0x[0-9a-fA-F]+|\d+)', gold) else {},
}


def load_splits(spec: str, eval_spec: str = '', *, mode: str, seed: int, size: int, eval_prompts: int,
                val_prompts: int) -> tuple[list[Example], list[Example], list[Example], Callable | None]:
  """(training, held-out, validation examples, the task's verifier) for a run. The held-out prompts come from
  eval_spec (default: spec with another seed), the validation prompts from spec with a third seed; neither ever
  appears among the training prompts: a small task (sums of three one-digit numbers has 4,000 prompts) would
  otherwise train on most of its own test set. mode 'sft' needs worked solutions, 'gt' true answers."""
  train = load_examples(spec, size=size, seed=seed)
  if mode == 'sft' and (missing := [i for i, ex in enumerate(train) if not ex.target]):
    raise ValueError(f'--data={spec!r}: --mode=sft needs worked solutions; record {missing[0] + 1} has none')
  if mode == 'gt' and any(ex.answer is None for ex in train):
    raise ValueError(f'--data={spec!r}: --mode=gt needs an answer for every record')
  held_out = (load_examples(eval_spec or spec, size=eval_prompts, seed=seed + 1_000_003)
              if eval_prompts and mode != 'sft' else [])
  val = load_examples(spec, size=val_prompts, seed=seed + 2_000_003) if val_prompts else []
  kept = {ex.question for ex in held_out + val}
  train = [ex for ex in train if ex.question not in kept]
  if not train:
    raise ValueError(f'--data={spec!r}: every training prompt is also a held-out or validation prompt')
  return train, held_out, val, make_verifier(spec)


class PromptStream:
  """The training prompts in a fixed order: epoch e is the permutation RandomState(seed + e) of the examples.
  `pos` counts the prompts taken so far; a checkpoint stores it, so a resumed run takes the same prompts next."""

  def __init__(self, examples: list[Example], seed: int, pos: int = 0):
    self.examples, self.seed, self.pos = examples, seed, pos
    self._order = {}

  def take(self, count: int) -> list[Example]:
    out = []
    for _ in range(count):
      epoch, i = divmod(self.pos, len(self.examples))
      if epoch not in self._order:
        self._order = {epoch: np.random.RandomState(self.seed + epoch).permutation(len(self.examples))}
      out.append(self.examples[self._order[epoch][i]])
      self.pos += 1
    return out


# ------------------------------------------------------------------------------------------------ reasoning-gym


def _parse_value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {'true': True, 'false': False}.get(text.lower(), text)


def _parse_rg_spec(spec: str) -> tuple[str, dict]:
  """'rg:NAME:k=v,k=v' -> (NAME, {k: v})."""
  name, _, args = spec[len('rg:'):].partition(':')
  kwargs = {}
  for item in filter(None, (a.strip() for a in args.split(','))):
    key, eq, value = item.partition('=')
    if not eq or not key.strip():
      raise ValueError(f'{spec!r}: {item!r} is not key=value (spec form: rg:NAME:key=value,key=value)')
    kwargs[key.strip()] = _parse_value(value.strip())
  return name.strip(), kwargs


def _rg_dataset(spec: str, name: str, kwargs: dict, size: int | None, seed: int):
  import reasoning_gym   # imported here: it takes seconds, and file specs do not need it
  from reasoning_gym.factory import DATASETS
  if name not in DATASETS:
    close = difflib.get_close_matches(name, DATASETS, n=5, cutoff=0.4)
    raise ValueError(f'{spec!r}: unknown reasoning-gym task {name!r}; close names: {", ".join(close) or "none"} '
                     f'({len(DATASETS)} tasks in reasoning_gym.factory.DATASETS)')
  for reserved in ('size', 'seed'):
    if reserved in kwargs:
      raise ValueError(f'{spec!r}: give {reserved} to load_examples (--num_prompts / --seed), not in the spec')
  fields = [f.name for f in dataclasses.fields(DATASETS[name][1]) if f.name not in ('size', 'seed')]
  unknown = [k for k in kwargs if k not in fields]
  if unknown:
    raise ValueError(f'{spec!r}: {name} has no option {", ".join(unknown)}; its options: {", ".join(fields)}')
  try:
    return reasoning_gym.create_dataset(name, seed=seed * SEED_STRIDE % 2**31, **({'size': size} if size else {}),
                                        **kwargs)
  except (AssertionError, ValueError, TypeError) as e:   # the task's config.validate() asserts
    raise ValueError(f'{spec!r}: invalid configuration for {name}: {e}') from None


def chain_sum_target(expression: str, answer: str) -> str:
  """' 12 - 7 = 5, 5 + 3 = 8. \\boxed{8}' for '12 - 7 + 3': the partial sums, left to right, then the box."""
  tokens = expression.split()   # 'a op b op c': numbers (signed with allow_negation) and +/- alternate
  if (len(tokens) % 2 == 0 or not all(_INTEGER.fullmatch(t) for t in tokens[::2])
      or not all(t in ('+', '-') for t in tokens[1::2])):
    raise ValueError(f'chain_sum expression {expression!r} is not "a op b op c" with op in +, -')
  total, steps = int(tokens[0]), []
  for op, term in zip(tokens[1::2], tokens[2::2]):
    new = total + int(term) if op == '+' else total - int(term)
    steps.append(f'{total} {op} {term} = {new}')
    total = new
  if str(total) != answer.strip():
    raise ValueError(f'chain_sum {expression!r}: partial sums end at {total}, reasoning-gym says {answer!r}')
  return (' ' + ', '.join(steps) + '.' if steps else '') + f' \\boxed{{{total}}}'


def _rg_example(name: str, entry: dict) -> Example:
  answer = str(entry['answer'])
  if name == 'chain_sum':
    expression = entry['metadata']['expression']
    return Example(question=entry['question'], answer=answer, prompt=expression + ' =',
                   target=chain_sum_target(expression, answer))
  return Example(question=entry['question'], answer=answer, prompt=entry['question'] + SUFFIX,
                 target=f'\\boxed{{{answer}}}')


# ------------------------------------------------------------------------------------------------------- files


def _read_records(path: str, size: int | None) -> list[tuple[str, object]]:
  """[(where, record)]: where is 'path:line' (JSON) or 'path: row i' (parquet), for error messages."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file (a data spec is rg:NAME[:k=v,...] or a .jsonl/.json/.parquet '
                            'file)')
  ext = os.path.splitext(path)[1].lower()
  if ext == '.parquet':
    import pyarrow.parquet as pq
    try:
      rows = pq.read_table(path).to_pylist()
    except Exception as e:   # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
      raise ValueError(f'{path}: not a readable parquet file ({e})') from None
    records = [(f'{path}: row {i}', r) for i, r in enumerate(rows)]
  elif ext in ('.jsonl', '.json'):
    with open(path, 'rb') as f:
      raw = f.read()
    try:
      text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      line = raw.count(b'\n', 0, e.start) + 1
      raise ValueError(f'{path}:{line}: not UTF-8 (byte {raw[e.start:e.start + 1]!r}: {e.reason})') from None
    records = _jsonl_records(path, text, size) if ext == '.jsonl' else _json_records(path, text)
  else:
    raise ValueError(f'{path}: unsupported extension {ext!r}; use .jsonl, .json or .parquet (or rg:NAME)')
  if not records:
    raise ValueError(f'{path}: no records (empty file)')
  return records[:size]


def _jsonl_records(path: str, text: str, size: int | None) -> list:
  records = []
  for line, row in enumerate(text.split('\n'), 1):
    if not row.strip():
      continue
    if size is not None and len(records) == size:
      break
    try:
      records.append((f'{path}:{line}', json.loads(row)))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{line}: invalid JSON ({e.msg}, column {e.colno})') from None
  return records


def _json_records(path: str, text: str) -> list:
  """A JSON list read element by element, so each record keeps the line it starts on."""
  decoder, space = json.JSONDecoder(), re.compile(r'\s*')
  records, i = [], space.match(text).end()
  line, counted = 1, 0   # line of position `counted`, advanced incrementally (a count from 0 each time is O(n^2))
  try:
    if text[i:i + 1] != '[':
      raise json.JSONDecodeError('expected a list of objects', text, i)
    i = space.match(text, i + 1).end()
    while text[i:i + 1] != ']':
      obj, end = decoder.raw_decode(text, i)
      line, counted = line + text.count('\n', counted, i), i
      records.append((f'{path}:{line}', obj))
      i = space.match(text, end).end()
      if text[i:i + 1] == ',':
        i = space.match(text, i + 1).end()
      elif text[i:i + 1] != ']':
        raise json.JSONDecodeError("expected ',' or ']'", text, i)
    if text[i + 1:].strip():
      raise json.JSONDecodeError('extra data after the list', text, space.match(text, i + 1).end())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})') from None
  return records


def _file_example(where: str, record) -> Example:
  if not isinstance(record, dict):
    raise ValueError(f'{where}: expected an object, got {type(record).__name__}')
  field = next((f for f in QUESTION_FIELDS if record.get(f) is not None), None)
  if field is None:
    present = sorted(k for k, v in record.items() if v is not None)
    raise ValueError(f'{where}: no question field (looked for {", ".join(QUESTION_FIELDS)}; '
                     f'the record has {", ".join(present) or "no fields"})')
  question, verbatim = record[field], False
  if isinstance(question, (list, tuple)) and all(isinstance(m, dict) and 'content' in m for m in question):
    users = [m['content'] for m in question if m.get('role', 'user') == 'user']   # verl layout
    question, verbatim = (users[-1] if users else None), True
  if not isinstance(question, str) or not question.strip():
    raise ValueError(f'{where}: field {field!r} holds {type(question).__name__} {str(question)[:60]!r}, '
                     'not the text of a question')
  answer, solution = record.get('answer'), record.get('solution')
  if answer is None and isinstance(record.get('reward_model'), dict):
    answer = record['reward_model'].get('ground_truth')
  if answer is None and isinstance(solution, str):
    answer = vote.extract_answer(solution)
  if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
    raise ValueError(f'{where}: answer is a {type(answer).__name__} ({str(answer)[:60]}); expected a string or '
                     'a number')
  answer = None if answer is None else str(answer).strip() or None
  prompt = question if verbatim else question.strip() + SUFFIX
  return Example(question=question, answer=answer, prompt=prompt,
                 target=solution if isinstance(solution, str) and solution.strip() else None)
