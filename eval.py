"""Evaluate a policy with k samples per prompt: avg@k, maj@k, pass@k and parse rate, plus the paired gain and the
early-stopping pick that train.py reports.

    python eval.py --model=workdir/run1 --data=rg:chain_sum:min_terms=2,max_terms=4,max_digits=2 --eval_samples=8
    python eval.py --model=Qwen/Qwen2.5-Math-7B --data=data/math500.jsonl --eval_prompts=0 --eval_samples=32 \\
        --max_new_tokens=3072 --chat_template --out=math500.json

--model is a Hugging Face directory (config.json, model.safetensors, tokenizer files), a training workdir holding
one at <workdir>/hf (train.py exports there), or a Hugging Face hub id (ORG/NAME, downloaded once into the
standard cache). train.py calls `evaluate` for its held-out numbers. The script uses every device JAX sees, the
weights and each sampler call's rows split over them as in training (--mesh, as train.py's); its first line says
which devices. With --distributed it runs as one process per host, as train.py does; process 0 prints and writes.

For each prompt: k completions (`sample.generate`), each one's answer = its last \\boxed{} (`vote.extract_answer`),
and a sample is correct when it earns full credit against the gold answer (`vote.correct`: vote.equivalent, or
the task's verifier from data.make_verifier; partial credit is not accuracy). Then, per prompt,
  avg@k   mean correctness of the k samples (often reported as "pass@1")
  maj@k   correctness of the majority answer, the label SRT trains on (same notion of correct)
  pass@k  some sample correct; `pass_curve` adds pass@j for j = 1, 2, 4, .. < k, from the unbiased estimator
          1 - C(k-c, j) / C(k, j) of Chen et al. 2021 (so pass@1 = avg@k)
  parse   fraction of samples with a boxed answer
each averaged over prompts. A prompt without a gold answer counts as wrong.
avg@k's 95% interval is the normal approximation over prompts, mean +- 1.96 * sd(per-prompt avg) / sqrt(n),
clipped to [0, 1]: the spread of the per-prompt means holds both the choice of prompts and the sampling noise
of the k samples, and with n >= 100 prompts the mean is close to normal (no bootstrap needed). n = 1 gives [0, 1].

Comparing two policies (before / after training) on the same prompts with the same sampling key, `paired_gain`
takes the per-prompt differences of avg@k: their standard error is much smaller than either interval, because
the prompts' difficulty cancels. `early_stopping_step` picks a checkpoint by a small labelled validation split.
"""
import hostmem

if __name__ == '__main__':
  hostmem.keep_freed_memory()   # first: on the CPU, XLA's freed scratch stays for its next call (hostmem.py)

import json
import math
import os
import time
from typing import Sequence

import jax
import numpy as np
from absl import app, flags

import data
import hf
import sample
import sharding
import vote


# ------------------------------------------------------------------------------------------------------- metrics
def avg_at_k(correct: Sequence[float]) -> float:
  """Mean correctness of the k samples; 0.0 for an empty group."""
  return float(np.mean(correct)) if len(correct) else 0.0


def maj_at_k(answers: Sequence[str | None], gold: str | None, verifier: vote.Verifier | None = None) -> float:
  """1.0 when the majority answer is correct (full credit, as in `vote.correct`), else 0.0; nobody voted: 0.0.
  The vote groups answers by the same notion of equality as training's: the task's verifier when there is one."""
  label, _ = vote.majority_vote(answers, verifier)
  return float(vote.correct([label], gold, verifier)[0])


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k),
  as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f'pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}')
  if n - c < k:
    return 1.0  # every k-subset contains a correct sample
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def paired_gain(before: np.ndarray, after: np.ndarray) -> dict:
  """Mean of after - before over the same prompts (per-prompt avg@k), and its paired standard error
  sd(differences) / sqrt(n) (None for one prompt): whether a change is more than sampling noise."""
  before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if before.ndim != 1 or before.shape != after.shape or not before.size:
    raise ValueError(f'paired_gain needs two equally long, non-empty lists of per-prompt scores, got shapes '
                     f'{before.shape} and {after.shape}')
  diff = after - before
  return {'mean': float(diff.mean()),
          'paired_se': float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else None}


def early_stopping_step(val: list[tuple[int, float]]) -> int:
  """Early stopping on a small labelled split: of (step, validation score) pairs, the step whose score is best,
  the start (step 0) and the end included; ties go to the earliest step."""
  if not val:
    raise ValueError('early_stopping_step: no (step, score) pairs')
  return max(val, key=lambda sv: (sv[1], -sv[0]))[0]


# ------------------------------------------------------------------------------------------------------ evaluate
BATCH_PROMPTS = 64   # prompts per sampler call by default: train.py's held-out evaluation, eval.py's --batch_prompts


def chunk_size(num_prompts: int, batch_prompts: int, num_samples: int, mesh=None) -> int:
  """Prompts per sampler call: at most batch_prompts (rounded down) and no more than num_prompts need (rounded up),
  rounded to a multiple that the sampler splits over the mesh as training does: the prompts over its data axis, the
  prompts x num_samples rows over the batch axes (data x fsdp). Without a mesh, min(batch_prompts, num_prompts)."""
  size = min(batch_prompts, num_prompts)
  if mesh is None:
    return size
  rows = math.prod(mesh.shape[a] for a in sharding.RULES['batch'])
  step = math.lcm(mesh.shape['data'], rows // math.gcd(rows, num_samples))
  return min(-(-num_prompts // step) * step, max(step, batch_prompts // step * step))


def score_prompt(example: data.Example, completions: list[str], verifier=None) -> dict:
  """One prompt's record: its completions, their answers and correctness, the majority label and whether it is right."""
  extracted = [vote.extract_answer(t) for t in completions]
  return {'question': example.question, 'answer': example.answer, 'completions': list(completions),
          'extracted': extracted, 'correct': vote.correct(extracted, example.answer, verifier).tolist(),
          'label': vote.majority_vote(extracted, verifier)[0],
          'label_correct': maj_at_k(extracted, example.answer, verifier)}


def summarize(records: list[dict]) -> dict:
  """The dataset's metrics from per-prompt records (every record holds the same number k of samples)."""
  k = len(records[0]['correct'])
  avg = np.array([avg_at_k(r['correct']) for r in records])            # (n,) per-prompt avg@k
  num_correct = [int(round(sum(r['correct']))) for r in records]
  js = sorted({2 ** i for i in range(int(math.log2(k)) + 1)} | {k})
  pass_curve = {str(j): float(np.mean([pass_at_k(k, c, j) for c in num_correct])) for j in js}
  n, mean = len(records), float(avg.mean())
  half = 1.96 * avg.std(ddof=1) / math.sqrt(n) if n > 1 else math.inf
  return {'k': k, 'avg@k': mean, 'maj@k': float(np.mean([r['label_correct'] for r in records])),
          'pass@k': pass_curve[str(k)], 'parse_rate': float(np.mean([vote.parse_rate(r['extracted'])
                                                                     for r in records])),
          'avg@k_ci95': [max(0.0, mean - half), min(1.0, mean + half)], 'num_prompts': n,
          'pass_curve': pass_curve, 'per_prompt': avg.tolist(), 'records': records}


def evaluate(params, cfg, text: hf.Text, examples: list[data.Example], *, num_samples: int, max_new_tokens: int,
             temperature: float, key, top_p: float = 1.0, verifier=None, batch_prompts: int = BATCH_PROMPTS,
             mesh=None) -> dict:
  """Samples num_samples completions per example and returns `summarize`'s dict (records and per-prompt avg@k
  included). `text` (hf.Text) encodes the prompts, with the chat template if it was loaded with one.

  Prompts go to the sampler in chunks of a fixed size, `chunk_size` (the last one padded with repeats of its last
  prompt, whose samples are dropped), so the sampler compiles once per prompt-length bucket. Chunk c samples with
  key fold_in(key, c). With a mesh, the rows of a chunk are split over the data x fsdp devices as in training (on
  an FSDP mesh each device holds its own rows and their KV cache, not every row); the parameters are used as
  they are placed.
  """
  if not examples:
    raise ValueError('evaluate: no examples')
  if num_samples < 1 or batch_prompts < 1:
    raise ValueError(f'evaluate: num_samples={num_samples} and batch_prompts={batch_prompts} must be >= 1')
  if any(ex.answer is None for ex in examples):
    print(f'eval: {sum(ex.answer is None for ex in examples)} of {len(examples)} prompts have no gold answer '
          'and count as wrong', flush=True)
  n = len(examples)
  size = chunk_size(n, batch_prompts, num_samples, mesh)
  records = []
  for c, lo in enumerate(range(0, n, size)):
    part = examples[lo:lo + size]
    prompts = [ex.prompt for ex in part] + [part[-1].prompt] * (size - len(part))
    start = time.time()
    texts = sample.generate(params, cfg, text, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, key=jax.random.fold_in(key, c), mesh=mesh,
                            batch_axes=sharding.RULES['batch'])
    records += [score_prompt(ex, group, verifier) for ex, group in zip(part, texts)]
    seconds = time.time() - start
    if jax.process_index() == 0:   # every process samples (one SPMD program), one reports
      print(f'eval {lo + len(part)}/{n} prompts: {len(part) / seconds:.1f} prompts/s '
            f'({len(part) * num_samples / seconds:.0f} samples/s{", with compiling" if c == 0 else ""})', flush=True)
  return summarize(records)


def per_prompt(result: dict) -> dict[str, np.ndarray]:
  """Per-prompt avg@k, maj@k and pass@k (n,) of an `evaluate` result: the numbers whose differences between two
  evaluations on the same prompts give `paired_gain`."""
  return {'avg@k': np.asarray(result['per_prompt']),
          'maj@k': np.array([r['label_correct'] for r in result['records']]),
          'pass@k': np.array([float(max(r['correct'])) for r in result['records']])}


def format_table(result: dict) -> str:
  k, (lo, hi) = result['k'], result['avg@k_ci95']
  rows = [(f'avg@{k}', f'{result["avg@k"]:.3f}  (95% CI {lo:.3f} - {hi:.3f})'), (f'maj@{k}', f'{result["maj@k"]:.3f}'),
          (f'pass@{k}', f'{result["pass@k"]:.3f}'), ('parse rate', f'{result["parse_rate"]:.3f}'),
          ('prompts', str(result['num_prompts']))]
  return '\n'.join(f'{name:<12}{value}' for name, value in rows)


# ----------------------------------------------------------------------------------------------------------- CLI

# Defined when run as a script only: train.py imports this file and has flags of the same names.
def define_flags():
  flags.DEFINE_string('model', None, 'Hugging Face directory (config.json, model.safetensors, tokenizer files), '
                      'a training workdir holding one at <workdir>/hf, or a Hugging Face hub id ORG/NAME')
  flags.DEFINE_string('data', None, 'rg:NAME[:key=value,...], a .jsonl / .json / .parquet file, or hf:ORG/NAME/FILE '
                      'in a hub dataset (see data.py)')
  flags.DEFINE_integer('eval_prompts', 256, 'evaluate the first N examples; 0: all records of a file (the task\'s '
                       'default size for rg:)')
  flags.DEFINE_integer('eval_samples', 8, 'samples per prompt (the k of avg@k, maj@k, pass@k)')
  flags.DEFINE_integer('seed', 1, 'seed of generated (rg:) prompts and of sampling; training draws its prompts with '
                       'another seed, so the default is held out')
  flags.DEFINE_integer('max_new_tokens', 64, 'longest completion; 64 suits the tiny chain_sum policy, the paper '
                       'uses 3072 for Qwen2.5-Math')
  flags.DEFINE_float('temperature', 1.0, 'sampling temperature; 0 is greedy')
  flags.DEFINE_float('top_p', 1.0, 'nucleus sampling mass, in (0, 1]')
  flags.DEFINE_integer('batch_prompts', BATCH_PROMPTS, 'prompts per sampler call (rounded to divide over --mesh as '
                       'training batches do; see chunk_size)')
  flags.DEFINE_string('mesh', '', 'device mesh data,fsdp,tensor (one size may be -1); empty: every device, the '
                      'weights split over them (FSDP)')
  flags.DEFINE_bool('distributed', False, 'multi-process (multi-host): call jax.distributed.initialize() first, as '
                    'train.py --distributed; process 0 prints and writes --out')
  flags.DEFINE_bool('chat_template', False, 'wrap each prompt in the tokenizer\'s chat template (instruct models)')
  flags.DEFINE_string('out', 'results.json', 'where to write the metrics as JSON; empty: do not write')
  flags.DEFINE_bool('records', False, 'also write every prompt\'s completions, answers and correctness to --out')


FLAGS = flags.FLAGS


def model_dir(spec: str) -> str:
  """The Hugging Face directory behind --model: a local directory or hub id (hf.resolve_model), or its <dir>/hf."""
  try:
    path = hf.resolve_model(spec)
  except ValueError as e:
    raise app.UsageError(f'--model={spec}: {e}') from None
  for d in (path, os.path.join(path, 'hf')):
    if os.path.isfile(os.path.join(d, 'config.json')):
      return d
  raise app.UsageError(f'--model={spec}: no config.json in {path} or in {os.path.join(path, "hf")} (expected a '
                       'Hugging Face directory, a training workdir or a hub id)')


def check_flags():
  for ok, message in [
      (FLAGS.eval_samples >= 1, f'--eval_samples={FLAGS.eval_samples} must be >= 1'),
      (FLAGS.eval_prompts >= 0, f'--eval_prompts={FLAGS.eval_prompts} must be >= 0 (0: all)'),
      (FLAGS.max_new_tokens >= 1, f'--max_new_tokens={FLAGS.max_new_tokens} must be >= 1'),
      (FLAGS.temperature >= 0, f'--temperature={FLAGS.temperature} must be >= 0'),
      (0 < FLAGS.top_p <= 1, f'--top_p={FLAGS.top_p} must be in (0, 1]'),
      (FLAGS.batch_prompts >= 1, f'--batch_prompts={FLAGS.batch_prompts} must be >= 1')]:
    if not ok:
      raise app.UsageError(message)


def device_mesh() -> tuple[int, int, int]:
  """--mesh's sizes (every device by default); the sampler splits each call's rows over data x fsdp."""
  try:
    return sharding.parse_mesh(FLAGS.mesh, jax.device_count())
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.distributed:
    sharding.initialize_distributed()   # before any device use
  check_flags()
  mesh_sizes = device_mesh()
  sharding.announce(mesh_sizes)   # the first line: backend, devices, mesh, processes (and an unseen accelerator)
  try:  # the data first: a bad --data should not wait for a model download
    spec = hf.resolve_data(FLAGS.data)   # hf:ORG/NAME/FILE: fetched from the hub first
    examples = data.load_examples(spec, size=FLAGS.eval_prompts or None, seed=FLAGS.seed)
    verifier = data.make_verifier(spec)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(f'--data={FLAGS.data}: {e}') from None
  path = model_dir(FLAGS.model)
  cfg, params = hf.load_checkpoint(path)
  text = hf.Text.load(path, chat_template=FLAGS.chat_template)
  mesh = sharding.make_mesh(mesh_sizes)
  try:   # the weights split over the mesh as in training; a dimension that does not divide names --mesh
    params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
  except ValueError as e:
    raise app.UsageError(f'{e} (the weights of --model={FLAGS.model})') from None
  start = time.time()
  result = evaluate(params, cfg, text, examples, num_samples=FLAGS.eval_samples, max_new_tokens=FLAGS.max_new_tokens,
                    temperature=FLAGS.temperature, top_p=FLAGS.top_p, key=jax.random.key(FLAGS.seed),
                    verifier=verifier, batch_prompts=FLAGS.batch_prompts, mesh=mesh)
  if jax.process_index() != 0:   # every process sampled (one SPMD program) and holds the same result; one reports
    return
  print(f'\n{FLAGS.data} on {path} ({time.time() - start:.0f} s, temperature {FLAGS.temperature})')
  print(format_table(result))
  if FLAGS.out:
    if not FLAGS.records:
      result.pop('records')
    result.update(model=path, data=FLAGS.data, seed=FLAGS.seed, temperature=FLAGS.temperature, top_p=FLAGS.top_p,
                  max_new_tokens=FLAGS.max_new_tokens, chat_template=FLAGS.chat_template)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {FLAGS.out}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['model', 'data'])
  app.run(main)
