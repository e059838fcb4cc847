"""Where arrays live on the device mesh: one table of rules, said once, used for parameters, optimizer state,
batches and activations.

    mesh = make_mesh(default_mesh(jax.device_count()))        # (data, fsdp, tensor) = (1, n, 1): FSDP over all
    p_shard = param_shardings(cfg, mesh)                      # each weight split as RULES say
    shardings = state_shardings(optimizer, params, p_shard, mesh)   # + AdamW's moments, placed like their weights
    batch = global_batch({'tokens': np.ndarray, ...}, mesh)   # rows over data x fsdp
    announce(mesh_sizes)    # 'devices: 8 x TPU v5 lite, mesh data=1 fsdp=8 tensor=1, 1 process': a run's first line

The mesh has three axes: `data` (pure data parallel: each shard has whole weights), `fsdp` (weights split along
their model dimension and gathered per layer; each device also takes its own rows of the batch) and `tensor`
(heads, MLP columns and vocabulary split: Megatron-style tensor parallel). A dimension that does not divide its
mesh axes is an error naming it, never a silent replication.

Multi-host (--distributed, `initialize_distributed`): one process per host, all running the same program. Every
process loads the same prompts in the same order (same seed); the sampler is one SPMD program over the whole mesh;
each process hands the update step only the rows its own devices hold (`global_batch`), and reads whole values back
with `host_array` (an all-gather when an array spans hosts).

Which devices a run uses is its first line (`announce`, from train.py and eval.py). When JAX runs on the CPU of a
machine with a TPU (its device files) or an NVIDIA GPU (nvidia-smi lists one), a warning under it names the
install line that brings JAX's support for it (requirements-tpu.txt, requirements-gpu.txt).
"""
import glob
import importlib.util
import math
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax

import model

MESH_AXES = ('data', 'fsdp', 'tensor')
RULES = {
    'batch': ('data', 'fsdp'),        # rows of a batch: data parallel, and FSDP devices take their own rows
    'embed': 'fsdp',                  # FSDP: every weight is split along its model dimension
    'heads': 'tensor', 'kv_heads': 'tensor', 'mlp': 'tensor', 'vocab': 'tensor',
    'layers': None,
}


def default_mesh(num_devices: int) -> tuple[int, int, int]:
  """Every device the process sees, as FSDP: weights and optimizer state split n ways, rows over all of them."""
  return (1, num_devices, 1)


def parse_mesh(text: str, num_devices: int) -> tuple[int, int, int]:
  """--mesh 'data,fsdp,tensor' (one size may be -1: the rest of the devices; '' or 'auto': default_mesh)."""
  if text in ('', 'auto'):
    return default_mesh(num_devices)
  try:
    sizes = [int(s) for s in text.split(',')]
  except ValueError:
    raise ValueError(f'--mesh={text!r}: expected three integers data,fsdp,tensor') from None
  sizes += [1] * (3 - len(sizes))
  if len(sizes) != 3 or sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'--mesh={text!r}: expected three positive sizes data,fsdp,tensor (one may be -1)')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'--mesh={text!r}: {num_devices} devices do not divide by {known}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f'--mesh={text!r} has {math.prod(sizes)} devices, this process sees {num_devices} '
                     '(leave --mesh unset to use them all)')
  return tuple(sizes)


# Where an accelerator shows itself when JAX does not see it. TPU VMs: /dev/accel0.. (v2-v4) or /dev/vfio/0..
# (v5e, v5p, v6e; /dev/vfio/vfio alone is the VFIO control node every such kernel has, hence the digit).
TPU_DEVICE_FILES = ('/dev/accel[0-9]*', '/dev/vfio/[0-9]*')
# The device files alone are not a TPU (a VFIO passthrough disk or NIC, another vendor's accelerator): a TPU is a
# PCI device of Google's vendor id. Where sysfs lists no PCI device at all, the device files are taken at their word.
PCI_VENDORS = '/sys/bus/pci/devices/*/vendor'
GOOGLE_PCI_VENDOR = '0x1ae0'
NVIDIA_SMI = ('nvidia-smi', '--list-gpus')   # one line 'GPU i: NAME (UUID: ...)' per GPU the driver sees
INSTALL = {'tpu': 'pip install -r requirements-tpu.txt', 'gpu': 'pip install -r requirements-gpu.txt'}
PLUGINS = {'tpu': ('libtpu',), 'gpu': ('jax_cuda13_plugin', 'jax_cuda12_plugin')}   # what those lines install


def banner(mesh_sizes) -> str:
  """One line: the backend, how many devices of which kind the mesh uses, its shape, and the processes."""
  devices = jax.devices()[:math.prod(mesh_sizes)]
  kinds = ', '.join(f'{sum(d.device_kind == k for d in devices)} x {k}' for k in dict.fromkeys(d.device_kind
                                                                                              for d in devices))
  mesh = ' '.join(f'{a}={n}' for a, n in zip(MESH_AXES, mesh_sizes))
  backend = jax.default_backend()
  if any(backend.lower() not in d.device_kind.lower() for d in devices):   # 'TPU v5 lite' and 'cpu' say it already
    kinds += f' ({backend})'
  n = jax.process_count()
  return f'devices: {kinds}, mesh {mesh}, {n} process{"es" if n > 1 else ""}'


def _google_pci_device(pci_vendors: str) -> bool:
  """Whether sysfs lists a PCI device of Google's (a TPU), or lists none at all (then nothing contradicts the device
  files)."""
  files = glob.glob(pci_vendors)

  def vendor(f):
    try:
      with open(f) as fh:
        return fh.read().strip().lower()
    except OSError:
      return ''
  return not files or any(vendor(f) == GOOGLE_PCI_VENDOR for f in files)


def unseen_accelerator(backend: str, device_files=TPU_DEVICE_FILES, nvidia_smi=NVIDIA_SMI,
                       plugins=PLUGINS, pci_vendors=PCI_VENDORS) -> str | None:
  """A warning when JAX computes on the CPU of a machine that has a TPU or an NVIDIA GPU (usually the CPU-only
  jaxlib of requirements.txt: the run works, many times slower), naming the install line; else None.

  device_files: globs of TPU device files; nvidia_smi: the command that lists GPUs; plugins: the modules whose
  presence means JAX's accelerator support is installed; pci_vendors: the glob of sysfs's PCI vendor ids, one of
  which must be Google's for the device files to count as a TPU (tests point all four at fakes).
  """
  if backend != 'cpu':
    return None
  tpu = sorted(f for pattern in device_files for f in glob.glob(pattern))
  if tpu and not _google_pci_device(pci_vendors):
    tpu = []   # VFIO or accel device files of something else
  if tpu:
    found, kind = f'TPU device files ({", ".join(tpu[:4])}{", ..." if len(tpu) > 4 else ""})', 'tpu'
  elif shutil.which(nvidia_smi[0]):
    try:
      listed = subprocess.run(list(nvidia_smi), capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):   # a broken driver: nothing we can say for sure
      return None
    gpus = [line for line in listed.splitlines() if line.startswith('GPU ')]
    if not gpus:
      return None
    found, kind = f'{len(gpus)} x {gpus[0].split(":", 1)[1].split("(UUID")[0].strip()} (nvidia-smi)', 'gpu'
  else:
    return None
  head = f'warning: this machine has {found} but JAX runs on the CPU'
  chosen = os.environ.get('JAX_PLATFORMS', '')
  if chosen:
    return f'{head}: JAX_PLATFORMS={chosen} keeps it there; unset it, and if JAX still does not see it: {INSTALL[kind]}'
  if any(importlib.util.find_spec(m) for m in plugins[kind]):
    return (f'{head} although its {kind.upper()} support is installed: JAX could not start it (in use by another '
            'process? a driver too old?); JAX\'s own message above says why')
  return f'{head} (the CPU-only jax of requirements.txt?): {INSTALL[kind]}'


def announce(mesh_sizes, device_files=TPU_DEVICE_FILES, nvidia_smi=NVIDIA_SMI, plugins=PLUGINS,
             pci_vendors=PCI_VENDORS):
  """Prints the banner as a run's first line, and the unseen-accelerator warning under it if there is one; only
  process 0 prints (every process of a multi-host run sees the same mesh).

      devices: 8 x TPU v5 lite, mesh data=1 fsdp=8 tensor=1, 1 process
  """
  if jax.process_index() != 0:
    return
  print(banner(mesh_sizes), flush=True)
  warning = unseen_accelerator(jax.default_backend(), device_files, nvidia_smi, plugins, pci_vendors)
  if warning:
    print(warning, flush=True)


def initialize_distributed():
  """--distributed (train.py, eval.py): jax.distributed.initialize, before any device is used. One process per
  host; the coordinator, process count and id come from the environment: TPU pod metadata, SLURM or Open MPI (jax
  detects them), or JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
  jax.distributed.initialize(**{k: int(os.environ[v]) for k, v in (('num_processes', 'JAX_NUM_PROCESSES'),
                                                                    ('process_id', 'JAX_PROCESS_ID'))
                                if v in os.environ})


def make_mesh(sizes) -> jax.sharding.Mesh:
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=jax.devices()[:math.prod(sizes)])


def logical_sharding(mesh, axes, shape, what='array') -> jax.sharding.NamedSharding:
  """NamedSharding for an array whose dims carry logical names; loud when a dim does not divide its mesh axes."""
  spec = []
  for name, size in zip(axes, shape):
    mesh_axes = RULES.get(name) if name else None
    n = math.prod(mesh.shape[a] for a in ((mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes or ()))
    if size % n:
      raise ValueError(f'{what}: dimension {name!r} of size {size} does not divide over mesh axes {mesh_axes} '
                       f'({n} devices); change --mesh')
    spec.append(mesh_axes)
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def param_shardings(cfg, mesh):
  axes, shapes = model.param_axes(cfg), model.param_shapes(cfg)
  is_leaf = lambda x: isinstance(x, tuple)
  return jax.tree.map(lambda a, s: logical_sharding(mesh, a, s, 'parameter'), axes, shapes, is_leaf=is_leaf)


def state_shardings(optimizer, params, p_shard, mesh) -> dict:
  """{'params', 'opt_state'} shardings: the optimizer's moments are placed like the weights they belong to (they
  have their shapes), its step count is replicated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  opt = optax.tree_map_params(optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, params), p_shard,
                              transform_non_params=lambda _: replicated)
  return {'params': p_shard, 'opt_state': opt}


def placed_copy(tree, shardings):
  """A copy of a pytree of arrays, placed as `shardings` say (the update step donates its input: a copy lets the
  caller keep the original, e.g. as the frozen reference policy)."""
  return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(tree)


def init_state(optimizer, params, shardings) -> dict:
  """The training state placed on the mesh: a copy of the parameters and a fresh optimizer state."""
  params = placed_copy(params, shardings['params'])
  return {'params': params, 'opt_state': jax.jit(optimizer.init, out_shardings=shardings['opt_state'])(params)}


def batch_sharding(mesh, shape):
  return logical_sharding(mesh, ('batch',) + (None,) * (len(shape) - 1), shape, 'batch')


def constrain(x, axes):
  """Pins an activation whose dims carry logical names to the rules' mesh axes, inside a function traced under
  `jax.sharding.use_abstract_mesh` (the update step and the scorer); elsewhere (no mesh) it returns x unchanged."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*[RULES.get(a) if a else None
                                                                          for a in axes]))


def process_rows(mesh, num_rows: int) -> slice:
  """The rows of a (num_rows, ...) batch that this process's devices hold under the batch sharding."""
  index = batch_sharding(mesh, (num_rows,)).addressable_devices_indices_map((num_rows,))
  starts = {i[0].indices(num_rows)[0] for i in index.values()}
  stops = {i[0].indices(num_rows)[1] for i in index.values()}
  lo, hi = min(starts), max(stops)
  if (hi - lo) * jax.process_count() != num_rows:
    raise ValueError(f'the batch rows of process {jax.process_index()} are not one contiguous block '
                     f'({sorted(starts)}); build the mesh with each process\'s devices adjacent')
  return slice(lo, hi)


def global_batch(batch: dict, mesh) -> dict:
  """A batch of host arrays, whole on every process -> global jax arrays sharded over the batch axes.

  Each process contributes its own rows (process_rows) through jax.make_array_from_process_local_data, so no
  host sends another host data; with one process it amounts to a device_put."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    sharding = batch_sharding(mesh, v.shape)
    out[k] = jax.make_array_from_process_local_data(sharding, v[process_rows(mesh, v.shape[0])], v.shape)
  return out


def host_array(x) -> np.ndarray:
  """The whole value of a jax array on this host: a copy when local, an all-gather when it spans hosts."""
  if getattr(x, 'is_fully_addressable', True):
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_tree(tree):
  """host_array over a pytree (the Hugging Face export and evaluation read parameters whole)."""
  return jax.tree.map(host_array, tree)
