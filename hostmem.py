"""Host memory for XLA on the CPU: glibc keeps what XLA frees, so that the next call reuses it.

    import hostmem
    hostmem.keep_freed_memory()   # first thing in a script (train.py, eval.py), before numpy and JAX are imported

XLA on the CPU takes a program's scratch from malloc on every call: 1.3 GB for the update step of
bench/train_bench.py (activations, logits, gradients). glibc serves blocks that big with mmap and gives them back
to the kernel when they are freed, so every call page-faults its scratch in afresh, zeroed: 330,000 faults of
4 KiB and about 0.6 s of a 5 s step on 2 cores. With mmap off, no trimming of the heap and one arena, the freed
scratch stays in the heap and the next call reuses it. Only the allocator changes: every number computed is the
same, bit for bit. The cost: the process keeps its largest heap until it exits (below 2 GiB of free memory at the
top of the heap, none goes back), which the next step would take again anyway.

It must run before any thread allocates: glibc fixes its number of arenas when a second thread first needs one
(numpy's BLAS threads start at import), and a thread keeps the arena it has. Called later, it keeps only part of
the scratch.

Skipped where glibc is not the C library, and where JAX will run on an accelerator: JAX_PLATFORMS names one first,
or is unset and a JAX plugin (CUDA, ROCm) or libtpu is installed. There the device holds the arrays, and the host's
heap is left to give memory back.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8   # glibc's mallopt parameters (malloc.h)
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1), (M_ARENA_MAX, 1))


def accelerator_expected(platforms: str | None = None) -> bool:
  """Will JAX pick an accelerator? From JAX_PLATFORMS (or `platforms`), else from what is installed."""
  first = (os.environ.get('JAX_PLATFORMS', '') if platforms is None else platforms).split(',')[0].strip()
  if first:
    return first != 'cpu'
  return bool(importlib.metadata.entry_points(group='jax_plugins')) or importlib.util.find_spec('libtpu') is not None


def keep_freed_memory(platforms: str | None = None) -> bool:
  """mallopt: no mmap, no trim, one arena; on glibc, for the CPU backend only. True when it was set."""
  if accelerator_expected(platforms) or platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
