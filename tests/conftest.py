"""Eight fake CPU devices for every test, so sharded code runs on a real (simulated) mesh; unsharded arrays live on
device 0 as usual. This must run before JAX initialises its backend.

One persistent compilation cache for the whole session, shared with the scripts the tests run in subprocesses:
the end-to-end runs compile the same sampler and update step again and again (each process from scratch), and
the cache halves their CPU time. It is a fresh directory per session, removed at the end (made by the first
process to load this file: with pytest-xdist, the controller, whose environment the workers inherit)."""
import atexit
import os
import shutil
import sys
import tempfile

import jax
import pytest

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='srt-tests-jax-cache-')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
jax.config.update('jax_num_cpu_devices', 8)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def offline(tmp_path, monkeypatch):
  """HF_HUB_OFFLINE=1 and an empty cache in tmp_path: a hub id cannot be fetched, nothing goes out. huggingface_hub
  reads its constants at import, so the cache is set there too; its offline constant is left False, so that the
  code under test must read the environment itself (hf._offline). -> the cache directory."""
  import huggingface_hub.constants
  cache = tmp_path / 'hf_home' / 'hub'
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
  return cache


@pytest.hookimpl(tryfirst=True)   # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
  """For `pytest -n 2` (pytest-xdist, --dist loadgroup): the tests that share a module-scoped fixture (a training
  run, a compiled step) go to one worker, so the fixture runs once; and the slow end-to-end tests go first, so the
  longest ones do not start last while the other worker idles."""
  for item in items:
    shared = sorted(name for name, defs in item._fixtureinfo.name2fixturedefs.items() if defs[-1].scope == 'module')
    if shared:
      item.add_marker(pytest.mark.xdist_group(f'{item.module.__name__}:{",".join(shared)}'))
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
