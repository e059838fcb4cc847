"""Evaluate a policy with k samples per prompt: avg@k, maj@k, pass@k and parse rate (SRT.md, "Metrics").

    python eval.py --model=workdir/run1 --data=rg:chain_sum:min_terms=2,max_terms=4,max_digits=2 --k=8
    python eval.py --model=/ckpt/Qwen2.5-Math-7B --data=data/math500.jsonl --num_prompts=0 --k=32 \\
        --max_new_tokens=3072 --chat_template --out=math500.json

--model is a Hugging Face directory (config.json, model.safetensors, tokenizer files) or a training workdir
holding one at <workdir>/hf (train.py exports there). train.py calls `evaluate` for its held-out numbers.

For each prompt: k completions (`sample.generate`), each one's answer = its last \\boxed{} (`vote.extract_answer`),
and a sample is correct when it earns full credit against the gold answer (`vote.gt_rewards`: vote.equivalent,
or the task's verifier from data.make_verifier; partial credit is not accuracy). Then, per prompt,
  avg@k   mean correctness of the k samples (the paper's "pass@1")
  maj@k   correctness of the majority answer (`vote.maj_at_k`: the SRT pseudo-label)
  pass@k  some sample correct; `pass_curve` adds pass@j for j = 1, 2, 4, .. < k, from the unbiased estimator
          1 - C(k-c, j) / C(k, j) of Chen et al. 2021 (so pass@1 = avg@k)
  parse   fraction of samples with a boxed answer
each averaged over prompts. A prompt without a gold answer counts as wrong.
avg@k's 95% interval is the normal approximation over prompts, mean +- 1.96 * sd(per-prompt avg) / sqrt(n),
clipped to [0, 1]: the spread of the per-prompt means holds both the choice of prompts and the sampling noise
of the k samples, and with n >= 100 prompts the mean is close to normal (no bootstrap needed). n = 1 gives [0, 1].
"""
import json
import math
import os
import time

import jax
import numpy as np
from absl import app, flags

import data
import model
import sample
import vote


def score_prompt(example: data.Example, completions: list[str], verifier=None) -> dict:
  """One prompt's record: its completions, their answers and correctness, the majority label and whether it is right."""
  extracted = [vote.extract_answer(t) for t in completions]
  correct = (vote.gt_rewards(extracted, example.answer, verifier) >= 1.0).astype(float)
  return {'question': example.question, 'answer': example.answer, 'completions': list(completions),
          'extracted': extracted, 'correct': correct.tolist(), 'label': vote.majority_vote(extracted)[0],
          'label_correct': float(vote.maj_at_k(extracted, example.answer, verifier) >= 1.0)}


def summarize(records: list[dict]) -> dict:
  """The dataset's metrics from per-prompt records (every record holds the same number k of samples)."""
  k = len(records[0]['correct'])
  avg = np.array([vote.avg_at_k(r['correct']) for r in records])            # (n,) per-prompt avg@k
  num_correct = [int(round(sum(r['correct']))) for r in records]
  js = sorted({2 ** i for i in range(int(math.log2(k)) + 1)} | {k})
  pass_curve = {str(j): float(np.mean([vote.pass_at_k(k, c, j) for c in num_correct])) for j in js}
  n, mean = len(records), float(avg.mean())
  half = 1.96 * avg.std(ddof=1) / math.sqrt(n) if n > 1 else math.inf
  return {'k': k, 'avg@k': mean, 'maj@k': float(np.mean([r['label_correct'] for r in records])),
          'pass@k': pass_curve[str(k)], 'parse_rate': float(np.mean([vote.parse_rate(r['extracted'])
                                                                     for r in records])),
          'avg@k_ci95': [max(0.0, mean - half), min(1.0, mean + half)], 'num_prompts': n,
          'pass_curve': pass_curve, 'records': records}


def evaluate(params, cfg, tokenizer, examples: list[data.Example], *, num_samples: int, max_new_tokens: int,
             temperature: float, key, top_p: float = 1.0, verifier=None, batch_prompts: int = 64,
             chat_template: bool = False, mesh=None) -> dict:
  """Samples num_samples completions per example and returns `summarize`'s dict (records included).

  Prompts go to the sampler in chunks of a fixed size (the last one padded with repeats of its last prompt),
  so the sampler compiles once per prompt-length bucket. Chunk c samples with key fold_in(key, c).
  The chunk is min(batch_prompts, len(examples)); with a mesh it is batch_prompts, which must divide over it.
  """
  if not examples:
    raise ValueError('evaluate: no examples')
  if num_samples < 1 or batch_prompts < 1:
    raise ValueError(f'evaluate: num_samples={num_samples} and batch_prompts={batch_prompts} must be >= 1')
  if any(ex.answer is None for ex in examples):
    print(f'eval: {sum(ex.answer is None for ex in examples)} of {len(examples)} prompts have no gold answer '
          'and count as wrong', flush=True)
  n = len(examples)
  size = batch_prompts if mesh is not None else min(batch_prompts, n)
  records = []
  for c, lo in enumerate(range(0, n, size)):
    part = examples[lo:lo + size]
    prompts = [ex.prompt for ex in part] + [part[-1].prompt] * (size - len(part))
    start = time.time()
    texts = sample.generate(params, cfg, tokenizer, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, key=jax.random.fold_in(key, c),
                            chat_template=chat_template, mesh=mesh)
    records += [score_prompt(ex, group, verifier) for ex, group in zip(part, texts)]
    seconds = time.time() - start
    print(f'eval {lo + len(part)}/{n} prompts: {len(part) / seconds:.1f} prompts/s '
          f'({len(part) * num_samples / seconds:.0f} samples/s{", with compiling" if c == 0 else ""})', flush=True)
  return summarize(records)


def format_table(result: dict) -> str:
  k, (lo, hi) = result['k'], result['avg@k_ci95']
  rows = [(f'avg@{k}', f'{result["avg@k"]:.3f}  (95% CI {lo:.3f} - {hi:.3f})'), (f'maj@{k}', f'{result["maj@k"]:.3f}'),
          (f'pass@{k}', f'{result["pass@k"]:.3f}'), ('parse rate', f'{result["parse_rate"]:.3f}'),
          ('prompts', str(result['num_prompts']))]
  return '\n'.join(f'{name:<12}{value}' for name, value in rows)


# ----------------------------------------------------------------------------------------------------------- CLI

# Defined when run as a script only: train.py imports this file and has flags of the same names.
def define_flags():
  flags.DEFINE_string('model', None, 'Hugging Face directory (config.json, model.safetensors, tokenizer files), or '
                      'a training workdir holding one at <workdir>/hf')
  flags.DEFINE_string('data', None, 'rg:NAME[:key=value,...] or a .jsonl / .json / .parquet file (see data.py)')
  flags.DEFINE_integer('num_prompts', 256, 'evaluate the first N examples; 0: all records of a file (the task\'s '
                       'default size for rg:)')
  flags.DEFINE_integer('seed', 1, 'seed of generated (rg:) prompts and of sampling; training draws its prompts with '
                       'another seed, so the default is held out')
  flags.DEFINE_integer('k', 8, 'samples per prompt (the k of avg@k, maj@k, pass@k)')
  flags.DEFINE_integer('max_new_tokens', 64, 'longest completion; 64 suits the tiny chain_sum policy, the paper '
                       'uses 3072 for Qwen2.5-Math')
  flags.DEFINE_float('temperature', 1.0, 'sampling temperature; 0 is greedy')
  flags.DEFINE_float('top_p', 1.0, 'nucleus sampling mass, in (0, 1]')
  flags.DEFINE_integer('batch_prompts', 64, 'prompts per sampler call')
  flags.DEFINE_bool('chat_template', False, 'wrap each prompt in the tokenizer\'s chat template (instruct models)')
  flags.DEFINE_string('out', 'results.json', 'where to write the metrics as JSON; empty: do not write')
  flags.DEFINE_bool('records', False, 'also write every prompt\'s completions, answers and correctness to --out')


FLAGS = flags.FLAGS


def model_dir(path: str) -> str:
  """The Hugging Face directory behind --model: the path itself or <path>/hf."""
  for d in (path, os.path.join(path, 'hf')):
    if os.path.isfile(os.path.join(d, 'config.json')):
      return d
  raise app.UsageError(f'--model={path}: no config.json in it or in {os.path.join(path, "hf")} (expected a '
                       'Hugging Face directory or a training workdir)')


def check_flags():
  for ok, message in [
      (FLAGS.k >= 1, f'--k={FLAGS.k} must be >= 1'),
      (FLAGS.max_new_tokens >= 1, f'--max_new_tokens={FLAGS.max_new_tokens} must be >= 1'),
      (FLAGS.temperature >= 0, f'--temperature={FLAGS.temperature} must be >= 0'),
      (0 < FLAGS.top_p <= 1, f'--top_p={FLAGS.top_p} must be in (0, 1]'),
      (FLAGS.batch_prompts >= 1, f'--batch_prompts={FLAGS.batch_prompts} must be >= 1'),
      (FLAGS.num_prompts >= 0, f'--num_prompts={FLAGS.num_prompts} must be >= 0 (0: all)')]:
    if not ok:
      raise app.UsageError(message)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  check_flags()
  path = model_dir(FLAGS.model)
  try:
    examples = data.load_examples(FLAGS.data, size=FLAGS.num_prompts or None, seed=FLAGS.seed)
    verifier = data.make_verifier(FLAGS.data)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(f'--data={FLAGS.data}: {e}') from None
  cfg, params = model.load_hf_checkpoint(path)
  tokenizer = model.load_tokenizer(path)
  start = time.time()
  result = evaluate(params, cfg, tokenizer, examples, num_samples=FLAGS.k, max_new_tokens=FLAGS.max_new_tokens,
                    temperature=FLAGS.temperature, top_p=FLAGS.top_p, key=jax.random.key(FLAGS.seed),
                    verifier=verifier, batch_prompts=FLAGS.batch_prompts, chat_template=FLAGS.chat_template)
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
