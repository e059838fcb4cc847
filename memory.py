"""Will a step fit? Per-device memory of the compiled update step and samplers, checked before the first step.

    phases = check_fits(s, state, text, train_examples, run, held_out=(eval_examples, val_examples),
                        eval_samples=8)   # train.py, on an accelerator: prints the need per device next to the
                                          # capacity; ValueError naming the flags that would fit when it does not
    phase = update_phase(step, abstract(state), batch_abstract(mesh, rows, Tp, N), resident)   # bench/plan.py too

Nothing runs and no weights are copied: the jitted functions are compiled ahead of time for abstract inputs
(`jax.jit(...).lower(jax.ShapeDtypeStruct(shape, dtype, sharding=...)).compile()`) and XLA's buffer assignment of
the per-device program (`compiled.memory_analysis()`) says what one device holds while it runs:

    need = argument + output + temp - alias + resident

(alias: outputs written into donated inputs, the train state; resident: arrays that stay on the devices outside
the function during that phase, e.g. the frozen reference policy during the update, the optimizer state while
sampling). The capacity is the device's `memory_stats()['bytes_limit']` (on a GPU, what JAX's allocator may
take: 75% of the memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise); a phase fits when its need is at
most 90% of it (the compilers' numbers are estimates, and the runtime keeps buffers of its own).

The shapes are the run's largest: rows = --num_prompts x --num_samples (the sampler's: x --vote_samples when
set), prompts padded to the bucket of the longest of the first 256 training prompts, responses of
--max_new_tokens. A step whose batch has those shapes then reuses the compiled program (the jitted function
keeps it), so on most runs the check costs no second compile.
When the update does not fit, the step is compiled again with 2, 4, ... micro-batches (then with --remat) until
one fits or the rows run out, and the error names what fits. The held-out evaluation's sampler is checked too, for
its own shapes: a chunk of eval.chunk_size(--eval_prompts, eval.BATCH_PROMPTS, --eval_samples) prompts x
--eval_samples, prompts padded to the bucket of the longest held-out prompt (the 'before' evaluation runs before
the first step, so a run that cannot evaluate stops here too). The KL reference scorer is not checked: it is the
update's forward pass over the same rows, with the same state on the devices, and needs less.
"""
import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import eval as eval_lib
import sample as sample_lib
import sharding
import update

GiB = 1024 ** 3
HEADROOM = 0.9        # a phase fits when its need is at most this fraction of the device's memory
PROMPTS_MEASURED = 256   # training prompts whose encoded length sets the prompt width


@dataclasses.dataclass(frozen=True)
class Phase:
  argument: int     # bytes per device: inputs of the compiled function
  output: int
  temp: int         # XLA's scratch buffers (activations, logits, gradients, the KV cache inside the sampler)
  alias: int        # outputs written into donated inputs (the train state)
  resident: int     # live outside the function during this phase
  seconds: float    # compile time

  @property
  def need(self) -> int:
    return self.argument + self.output + self.temp - self.alias + self.resident


def abstract(tree, shardings=None):
  """jax.ShapeDtypeStructs for a pytree of arrays (or of shapes and dtypes), placed as `shardings` say (default:
  each array's own sharding)."""
  if shardings is None:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def nbytes_per_device(tree) -> int:
  """Bytes one device holds of a pytree of (abstract) arrays: its own shard of every leaf."""
  total = 0
  for a in jax.tree.leaves(tree):
    total += math.prod(a.sharding.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
  return total


def measure(compiled, resident: int, seconds: float) -> Phase:
  m = compiled.memory_analysis()
  return Phase(m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes, m.alias_size_in_bytes,
               resident, seconds)


UPDATE_KEYS = {'prompt_tokens': jnp.int32, 'prompt_valid': jnp.bool_, 'tokens': jnp.int32, 'mask': jnp.float32,
               'old_logp': jnp.float32, 'ref_logp': jnp.float32, 'advantages': jnp.float32,
               'row_weight': jnp.float32}
SFT_KEYS = ('prompt_tokens', 'prompt_valid', 'tokens', 'mask')   # rollouts.sft_batch's


def batch_abstract(mesh, rows: int, prompt_width: int, response_len: int, keys=tuple(UPDATE_KEYS)) -> dict:
  """The update's batch as abstract arrays, rows over the batch axes (train.py's sharding.global_batch):
  prompt_width columns of (padded) prompt, response_len of response."""
  widths = {'prompt_tokens': prompt_width, 'prompt_valid': prompt_width, 'advantages': None, 'row_weight': None}
  out = {}
  for k in keys:
    w = widths.get(k, response_len)
    shape = (rows,) if w is None else (rows, w)
    out[k] = jax.ShapeDtypeStruct(shape, UPDATE_KEYS[k], sharding=sharding.batch_sharding(mesh, shape))
  return out


def update_phase(step, state, batch, resident: int) -> Phase:
  """The jitted update step (update.make_train_step) compiled for an abstract state and batch."""
  t = time.time()
  compiled = step.lower(state, batch).compile()
  return measure(compiled, resident, time.time() - t)


def sampler_phase(params, cfg, mesh, prompts: int, samples: int, prompt_width: int, response_len: int,
                  resident: int, *, temperature: float = 1.0, top_p: float = 1.0,
                  batch_axes=sharding.RULES['batch']) -> Phase:
  """One sampler call (sample._sample: prefill and decode loop) for `prompts` prompts x `samples` samples, the
  inputs placed as sample.sample places them: the prompts over the data axis, the parameters as given, for
  small models the sampler's copies of the layer weights (sample.sampler_weights) as that call places them."""
  rows = NamedSharding(mesh, PartitionSpec('data'))
  scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype)
  t = time.time()
  weights = None
  if sample_lib.weights_apart(cfg):   # the sampler's copies of the layer weights, inputs of the sampler
    lowered = sample_lib.sampler_weights.lower(params, cfg)
    weights = abstract(lowered.out_info, lowered.compile().output_shardings)
  compiled = sample_lib._sample.lower(
      params, weights, cfg, jax.ShapeDtypeStruct((prompts, prompt_width), jnp.int32, sharding=rows),
      jax.ShapeDtypeStruct((prompts, prompt_width), jnp.bool_, sharding=rows),
      jax.eval_shape(lambda: jax.random.key(0)), scalar(jnp.float32), scalar(jnp.float32),
      jax.ShapeDtypeStruct((cfg.vocab_size,), jnp.bool_), scalar(jnp.int32), num_samples=samples,
      max_new_tokens=response_len, greedy=temperature == 0, nucleus=top_p < 1.0, mesh=mesh,
      batch_axes=tuple(batch_axes)).compile()
  return measure(compiled, resident, time.time() - t)


def device_capacity() -> int | None:
  """Bytes of memory on the smallest of this process's devices (None where the backend does not say: the CPU)."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  limits = [s.get('bytes_limit') for s in stats if s]
  return min(limits) if limits and len(limits) == len(stats) and all(limits) else None


def prompt_width(text, examples, sft: bool = False, measured: int | None = PROMPTS_MEASURED) -> int:
  """The padded prompt length of the run's widest batch: the sampler's bucket (RL) or the supervised batch's
  multiple of 16 (sft) of the longest encoded prompt among the first `measured` examples (None: all of them)."""
  longest = max(len(p) for p in text.encode([ex.prompt for ex in examples[:measured]]))
  return 16 * -(-longest // 16) if sft else sample_lib.bucket(longest)


def train_loss(s):
  """train.loss_fn(s.rl, s.kl_in): the loss train.py's update step takes (the step is rebuilt here with other
  --micro_batches or --remat; train.py defines the flags on import, so it is not imported)."""
  rl = s.rl
  if rl.mode == 'sft':
    return update.sft_loss
  return functools.partial(update.policy_loss, temperature=rl.temperature, clip_eps=rl.clip_eps,
                           kl_coef=rl.kl_coef if s.kl_in == 'loss' else 0.0, entropy_coef=rl.entropy_coef)


def train_step(s, state, micro_batches: int, remat: bool):
  """train.py's update step (train.setup) with `micro_batches` slices and remat on or off."""
  rl = s.rl
  optimizer = update.make_optimizer(rl.learning_rate, rl.max_grad_norm, rl.weight_decay)
  return update.make_train_step(dataclasses.replace(s.sampler.cfg, remat=remat), train_loss(s), optimizer,
                                jax.tree.map(lambda a: a.sharding, state), s.mesh, micro_batches)


def gib(n: int) -> str:
  return f'{n / GiB:.2f} GiB'


def _print(line: str):
  print(line, flush=True)


def check_fits(s, state, text, examples, run, *, held_out=(), eval_samples: int = 0, capacity: int | None = None,
               headroom: float = HEADROOM, log=_print) -> dict:
  """Compiles the update step and the samplers for the run's shapes and checks them against the device memory.

  s: train.Setup; state: the placed train state; text: hf.Text; examples: the training prompts; run: RunConfig.
  held_out: the lists of prompts train.evaluate samples eval_samples completions of (held-out, validation; empty
  ones are skipped). capacity: bytes per device (default: the device's own; tests pass a number). Prints one line
  with the needs and the capacity (process 0), and returns {'update': Phase, 'sampler': Phase (not for
  --mode=sft), 'eval': Phase (when there are held-out prompts)}.
  Raises ValueError naming flags that would fit (--micro_batches=M, --remat, fewer rows or samples, a larger
  --mesh) when a phase needs more than headroom x capacity.
  """
  rl, mesh = s.rl, s.mesh
  sft = rl.mode == 'sft'
  say = log if jax.process_index() == 0 else (lambda line: None)
  capacity = capacity or device_capacity()
  width, N = prompt_width(text, examples, sft), rl.max_new_tokens
  rows = rl.num_prompts * (1 if sft else rl.num_samples)
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  batch = batch_abstract(mesh, rows, width, N, SFT_KEYS if sft else tuple(UPDATE_KEYS))
  state_ = abstract(state)
  # Outside the update, the frozen reference policy stays on the devices (RL); outside the sampler, everything
  # of the state but the parameters it samples with (optimizer moments, an EMA teacher) and the reference.
  ref = nbytes_per_device(abstract(s.ref_params)) if s.ref_params is not None else 0
  rest = nbytes_per_device({k: v for k, v in state_.items() if k != 'params'}) + ref
  phases = {'update': update_phase(s.train_step, state_, batch, ref)}
  if not sft:
    phases['sampler'] = sampler_phase(state_['params'], s.sampler.cfg, mesh, rl.num_prompts,
                                      s.sampler.kw['num_samples'], width, N, rest,
                                      temperature=s.sampler.kw['temperature'], top_p=s.sampler.kw['top_p'])
  held_out = [ex for ex in held_out if ex]
  if held_out and eval_samples:   # train.evaluate's calls: the same residents, its own chunk and temperature
    chunk = max(eval_lib.chunk_size(len(ex), eval_lib.BATCH_PROMPTS, eval_samples, mesh) for ex in held_out)
    eval_width = prompt_width(text, [e for ex in held_out for e in ex], measured=None)   # every one is sampled
    phases['eval'] = sampler_phase(state_['params'], s.sampler.cfg, mesh, chunk, eval_samples, eval_width, N, rest,
                                   temperature=rl.temperature)
  kind = jax.local_devices()[0].device_kind
  needs = ', '.join(f'{k} {gib(p.need)}' for k, p in phases.items())
  if capacity is None:
    say(f'memory per device (XLA\'s estimate): {needs}; the {kind} does not report its capacity')
    return phases
  limit = headroom * capacity
  say(f'memory per device (XLA\'s estimate): {needs} of {gib(capacity)} ({kind}; fits under {headroom:.0%}: '
      f'{gib(limit)}); update: {rows} rows x {width} + {N} tokens in {run.micro_batches} micro-batch'
      f'{"es" if run.micro_batches > 1 else ""}' + (f'; eval: {chunk} prompts x {eval_samples} samples per call'
                                                    if 'eval' in phases else ''))
  problems = []
  if phases['update'].need > limit:
    problems.append(_update_advice(s, state_, batch, ref, run, rows, shards, phases['update'], limit, say))
  if 'sampler' in phases and phases['sampler'].need > limit:
    problems.append(f'the sampler needs {gib(phases["sampler"].need)} per device for {rl.num_prompts} prompts x '
                    f'{s.sampler.kw["num_samples"]} samples of up to {N} tokens (the KV cache grows with both): use '
                    'fewer --num_prompts or --num_samples, a shorter --max_new_tokens, or more devices (--mesh)')
  if 'eval' in phases and phases['eval'].need > limit:
    problems.append(f'the held-out evaluation needs {gib(phases["eval"].need)} per device for {chunk} prompts x '
                    f'{eval_samples} samples of up to {N} tokens per sampler call: use fewer --eval_samples, fewer '
                    f'--eval_prompts and --val_prompts (up to {eval_lib.BATCH_PROMPTS} go in one call; 0: none), a '
                    'shorter --max_new_tokens, or more devices (--mesh)')
  if problems:
    raise ValueError(f'out of memory before the first step: {"; and ".join(problems)}. Capacity {gib(capacity)} '
                     f'per {kind}, {headroom:.0%} usable: {gib(limit)}')
  return phases


def _update_advice(s, state, batch, ref, run, rows, shards, phase, limit, say) -> str:
  """Compiles the step with 2, 4, ... times --micro_batches (as long as each slice still divides over the data x
  fsdp devices, as train.validate requires), then with --remat as well, and says the first setting that fits."""
  head = (f'the update step needs {gib(phase.need)} per device ({rows} rows in {run.micro_batches} '
          f'micro-batch{"es" if run.micro_batches > 1 else ""}{", with --remat" if run.remat else ""})')
  counts = [run.micro_batches]
  while rows % (2 * counts[-1] * shards) == 0:
    counts.append(2 * counts[-1])
  tries = [(m, run.remat) for m in counts[1:]] + ([] if run.remat else [(m, True) for m in counts])
  for m, remat in tries:
    flags = ' '.join(([] if remat == run.remat else ['--remat']) + ([] if m == run.micro_batches
                                                                     else [f'--micro_batches={m}']))
    say(f'memory: the update does not fit; compiling it with {flags} ...')
    p = update_phase(train_step(s, state, m, remat), state, batch, ref)
    if p.need <= limit:
      return f'{head}: {flags} fits ({gib(p.need)}); or use more devices (--mesh)'
  return (f'{head}, and no --micro_batches that divides the rows fits, with or without --remat: use fewer '
          '--num_prompts or --num_samples, a shorter --max_new_tokens, or more devices (--mesh)')
