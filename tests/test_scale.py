"""Scale: the sharding rules on two meshes, each giving one device's update, gradient accumulation, checkpoints
across meshes, the memory plan.

All on the eight fake CPU devices of conftest.py, with configs small enough to compile in seconds.
"""
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import model
import sample
import sharding
import train
import update
import workdir as wd_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))
import plan  # noqa: E402

# Every sharded dimension divides on both meshes: heads 8 and kv heads 4 over tensor=4, model dim 32 over fsdp=4.
# One layer: the layer axis is still there (and not sharded); the compiles are half as long.
CFG = model.Config(vocab_size=64, d_model=32, num_layers=1, num_heads=8, num_kv_heads=4, head_dim=8, mlp_dim=48)
MESHES = ((2, 4, 1), (1, 2, 4))


def rules_spec(axes):
  """What the rules table says for a leaf with these logical axes, read off sharding.RULES directly."""
  return P(*[sharding.RULES.get(a) if a else None for a in axes])


def random_batch(rows, Tp=4, N=6, V=64, seed=0):
  rng = np.random.RandomState(seed)
  return {'prompt_tokens': rng.randint(0, V, (rows, Tp)).astype(np.int32), 'prompt_valid': np.ones((rows, Tp), bool),
          'tokens': rng.randint(0, V, (rows, N)).astype(np.int32),
          'mask': (np.arange(N)[None] < rng.randint(1, N + 1, (rows, 1))).astype(np.float32),
          'old_logp': -rng.rand(rows, N).astype(np.float32) * 4, 'ref_logp': -rng.rand(rows, N).astype(np.float32) * 4,
          'advantages': rng.randn(rows).astype(np.float32),
          'row_weight': (rng.rand(rows) > 0.25).astype(np.float32)}   # some unlabelled prompts: weight 0


def two_steps(mesh_sizes, params, batch, micro_batches=1):
  """train.py's placement (parameters, AdamW state) and two steps on the same batch; returns the second's
  (state, aux). Two, because AdamW's first update is about lr x sign(gradient) whatever the gradient's scale: a
  wrong reduction (a lost shard, a sum where a mean belongs) shows in the second."""
  mesh = sharding.make_mesh(mesh_sizes)
  opt = update.make_optimizer(LR)
  shardings = sharding.state_shardings(opt, params, sharding.param_shardings(CFG, mesh), mesh)
  state = sharding.init_state(opt, params, shardings)
  step = update.make_train_step(CFG, LOSS, opt, shardings, mesh, micro_batches)
  state, _ = step(state, sharding.global_batch(batch, mesh))
  return step(state, sharding.global_batch(batch, mesh))


LR = 1e-2
LOSS = train.loss_fn(train.RLConfig(kl_coef=0.1, entropy_coef=0.01), 'loss')


@pytest.fixture(scope='module')
def steps():
  """Two steps on one device; on (2, 4, 1) over the whole batch; on (1, 2, 4) in 4 micro-batches of 8 rows."""
  params = model.init_params(CFG, jax.random.key(0))
  batch = random_batch(32)
  return {(1, 1, 1): two_steps((1, 1, 1), params, batch), MESHES[0]: two_steps(MESHES[0], params, batch),
          MESHES[1]: two_steps(MESHES[1], params, batch, 4)}


def test_parameters_and_optimizer_state_follow_the_rules_on_two_meshes(steps):
  axes = model.param_axes(CFG)
  is_leaf = lambda x: isinstance(x, tuple)
  for sizes in MESHES:
    state, _ = steps[sizes]
    adam = state['opt_state'][1][0]
    for tree in (state['params'], adam.mu, adam.nu):
      specs = jax.tree.map(lambda a: a.sharding.spec, tree)
      assert specs == jax.tree.map(rules_spec, axes, is_leaf=is_leaf), sizes
    assert adam.count.sharding.spec == P()
    # The rules as written down by hand: FSDP over the model dimension, tensor parallelism over heads and MLP.
    assert state['params']['layers']['q'].sharding.spec == P(None, 'fsdp', 'tensor', None)
    assert state['params']['layers']['down'].sharding.spec == P(None, 'tensor', 'fsdp')
    assert state['params']['embed'].sharding.spec == P('tensor', 'fsdp')
    assert adam.mu['layers']['gate'].sharding.spec == P(None, 'fsdp', 'tensor')
    assert adam.nu['layers']['k'].sharding.spec == P(None, 'fsdp', 'tensor', None)
  # The axes really split: a quarter of the model dim per device on (2, 4, 1); on (1, 2, 4) a device holds 2 of
  # the 8 query heads and half the model dim.
  assert steps[(2, 4, 1)][0]['params']['layers']['q'].addressable_shards[0].data.shape == (1, 8, 8, 8)
  assert steps[(1, 2, 4)][0]['params']['layers']['q'].addressable_shards[0].data.shape == (1, 16, 2, 8)


def test_every_mesh_and_micro_batching_give_the_single_device_update(steps):
  """On (2, 4, 1) over the whole batch and on (1, 2, 4) in 4 slices of 8 rows, each slice normalised by the whole
  batch's token count: the loss, its parts and the weights after two steps are those of one device. Some rows
  have weight 0 and lengths differ, so a per-slice mean would give another loss and gradient. Float32 sums in
  another order differ by ~1e-7, and AdamW divides by sqrt(v), which magnifies that for weights with near-zero
  gradients: 1e-4 is 1% of one update (lr 1e-2), while a sharding bug moves weights by a whole update."""
  one, aux_one = steps[(1, 1, 1)]
  for sizes in MESHES:
    state, aux = steps[sizes]
    for k in aux_one:
      np.testing.assert_allclose(float(aux[k]), float(aux_one[k]), rtol=1e-5, atol=1e-6, err_msg=f'{sizes} {k}')
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(state), strict=True):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4, rtol=1e-4, err_msg=str(sizes))
  # The per-slice-mean alternative really differs here (so the check above can fail).
  batch = random_batch(32)
  count = lambda rows: (batch['mask'][rows] * batch['row_weight'][rows, None]).sum()
  assert abs(count(slice(0, None, 4)) * 4 - count(slice(None))) > 1


def test_the_cpu_update_skips_ynnpack_and_gives_the_plain_update(monkeypatch):
  """On the CPU the update compiles with XLA's own fused kernels (update.compiler_options): its program holds no
  YNNPACK fusion where the same step with XLA's defaults holds some, and two steps of each agree (the kernels sum
  in another order: ~1e-7, magnified by AdamW as in the test above). Accelerators keep their defaults."""
  params, batch, mesh = model.init_params(CFG, jax.random.key(0)), random_batch(32), sharding.make_mesh((1, 1, 1))

  def build():
    opt = update.make_optimizer(LR)
    shardings = sharding.state_shardings(opt, params, sharding.param_shardings(CFG, mesh), mesh)
    state, b = sharding.init_state(opt, params, shardings), sharding.global_batch(batch, mesh)
    step = update.make_train_step(CFG, LOSS, opt, shardings, mesh)
    hlo = step.lower(state, b).compile().as_text()
    state, _ = step(state, b)
    return hlo, step(state, b)
  hlo, (state, aux) = build()
  monkeypatch.setattr(update, 'compiler_options', lambda mesh: None)
  plain_hlo, (plain_state, plain_aux) = build()
  assert 'ynn_fusion' in plain_hlo and 'ynn_fusion' not in hlo
  for k in aux:
    np.testing.assert_allclose(float(aux[k]), float(plain_aux[k]), rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(plain_state), jax.tree.leaves(state), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4, rtol=1e-4)
  gpu = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform='gpu')]))
  monkeypatch.undo()
  assert update.compiler_options(gpu) is None


def test_the_profile_splits_wall_time_among_the_ops_running():
  """bench/train_profile.py's attribution, on spans worked out by hand (microseconds): a runs 0-4, b 2-6 (its own
  event ends at 3, its 'end: b' at 6), c 8-9. 0-2 a alone, 2-4 a and b (1 each), 4-6 b alone, 8-9 c."""
  import train_profile
  ops = {'a': None, 'b': None, 'c': None}
  events = [{'ph': 'X', 'name': 'a', 'ts': 0, 'dur': 4}, {'ph': 'X', 'name': 'b', 'ts': 2, 'dur': 1},
            {'ph': 'X', 'name': 'end: b', 'ts': 5.5, 'dur': 0.5}, {'ph': 'X', 'name': 'c', 'ts': 8, 'dur': 1},
            {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'ts': 0, 'dur': 9}]
  spans = train_profile.spans_of(events, ops)
  assert sorted(spans) == [('a', 0, 4), ('b', 2, 6), ('c', 8, 9)]
  ms = train_profile.wall_ms(spans)
  assert ms == {'a': pytest.approx(3e-3), 'b': pytest.approx(3e-3), 'c': pytest.approx(1e-3)}


def test_micro_batches_must_divide():
  rl = train.RLConfig(num_prompts=4, num_samples=4)
  with pytest.raises(train.FlagError, match='--micro_batches=4: 16 rows do not split into 4 slices'):
    train.validate(rl, train.DataConfig(), train.RunConfig(mesh='2,4,1', micro_batches=4), 8)
  with pytest.raises(ValueError, match='does not divide over mesh axes'):
    sharding.global_batch(random_batch(12), sharding.make_mesh((2, 4, 1)))


def test_chunked_head_and_attention_equal_the_plain_ones(monkeypatch):
  """Log-probs, entropies and their gradients with the LM head in 4-token slices and the attention in 3-query
  blocks (padding both) equal the one-shot computation."""
  cfg = model.Config(vocab_size=61, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=24)
  params = model.init_params(cfg, jax.random.key(1))
  b = random_batch(3, Tp=5, N=11, V=61, seed=3)
  b['prompt_valid'][0, :2] = False

  seq = np.concatenate([b['prompt_tokens'], b['tokens']], 1)[1:]   # rows 1, 2: no padding

  def run():   # traced again after the patches below (a new function each call)
    def f(p):
      logp, ent = update.token_logprobs(p, cfg, b['prompt_tokens'], b['prompt_valid'], b['tokens'], b['mask'], 0.7)
      return (logp * b['mask']).sum() + 0.1 * ent.sum(), (logp, ent)
    # log_softmax written out, from the plain logits (rows without padding, so they see what the loss sees)
    positions = jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape)
    full = lambda p: jax.nn.log_softmax(model.forward(p, cfg, seq, positions,
                                                      jnp.ones(seq.shape, bool))[0][:, 4:-1] / 0.7)
    return jax.jit(lambda p: (jax.grad(f, has_aux=True)(p), full(p)))(params)

  (grads, (logp, ent)), full = run()
  monkeypatch.setattr(update, 'HEAD_CHUNK', 4)
  monkeypatch.setattr(model, 'ATTN_CHUNK', 3)
  (grads_c, (logp_c, ent_c)), _ = run()
  np.testing.assert_allclose(logp_c, logp, atol=1e-5)
  np.testing.assert_allclose(ent_c, ent, atol=1e-5)
  for a, c in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_c)):
    np.testing.assert_allclose(c, a, atol=1e-5)
  # The fused log-prob and entropy against log_softmax written out.
  real = b['mask'][1:] > 0   # after a row's end the loss masks the tokens out as keys; the plain pass does not
  want_logp = np.take_along_axis(np.asarray(full), b['tokens'][1:, :, None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(logp[1:])[real], want_logp[real], atol=1e-5)
  np.testing.assert_allclose(np.asarray(ent[1:])[real], np.asarray(-(jnp.exp(full) * full).sum(-1))[real], atol=1e-5)


def test_sampler_rows_and_cache_split_over_the_batch_axes():
  """With train's rules the sampler splits the P x G rows (and so their KV cache) over data x fsdp, and samples
  what the unsharded sampler samples."""
  cfg = model.Config(vocab_size=64, d_model=32, num_layers=1, num_heads=8, num_kv_heads=4, head_dim=8, mlp_dim=48)
  params = model.init_params(cfg, jax.random.key(2))
  prompts = [[3, 4, 5], [6, 7]]
  kw = dict(num_samples=8, max_new_tokens=5, temperature=1.0, key=jax.random.key(3), eos_ids=[])
  want = sample.sample(params, cfg, prompts, **kw)
  mesh = sharding.make_mesh((2, 4, 1))
  got = sample.sample(jax.device_put(params, sharding.param_shardings(cfg, mesh)), cfg, prompts, mesh=mesh,
                      batch_axes=sharding.RULES['batch'], **kw)
  assert got.tokens.sharding.spec == P(('data', 'fsdp'))
  assert {s.data.shape[0] for s in got.tokens.addressable_shards} == {2}   # 16 rows, 2 per device
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
  np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(want.logprobs), atol=1e-5)
  with pytest.raises(ValueError, match='2 prompts x 3 samples do not divide over the 8-way data x fsdp axes'):
    sample.sample(params, cfg, prompts, mesh=mesh, batch_axes=sharding.RULES['batch'], **dict(kw, num_samples=3))


def test_checkpoint_written_on_one_mesh_restores_onto_another(tmp_path):
  """train.py's checkpoint layout, written from a (2, 4, 1) mesh, read onto (1, 2, 4) and (8, 1, 1) by giving
  the target shardings: the same logits."""
  params = model.init_params(CFG, jax.random.key(4))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 64, (8, 12)), jnp.int32)
  want = np.asarray(model.logits(params, CFG, tokens))
  src = jax.device_put(params, sharding.param_shardings(CFG, sharding.make_mesh((2, 4, 1))))
  wd_lib.save(wd_lib.checkpoint_manager(str(tmp_path)), 3, {'params': src}, 24)
  for sizes in ((1, 2, 4), (8, 1, 1)):
    shardings = sharding.param_shardings(CFG, sharding.make_mesh(sizes))
    target = {'params': jax.device_put(jax.tree.map(jnp.zeros_like, params), shardings)}
    state, step, data_pos = wd_lib.restore(wd_lib.checkpoint_manager(str(tmp_path)), target)
    got = state['params']
    assert jax.tree.map(lambda a: a.sharding, got) == shardings
    assert (step, data_pos) == (3, 24)
    np.testing.assert_allclose(np.asarray(model.logits(got, CFG, tokens)), want, atol=1e-5)


def test_global_batch_places_each_processes_rows():
  mesh = sharding.make_mesh((2, 4, 1))
  batch = random_batch(16)
  got = sharding.global_batch(batch, mesh)
  assert sharding.process_rows(mesh, 16) == slice(0, 16)   # one process holds every row
  for k, v in batch.items():
    assert got[k].sharding.spec[0] == ('data', 'fsdp') and got[k].shape == v.shape
    np.testing.assert_array_equal(np.asarray(got[k]), v)


@pytest.mark.slow   # bench/plan.py compiles the update, sampler and scorer: 25 s
def test_plan_compiles_and_scales_with_the_batch():
  """The memory plan of a tiny config: twice the rows per micro-batch needs more scratch memory and the same
  arguments; the sampler holds the parameters, its copies of the layer weights and at least its rows' KV
  cache."""
  cfg = model.Config(vocab_size=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                     mlp_dim=128)
  out = plan.run_plan(cfg=cfg, mesh=(2, 4, 1), num_prompts=4, num_samples=8, prompt_len=16, response_len=64,
                      param_dtype='float32', dtype='float32', kl=False, micro_rows=[1, 2], sampler_prompts=[4],
                      log=lambda *a: None)
  u1, u2 = out['update'][1], out['update'][2]
  assert u1.argument == u2.argument and u2.temp > 1.3 * u1.temp
  # Parameters (float32, split over the 4-way fsdp axis) and AdamW's two moments.
  n = sum(int(np.prod(s)) for s in jax.tree.leaves(model.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple)))
  assert abs(out['params'] - 4 * n / 4) < 4 * n / 4 * 0.05 and abs(out['opt_state'] - 2 * out['params']) < 64
  # The sampler's arguments: the parameters, the prompts and (2 layers: sample.weights_apart) its two copies of
  # the layer weights, placed as XLA places them; the KV cache of 32 rows is scratch.
  s4 = out['sampler'][4]
  layer_bytes = 4 * sum(int(np.prod(s)) for s in jax.tree.leaves(model.param_shapes(cfg)['layers'],
                                                                  is_leaf=lambda x: isinstance(x, tuple)))
  kv_cache = 2 * 2 * 32 * (16 + 64) * 2 * 16 * 4 / 8    # k and v, 2 layers, rows, slots, kv heads, head dim, f32
  assert out['params'] + 2 * layer_bytes / 8 <= s4.argument < out['params'] + 2 * layer_bytes + 1024
  assert s4.temp > kv_cache
  assert u1.need > out['params'] + out['opt_state']
  text = plan.report(out, type('A', (), dict(model_shape='tiny', mesh='2,4,1', num_prompts=4, num_samples=8,
                                             prompt_len=16, response_len=64, remat=True)), 0.9)
  assert "| update | 2 rows/device/micro-batch (2 micro-batches) |" in text and 'H200: update 2 rows' in text


MULTIPROCESS_WORKER = r'''
import json, os, sys
import jax
jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(f'localhost:{sys.argv[2]}', num_processes=2, process_id=int(sys.argv[1]))
sys.path[:0] = [sys.argv[3], os.path.join(sys.argv[3], 'tests')]
import numpy as np
import model, sharding, update
from test_scale import CFG, LOSS, LR, random_batch
mesh = sharding.make_mesh((2, 4, 1))               # 8 devices, 4 on each process
batch = random_batch(16)                           # the same rows on both processes (same seed)
params = model.init_params(CFG, jax.random.key(0))
want_loss, want_aux = jax.jit(lambda p, b: LOSS(p, CFG, b))(params, batch)   # this process alone
opt = update.make_optimizer(LR)
shardings = sharding.state_shardings(opt, params, sharding.param_shardings(CFG, mesh), mesh)
put = lambda tree, shardings: jax.tree.map(
    lambda a, s: jax.make_array_from_callback(a.shape, s, lambda i: np.asarray(a)[i]), tree, shardings)
state = {'params': put(params, shardings['params'])}
state['opt_state'] = jax.jit(opt.init, out_shardings=shardings['opt_state'])(state['params'])
step = update.make_train_step(CFG, LOSS, opt, shardings, mesh, 2)
state, aux = step(state, sharding.global_batch(batch, mesh))
print(json.dumps({'rows': str(sharding.process_rows(mesh, 16)), 'loss': float(aux['loss']), 'want': float(want_loss),
                  'q': sharding.host_array(state['params']['layers']['q']).ravel()[:5].tolist()}))
'''


def free_port() -> int:
  """A localhost port nothing listens on now: for the coordinator of a two-process run."""
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_one_step(tmp_path):
  """Multi-host, simulated: two processes of 4 CPU devices each (jax.distributed over localhost, gloo collectives).
  Each gives the step its own 8 rows through sharding.global_batch; both see the loss one process computes alone,
  and the same updated weights."""
  import subprocess
  port = free_port()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if not k.startswith('XLA_')}
  procs = [subprocess.Popen([sys.executable, '-c', MULTIPROCESS_WORKER, str(i), str(port), root], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert all(p.returncode == 0 for p in procs), [e[-3000:] for _, e in outs]
  import json
  got = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
  assert [g['rows'] for g in got] == ['slice(0, 8, None)', 'slice(8, 16, None)']
  for g in got:
    assert abs(g['loss'] - g['want']) < 1e-5
  np.testing.assert_allclose(got[0]['q'], got[1]['q'])


@pytest.mark.slow
def test_two_processes_run_to_the_end_and_write_once(tmp_path):
  """train.py --distributed in two processes of 2 CPU devices each (localhost, gloo): both run the same steps on
  one 4-device mesh, the held-out evaluation works on parameters spread over both, and one set of logs, one
  summary and one Hugging Face export are written (by process 0), which loads and matches the checkpoint. Then
  eval.py --distributed on that export, its rows over both hosts: one table and one --out, by process 0."""
  import json
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  wd = str(tmp_path / 'run')
  task = 'rg:chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1'
  base = {k: v for k, v in os.environ.items() if not k.startswith('XLA_')}

  def two_processes(script, *args):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(root, script), '--distributed', *args], cwd=root,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(base, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='2', PYTHONUNBUFFERED='1',
                                       JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
                                       JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                                       JAX_PROCESS_ID=str(i))) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outs]
    return outs

  outs = two_processes('train.py', '--mode=self', '--steps=2', '--num_prompts=4', '--num_samples=4',
                       '--max_new_tokens=24', '--eval_prompts=8', '--eval_samples=2', f'--data={task}',
                       '--data_size=64', f'--model={os.path.join(root, "assets", "tiny-chain-sum")}',
                       f'--workdir={wd}')
  assert 'devices: 4 x cpu, mesh data=1 fsdp=4 tensor=1, 2 processes' in outs[0]
  assert 'step 2/2' in outs[0] and 'step 2/2' not in outs[1]          # process 0 alone reports and writes
  assert 'wrote metrics.jsonl' in outs[0] and 'wrote metrics.jsonl' not in outs[1]
  assert [r['step'] for r in wd_lib.read_jsonl(os.path.join(wd, 'metrics.jsonl'))] == [1, 2]   # not twice
  assert len(wd_lib.read_jsonl(os.path.join(wd, 'trace.jsonl'))) == 2 * 2
  summary = json.load(open(os.path.join(wd, 'summary.json')))
  assert summary['steps'] == 2 and 'after' in summary
  # The export (gathered from both hosts) holds the weights of the last checkpoint, read here on one device.
  import hf
  import orbax.checkpoint as ocp
  _, exported = hf.load_checkpoint(os.path.join(wd, 'hf'))
  path, ckpt = os.path.join(wd, 'checkpoints', '2', 'state'), ocp.StandardCheckpointer()
  meta = ckpt.metadata(path)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        getattr(meta, 'item_metadata', meta))
  saved = ckpt.restore(path, target)['params']
  assert len(jax.tree.leaves(exported)) == len(jax.tree.leaves(saved))
  for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # eval.py on the export over both hosts: 3 prompts x 2 samples, padded to 4 prompts (8 rows, 2 per device).
  out = tmp_path / 'eval.json'
  outs = two_processes('eval.py', f'--model={wd}', f'--data={task}', '--eval_prompts=3', '--eval_samples=2',
                       '--max_new_tokens=24', f'--out={out}', '--records')
  assert 'avg@2' in outs[0] and f'wrote {out}' in outs[0]
  assert 'avg@2' not in outs[1] and 'wrote' not in outs[1] and 'prompts/s' not in outs[1]
  res = json.loads(out.read_text())
  # Each prompt's own samples (rows gathered from both hosts in order): the policy sums two digits well (measured:
  # avg@2 1.0, the completions those of one device), so rows out of place would show as wrong answers.
  assert res['num_prompts'] == 3 and [len(r['completions']) for r in res['records']] == [2, 2, 2]
  assert res['parse_rate'] == 1.0 and res['avg@k'] >= 0.5, res['records']
