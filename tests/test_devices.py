"""Devices: the scripts use every device by default and say so, warn about an accelerator JAX does not see, and
check before the first step that the update and the sampler fit in the device memory; on the CPU, the scripts first
have glibc keep the host memory XLA frees (hostmem.py).

The end-to-end runs (slow) start train.py and eval.py on 2, 3, 4 and 8 fake CPU devices (XLA_FLAGS
--xla_force_host_platform_device_count; 1 device is every other test's, 2 per process test_scale.py's two-process
run); the rest runs in this process on conftest.py's eight.
"""
import dataclasses
import os
import re
import stat
import subprocess
import sys

import pytest

import data
import hostmem
import memory
import sharding
import train
import update
import workdir as wd_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_devices_env(n):
  flags = os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={n}'
  return dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu', XLA_FLAGS=flags.strip())


# ---------------------------------------------------------------------------------------------------------------
# The scripts on 2, 4 and 8 devices, with no flags but a short run

RUNS = {   # name -> (fake CPU devices, script and its flags; --workdir / --out are added)
    'train on 2': (2, ['train.py', '--mode=self', '--steps=1', '--eval_prompts=8']),
    'train on 4': (4, ['train.py', '--mode=self', '--steps=1', '--eval_prompts=16']),
    'train on 8': (8, ['train.py', '--mode=self', '--steps=2', '--eval_prompts=16']),
    'eval on 8': (8, ['eval.py', f'--model={train.EMBEDDED_WARMSTART}', f'--data={train.EMBEDDED_DATA}',
                      '--eval_prompts=8', '--eval_samples=4', '--max_new_tokens=48']),
}


@pytest.fixture(scope='module')
def runs(request, tmp_path_factory):
  """The selected RUNS, started together: each is mostly one compiling thread, so side by side they keep two
  cores busy and take about half the time of one after the other. -> {name: (return code, stdout, stderr, dir)}"""
  wanted = [n for n in RUNS if any(getattr(item, 'callspec', None) and item.callspec.params.get('name') == n
                                   for item in request.session.items)]
  started = {}
  try:
    for name in wanted:
      devices, (script, *args) = RUNS[name]
      where = tmp_path_factory.mktemp(name.replace(' ', '_'))
      args += [f'--workdir={where}'] if script == 'train.py' else [f'--out={where / "results.json"}']
      with open(where / 'stdout', 'w') as out, open(where / 'stderr', 'w') as err:   # a full pipe would block
        started[name] = (subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], stdout=out,
                                          stderr=err, env=fake_devices_env(devices), cwd=ROOT), where)
    for proc, _ in started.values():
      proc.wait(timeout=1200)
  finally:
    for proc, _ in started.values():
      proc.kill()   # only those still running: after a timeout, or when one failed to start
  done = {}
  for name, (proc, where) in started.items():
    done[name] = (proc.returncode, (where / 'stdout').read_text(), (where / 'stderr').read_text(), where)
  return done


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in RUNS if n.startswith('train')])
def test_train_uses_every_device_and_says_so(runs, name):
  devices = RUNS[name][0]
  code, out, err, where = runs[name]
  assert code == 0, out[-3000:] + err[-3000:]
  lines = out.splitlines()
  assert lines[0] == f'devices: {devices} x cpu, mesh data=1 fsdp={devices} tensor=1, 1 process', out[:500]
  assert 'held-out, k=8' in out and 'wrote metrics.jsonl' in out, out[-2000:]
  steps = next(int(a.split('=')[1]) for a in RUNS[name][1] if a.startswith('--steps='))
  assert [r['step'] for r in wd_lib.read_jsonl(os.path.join(where, 'metrics.jsonl'))] == list(range(1, steps + 1))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['eval on 8'])
def test_eval_uses_every_device_and_says_so(runs, name):
  code, out, err, where = runs[name]
  assert code == 0, out[-3000:] + err[-3000:]
  assert out.splitlines()[0] == 'devices: 8 x cpu, mesh data=1 fsdp=8 tensor=1, 1 process', out[:500]
  assert 'avg@4' in out and (where / 'results.json').exists()


@pytest.mark.slow
def test_sizes_that_do_not_divide_name_the_flag_to_change():
  """Three devices: the default 16 prompts x 8 samples do not split three ways (train.py, before anything is
  loaded), and neither does the policy's model dimension (eval.py, when it places the weights)."""
  p = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--mode=self', '--workdir=unused'],
                     capture_output=True, text=True, env=fake_devices_env(3), cwd=ROOT, timeout=300)
  assert p.returncode != 0 and ('--num_prompts x --num_samples = 128 rows do not divide over the 1x3 data x fsdp '
                                'devices of the mesh; change --num_prompts or --mesh') in p.stderr, p.stderr[-2000:]
  p = subprocess.run([sys.executable, os.path.join(ROOT, 'eval.py'), f'--model={train.EMBEDDED_WARMSTART}',
                      f'--data={train.EMBEDDED_DATA}', '--eval_prompts=4', '--out='],
                     capture_output=True, text=True, env=fake_devices_env(3), cwd=ROOT, timeout=300)
  assert p.returncode != 0 and 'does not divide over mesh axes fsdp (3 devices); change --mesh' in p.stderr, \
      p.stderr[-2000:]
  assert p.stdout.startswith('devices: 3 x cpu, mesh data=1 fsdp=3 tensor=1, 1 process'), p.stdout


def test_parse_mesh_reads_every_form_and_names_what_is_wrong():
  assert sharding.parse_mesh('', 8) == sharding.parse_mesh('auto', 8) == (1, 8, 1)   # FSDP over every device
  assert sharding.parse_mesh('2,4,1', 8) == (2, 4, 1)
  assert sharding.parse_mesh('2,-1,2', 8) == (2, 2, 2)   # -1: the rest of the devices
  assert sharding.parse_mesh('-1', 8) == (8, 1, 1) and sharding.parse_mesh('2,4', 8) == (2, 4, 1)   # missing: 1
  assert sharding.parse_mesh('1,1,1', 1) == (1, 1, 1)
  for text, message in [('2x4', 'expected three integers data,fsdp,tensor'),
                        ('1,2,2,2', 'expected three positive sizes'), ('-1,-1,2', 'expected three positive sizes'),
                        ('0,8,1', 'expected three positive sizes'), ('-2,4,1', 'expected three positive sizes'),
                        ('3,-1,1', '8 devices do not divide by 3'),
                        ('2,2,1', "--mesh='2,2,1' has 4 devices, this process sees 8")]:
    with pytest.raises(ValueError, match=re.escape(message)):
      sharding.parse_mesh(text, 8)
  with pytest.raises(train.FlagError, match='has 16 devices'):   # train.py names it as a flag error
    train.validate(train.RLConfig(), train.DataConfig(), train.RunConfig(mesh='2,8,1'), 8)


# ---------------------------------------------------------------------------------------------------------------
# The banner and the unseen accelerator


def test_banner_names_the_devices_the_mesh_and_the_processes():
  assert sharding.banner((1, 8, 1)) == 'devices: 8 x cpu, mesh data=1 fsdp=8 tensor=1, 1 process'
  assert sharding.banner((2, 1, 2)) == 'devices: 4 x cpu, mesh data=2 fsdp=1 tensor=2, 1 process'


def fake_nvidia_smi(tmp_path, listing, code=0):
  """An executable that prints `listing` and exits with `code`, as nvidia-smi --list-gpus does."""
  path = tmp_path / 'nvidia-smi'
  path.write_text(f'#!/bin/sh\ncat <<"EOF"\n{listing}\nEOF\nexit {code}\n')
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return (str(path), '--list-gpus')


def fake_pci(where, *vendors):
  """A stand-in for sysfs's PCI devices with these vendor ids -> the glob of their vendor files."""
  for i, vendor in enumerate(vendors):
    (where / f'0000:00:0{i}.0').mkdir(parents=True)
    (where / f'0000:00:0{i}.0' / 'vendor').write_text(vendor + '\n')
  return str(where / '*' / 'vendor')


def test_an_accelerator_jax_does_not_see_is_named_with_its_install_line(tmp_path, monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  dev = tmp_path / 'dev'
  (dev / 'vfio').mkdir(parents=True)
  (dev / 'vfio' / 'vfio').touch()   # the VFIO control node alone is no TPU
  tpu = (str(dev / 'accel[0-9]*'), str(dev / 'vfio' / '[0-9]*'))
  none = fake_nvidia_smi(tmp_path, 'No devices were found', code=6)
  absent = {'tpu': ('no_such_module_libtpu',), 'gpu': ('no_such_module_cuda',)}
  google = fake_pci(tmp_path / 'pci_tpu', '0x8086', '0x1ae0')   # sysfs's vendor ids: Intel, and a Google TPU
  assert sharding.unseen_accelerator('cpu', tpu, none, absent, google) is None
  assert sharding.unseen_accelerator('cpu', tpu, ('no-such-nvidia-smi', '--list-gpus'), absent, google) is None

  for name in ('vfio/0', 'vfio/1'):   # a TPU v5e / v6e VM
    (dev / name).touch()
  warning = sharding.unseen_accelerator('cpu', tpu, none, absent, google)
  assert warning == (f'warning: this machine has TPU device files ({dev}/vfio/0, {dev}/vfio/1) but JAX runs on the '
                     'CPU (the CPU-only jax of requirements.txt?): pip install -r requirements-tpu.txt')
  assert sharding.unseen_accelerator('tpu', tpu, none, absent, google) is None   # JAX sees it: nothing to say
  # No PCI device of Google's: the VFIO files are some other passthrough device (a disk, a NIC); no warning.
  others = fake_pci(tmp_path / 'pci_other', '0x8086', '0x1af4')
  assert sharding.unseen_accelerator('cpu', tpu, none, absent, others) is None
  # sysfs lists no PCI device (a container without it): nothing contradicts the device files.
  assert sharding.unseen_accelerator('cpu', tpu, none, absent, str(tmp_path / 'no_sysfs' / '*' / 'vendor'))
  # The TPU support is installed (a module that exists stands in for libtpu): the install line would not help.
  warning = sharding.unseen_accelerator('cpu', tpu, none, {'tpu': ('json',), 'gpu': ()}, google)
  assert 'although its TPU support is installed: JAX could not start it' in warning

  nothing = (str(dev / 'none*'),)
  gpus = fake_nvidia_smi(tmp_path, 'GPU 0: NVIDIA H200 (UUID: GPU-1)\nGPU 1: NVIDIA H200 (UUID: GPU-2)')
  warning = sharding.unseen_accelerator('cpu', nothing, gpus, absent)
  assert warning == ('warning: this machine has 2 x NVIDIA H200 (nvidia-smi) but JAX runs on the CPU (the CPU-only '
                     'jax of requirements.txt?): pip install -r requirements-gpu.txt')
  assert sharding.unseen_accelerator('gpu', nothing, gpus, absent) is None

  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')   # chosen on purpose: the warning says what keeps JAX off the GPU
  assert sharding.unseen_accelerator('cpu', nothing, gpus, absent).endswith(
      'JAX_PLATFORMS=cpu keeps it there; unset it, and if JAX still does not see it: pip install -r '
      'requirements-gpu.txt')


def test_announce_prints_the_banner_first_then_the_warning(tmp_path, capsys):
  (tmp_path / 'accel0').touch()   # a TPU v4 VM
  sharding.announce((1, 8, 1), device_files=(str(tmp_path / 'accel[0-9]*'),), nvidia_smi=('no-such-nvidia-smi',),
                    plugins={'tpu': (), 'gpu': ()}, pci_vendors=fake_pci(tmp_path / 'pci', '0x1ae0'))
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'devices: 8 x cpu, mesh data=1 fsdp=8 tensor=1, 1 process'
  assert lines[1].startswith('warning:') and 'requirements-tpu.txt' in lines[1] and len(lines) == 2
  sharding.announce((1, 8, 1), device_files=(), nvidia_smi=('no-such-nvidia-smi',))
  assert capsys.readouterr().out.splitlines() == ['devices: 8 x cpu, mesh data=1 fsdp=8 tensor=1, 1 process']


def test_freed_host_memory_is_kept_only_for_the_cpu(monkeypatch):
  calls = []
  monkeypatch.setattr(hostmem.ctypes, 'CDLL', lambda _: type('libc', (), {'mallopt': lambda *a: calls.append(a[-2:])
                                                                            or 1})())
  monkeypatch.setattr(hostmem.platform, 'system', lambda: 'Linux')
  monkeypatch.setattr(hostmem.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  for platforms in ('tpu', 'cuda,cpu', ' rocm'):
    assert hostmem.accelerator_expected(platforms) and not hostmem.keep_freed_memory(platforms)
  installed = {'jax_plugins': [], 'libtpu': None}   # JAX_PLATFORMS unset: what is installed decides
  monkeypatch.setattr(hostmem.importlib.metadata, 'entry_points', lambda group: installed[group])
  monkeypatch.setattr(hostmem.importlib.util, 'find_spec', lambda name: installed[name])
  assert not hostmem.accelerator_expected('')
  installed['libtpu'] = object()
  assert hostmem.accelerator_expected('') and not hostmem.keep_freed_memory('')
  installed.update(libtpu=None, jax_plugins=['xla_cuda12'])
  assert hostmem.accelerator_expected('') and not hostmem.keep_freed_memory('')
  assert calls == []
  assert not hostmem.accelerator_expected('cpu') and hostmem.keep_freed_memory('cpu')
  assert calls == [(hostmem.M_MMAP_MAX, 0), (hostmem.M_TRIM_THRESHOLD, 2 ** 31 - 1), (hostmem.M_ARENA_MAX, 1)]
  monkeypatch.setattr(hostmem.platform, 'libc_ver', lambda: ('', ''))   # musl
  assert not hostmem.keep_freed_memory('cpu') and len(calls) == 3


@pytest.mark.parametrize('script', ['train.py', 'eval.py'])
def test_the_scripts_keep_freed_host_memory_before_numpy_and_jax_are_imported(script):
  lines = open(os.path.join(ROOT, script)).read().splitlines()
  call = next(i for i, line in enumerate(lines) if line.startswith('  hostmem.keep_freed_memory()'))
  imports = [i for i, line in enumerate(lines) if re.match(r'(import|from) \w', line)]
  assert lines[imports[0]] == 'import hostmem' and lines[call - 1] == "if __name__ == '__main__':"
  assert imports[0] < call - 1 < imports[1]


FAULTS = """
import resource, sys
import hostmem
kept = sys.argv[1] == 'keep' and hostmem.keep_freed_memory('cpu')
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: (((x @ w) * 2.0) @ w.T).sum())   # a (4096, 4096) float32 product in between: 64 MiB
x, w = jnp.ones((4096, 64)), jnp.ones((64, 4096)) / 64
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(f(x, w))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, min(faults[2:]))
"""


@pytest.mark.skipif(sys.platform != 'linux' or not os.confstr('CS_GNU_LIBC_VERSION'), reason='glibc only')
def test_kept_host_memory_spares_xla_cpu_the_page_faults_of_its_scratch():
  """Calls 3 to 5 of a program with 64 MiB of scratch: 16,384 pages of 4 KiB faulted in afresh on each by default,
  almost none once glibc keeps the freed memory."""
  faults = {}
  for how in ('default', 'keep'):
    p = subprocess.run([sys.executable, '-c', FAULTS, how], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=120)
    assert p.returncode == 0, p.stderr
    kept, n = p.stdout.split()
    assert kept == str(how == 'keep')
    faults[how] = int(n)
  assert faults['default'] > 8000 and faults['keep'] < 2000, faults

# ---------------------------------------------------------------------------------------------------------------
# Memory before the first step (on the CPU with a capacity passed in; train.py checks only on an accelerator)


# Held-out prompts: the evaluation samples them EVAL_SAMPLES times in one call of 3 prompts (6 rows, 3 per device),
# padded to the bucket of the longest, 45 characters: 64, wider than the training prompts' 32.
HELD_OUT = [data.Example('q', '3', '1 + 2 =', None), data.Example('q', '30', '1 + 2 + 3 + 4 =' * 3, None),
            data.Example('q', '5', '2 + 3 =', None)]
EVAL_SAMPLES = 2


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
  """train.setup of the embedded policy on a 1x2x1 mesh: 2 prompts x 4 samples = 8 rows, 4 per device, so the
  update can be split into 2 or 4 micro-batches; and check_fits with room to spare, the evaluation included."""
  rl = train.RLConfig(num_prompts=2, num_samples=4, max_new_tokens=32)
  run = train.RunConfig(workdir=str(tmp_path_factory.mktemp('memory')))
  s, state, text, _ = train.setup(rl, train.DataConfig(), run, (1, 2, 1), None)
  examples = [data.Example('q', '3', '1 + 2 =', None), data.Example('q', '12', '1 + 2 + 3 =' * 2, None)]
  lines = []
  phases = memory.check_fits(s, state, text, examples, run, held_out=(HELD_OUT, []), eval_samples=EVAL_SAMPLES,
                             capacity=2 ** 40, log=lines.append)
  return s, state, text, examples, run, phases, lines


def test_check_fits_reports_the_need_next_to_the_capacity(policy):
  s, state, text, examples, run, phases, lines = policy
  assert len(lines) == 1 and lines[0].startswith('memory per device (XLA\'s estimate): update ')
  assert 'of 1024.00 GiB (cpu; fits under 90%: 921.60 GiB)' in lines[0]
  assert '8 rows x 32 + 32 tokens in 1 micro-batch' in lines[0]   # the longest prompt, 22 characters: bucket 32
  assert ', eval ' in lines[0] and lines[0].endswith('; eval: 3 prompts x 2 samples per call')
  params = memory.nbytes_per_device(memory.abstract(state['params']))
  opt = memory.nbytes_per_device(memory.abstract(state['opt_state']))
  # The update holds the state (donated: its outputs alias it) and the frozen reference beside it; the samplers
  # (training's and the evaluation's) hold the parameters they sample with, the optimizer state and the reference
  # beside it.
  u, smp, ev = phases['update'], phases['sampler'], phases['eval']
  assert u.resident == params and u.alias >= params + opt and u.need > 2 * params + opt
  for p in (smp, ev):
    assert p.resident == opt + params and p.argument >= params and p.need > 2 * params + opt
  # The evaluation's phase is the sampler compiled for its own call: 3 held-out prompts of bucket 64, 2 samples.
  want = memory.sampler_phase(state['params'], s.sampler.cfg, s.mesh, 3, EVAL_SAMPLES, 64, 32, opt + params)
  assert dataclasses.replace(ev, seconds=0) == dataclasses.replace(want, seconds=0)
  assert ev.temp != smp.temp


def test_check_fits_names_the_micro_batches_that_fit(policy):
  """Room for a little less than the step in one slice: the step in two slices (compiled now) fits."""
  s, state, text, examples, run, phases, _ = policy
  capacity = int((phases['update'].need - 1) / memory.HEADROOM)
  assert phases['sampler'].need < memory.HEADROOM * capacity
  lines = []
  with pytest.raises(ValueError, match=r'^out of memory before the first step: the update step needs .* per device '
                                       r'\(8 rows in 1 micro-batch\): --micro_batches=2 fits \(.*\); or use more '
                                       r'devices \(--mesh\)\. Capacity'):
    memory.check_fits(s, state, text, examples, run, capacity=capacity, log=lines.append)
  assert lines[1:] == ['memory: the update does not fit; compiling it with --micro_batches=2 ...']


def fake_phases(monkeypatch, update_needs, sampler_need, eval_need=0):
  """check_fits with made-up needs instead of compiling: memory.train_step returns (micro-batches, remat), the
  run's own step is 'run'; the sampler called for HELD_OUT's 3 prompts x EVAL_SAMPLES is the evaluation's.
  Returns the list of steps whose need was asked for, in order."""
  asked = []
  phase = lambda need: memory.Phase(argument=need, output=0, temp=0, alias=0, resident=0, seconds=0.0)
  monkeypatch.setattr(memory, 'train_step', lambda s, state, m, remat: (m, remat))
  monkeypatch.setattr(memory, 'update_phase', lambda step, *a: (
      asked.append(step if isinstance(step, tuple) else 'run'), phase(update_needs[asked[-1]]))[1])
  monkeypatch.setattr(memory, 'sampler_phase', lambda params, cfg, mesh, prompts, samples, *a, **k: phase(
      eval_need if (prompts, samples) == (len(HELD_OUT), EVAL_SAMPLES) else sampler_need))
  return asked


def test_the_search_doubles_the_micro_batches_then_adds_remat(policy, monkeypatch):
  """8 rows over 2 devices: 1, 2 or 4 slices. More slices first, then --remat with 1, 2, 4 slices; the first that
  fits is named. (Capacity 100: 90 usable.)"""
  s, state, text, examples, run, _, _ = policy
  asked = fake_phases(monkeypatch, {'run': 100, (2, False): 95, (4, False): 91, (1, True): 92, (2, True): 60}, 10)
  with pytest.raises(ValueError, match='--remat --micro_batches=2 fits'):
    memory.check_fits(s, state, text, examples, run, capacity=100, log=lambda line: None)
  assert asked == ['run', (2, False), (4, False), (1, True), (2, True)]


def test_check_fits_says_when_nothing_fits_and_when_the_sampler_does_not(policy, monkeypatch):
  s, state, text, examples, run, _, _ = policy
  asked = fake_phases(monkeypatch, {k: 200 for k in ('run', (2, False), (4, False), (1, True), (2, True),
                                                     (4, True))}, 200)
  with pytest.raises(ValueError) as e:
    memory.check_fits(s, state, text, examples, run, capacity=100, log=lambda line: None)
  message = str(e.value)
  assert 'no --micro_batches that divides the rows fits, with or without --remat' in message
  assert 'the sampler needs 0.00 GiB per device for 2 prompts x 4 samples of up to 32 tokens' in message
  assert '--num_prompts' in message and '--max_new_tokens' in message and '--mesh' in message
  assert len(asked) == 6
  # With --remat already on, the search does not offer it.
  asked.clear()
  with pytest.raises(ValueError, match='no --micro_batches'):
    memory.check_fits(s, state, text, examples, dataclasses.replace(run, remat=True), capacity=100,
                      log=lambda line: None)
  assert asked == ['run', (2, True), (4, True)]


def test_check_fits_stops_a_run_whose_evaluation_does_not_fit(policy, monkeypatch):
  """The update and the training sampler fit, the held-out evaluation's sampler (3 prompts x 2 samples per call)
  does not: the error names the evaluation's flags, before the 'before' evaluation would run out of memory."""
  s, state, text, examples, run, _, _ = policy
  fake_phases(monkeypatch, {'run': 10}, 10, eval_need=200)
  with pytest.raises(ValueError) as e:
    memory.check_fits(s, state, text, examples, run, held_out=(HELD_OUT, []), eval_samples=EVAL_SAMPLES,
                      capacity=100, log=lambda line: None)
  message = str(e.value)
  assert message.startswith('out of memory before the first step: the held-out evaluation needs 0.00 GiB per device '
                            'for 3 prompts x 2 samples of up to 32 tokens per sampler call: use fewer --eval_samples, '
                            'fewer --eval_prompts and --val_prompts'), message
  assert '--max_new_tokens' in message and '--mesh' in message and 'update step' not in message
  # No held-out prompts (--eval_prompts=0): no evaluation to check.
  assert set(memory.check_fits(s, state, text, examples, run, held_out=([], []), eval_samples=EVAL_SAMPLES,
                               capacity=100, log=lambda line: None)) == {'update', 'sampler'}


def test_the_rebuilt_step_has_train_pys_loss(policy):
  s = policy[0]
  for rl, kl_in in ((train.RLConfig(kl_coef=0.1, entropy_coef=0.01), 'loss'), (train.RLConfig(kl_coef=0.1),
                                                                               'reward')):
    ours, theirs = memory.train_loss(dataclasses.replace(s, rl=rl, kl_in=kl_in)), train.loss_fn(rl, kl_in)
    assert (ours.func, ours.keywords) == (theirs.func, theirs.keywords)
  assert memory.train_loss(dataclasses.replace(s, rl=train.RLConfig(mode='sft'))) is update.sft_loss
