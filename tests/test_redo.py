# coding=utf-8
"""ReDo (redo.py) against a by-hand recycling of the same parameters.

Dormancy is recomputed here from the network's raw layer outputs (flax's
captured intermediates, numpy scores); the expected parameters and Adam
moments are built by indexing numpy copies. Checks: exactly the dormant
neurons' incoming weights are fresh, their outgoing weights and the moments
of both are zero, every other parameter and moment is bit-identical, and a
recycled network computes the same Q values when the recycled neurons were
dead. The MinAtar ReDo files run through Dopamine's train binary.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import networks
from bbf_dopamine import optimizers
from bbf_dopamine import redo
from test_end_to_end import load_checkpoint
from test_end_to_end import tensorboard_tags
from test_moe import MINATAR_DIR
from test_minatar import train_minatar

ACTIONS, STACK, BATCH = 3, 2, 32


def _numpy(tree):
  return jax.tree_util.tree_map(np.array, tree)


def _setup(encoder_type, size):
  net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                            hidden_dim=16, encoder_type=encoder_type)
  dummy = jnp.zeros((1, size, size, STACK))
  params = _numpy(net.init(jax.random.PRNGKey(0), dummy))
  fresh = _numpy(net.init(jax.random.PRNGKey(1), dummy))
  tree = params['params']
  # Dead neurons (output 0 on every input) in each recyclable layer kind.
  tree['projection']['bias'][[0, 5]] = -1e3
  if encoder_type == 'impala':
    tree['encoder']['ResidualBlock_1']['Conv_0']['bias'][1] = -1e3
  else:
    tree['encoder']['Conv_0']['bias'][2] = -1e3
  optimizer = optimizers.create_scaling_optimizer()
  opt_state = optimizer.init(params)
  rng = np.random.default_rng(0)
  for _ in range(3):  # non-zero moments everywhere
    grads = jax.tree_util.tree_map(
        lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    _, opt_state = optimizer.update(grads, opt_state, params)
  states = rng.integers(0, 256, (BATCH, size, size, STACK), dtype=np.uint8)
  return net, params, fresh, _numpy(opt_state), states


def _scores(h):
  """Sokar et al. (2023), definition 3.1, in numpy."""
  mean_abs = np.abs(h).reshape(-1, h.shape[-1]).mean(axis=0)
  return mean_abs / mean_abs.mean()


def _expected_dormant(net, params, states, tau):
  """{(incoming keys, outgoing (key, axis)): dormant (units,) bool}."""
  x = jnp.asarray(states, jnp.float32) / 255.0
  latent, captured = net.apply(params, x, method=net.encode,
                               capture_intermediates=True,
                               mutable=['intermediates'])
  encoder = captured['intermediates']['encoder']
  out = {}
  if net.encoder_type == 'impala':
    for i in range(6):  # 3 stages x 2 blocks
      block = ('encoder', f'ResidualBlock_{i}')
      h = np.maximum(np.asarray(
          encoder[f'ResidualBlock_{i}']['Conv_0']['__call__'][0]), 0)
      out[((block + ('Conv_0', 'kernel'), block + ('Conv_0', 'bias')),
           ((block + ('Conv_1', 'kernel'), 2),))] = _scores(h) <= tau
  else:
    for k in (0, 1):
      h = np.maximum(np.asarray(encoder[f'Conv_{k}']['__call__'][0]), 0)
      out[((('encoder', f'Conv_{k}', 'kernel'),
            ('encoder', f'Conv_{k}', 'bias')),
           ((('encoder', f'Conv_{k + 1}', 'kernel'), 2),))] = (
               _scores(h) <= tau)
  tree = params['params']
  flat = np.asarray(latent).reshape(BATCH, -1)
  h = np.maximum(flat @ tree['projection']['kernel'] +
                 tree['projection']['bias'], 0)
  out[((('projection', 'kernel'), ('projection', 'bias')),
       ((('head', 'advantage', 'kernel'), 0), (('head', 'value', 'kernel'), 0),
        (('predictor', 'kernel'), 0)))] = _scores(h) <= tau
  return out


def _get(tree, key):
  for k in key:
    tree = tree[k]
  return tree


def _index(ndim, axis, mask):
  index = [slice(None)] * ndim
  index[axis] = mask
  return tuple(index)


def _expected(params, fresh, dormant):
  """Recycles a numpy copy by hand: fresh incoming, zero outgoing weights."""
  params = _numpy(params)
  edited = set()
  for (incoming, outgoing), mask in dormant.items():
    for key in incoming:
      leaf = _get(params['params'], key)
      index = _index(leaf.ndim, leaf.ndim - 1, mask)
      leaf[index] = _get(fresh['params'], key)[index]
      edited.add(key)
    for key, axis in outgoing:
      leaf = _get(params['params'], key)
      leaf[_index(leaf.ndim, axis, mask)] = 0.0
      edited.add(key)
  return params, edited


def _moment_trees(opt_state):
  """The Adam mu / nu parameter trees inside the optimiser state."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state):
    names = [getattr(p, 'name', getattr(p, 'key', None)) for p in path]
    found.append((tuple(names), leaf))
  return found


@pytest.mark.parametrize('encoder_type, size', [('impala', 12),
                                                ('nature', 36)])
def test_recycles_exactly_the_dormant_neurons(encoder_type, size):
  tau = 0.1
  net, params, fresh, opt_state, states = _setup(encoder_type, size)
  dormant = _expected_dormant(net, params, states, tau)
  # The planted dead neurons are among the dormant ones.
  layers = list(dormant.values())
  assert layers[-1][0] and layers[-1][5]
  assert sum(m.sum() for m in layers) >= 4
  new_params, new_opt, fractions = redo.recycle_dormant(
      net, params, fresh, opt_state, states, jnp.float32(tau),
      ('encoder', 'projection'))
  expected, edited = _expected(params, fresh, dormant)

  # Parameters: the by-hand recycling, bit for bit.
  got = dict(jax.tree_util.tree_leaves_with_path(new_params))
  for path, want in jax.tree_util.tree_leaves_with_path(expected):
    np.testing.assert_array_equal(np.asarray(got[path]), want, str(path))
  total = sum(m.size for m in layers)
  np.testing.assert_allclose(float(fractions['all']),
                             sum(m.sum() for m in layers) / total, rtol=1e-6)
  np.testing.assert_allclose(float(fractions['projection']),
                             layers[-1].mean(), rtol=1e-6)

  # Moments: zero where a parameter was recycled, unchanged elsewhere;
  # step counts unchanged.
  old = dict(_moment_trees(opt_state))
  checked = 0
  for names, leaf in _moment_trees(new_opt):
    leaf, before = np.asarray(leaf), np.asarray(old[names])
    if 'params' not in names:
      np.testing.assert_array_equal(leaf, before)  # count
      continue
    key = names[names.index('params') + 1:]
    if key not in edited:
      np.testing.assert_array_equal(leaf, before, str(names))
      continue
    zero = np.zeros(leaf.shape, bool)
    for (incoming, outgoing), mask in dormant.items():
      if key in incoming:
        zero[_index(leaf.ndim, leaf.ndim - 1, mask)] = True
      for k, axis in outgoing:
        if k == key:
          zero[_index(leaf.ndim, axis, mask)] = True
    assert np.all(leaf[zero] == 0), names
    np.testing.assert_array_equal(leaf[~zero], before[~zero], str(names))
    assert np.all(before[zero] != 0)  # they were not zero already
    checked += 1
  assert checked >= 2 * len(edited)  # mu and nu of every edited tensor


def test_dead_neurons_recycled_leave_the_q_values_unchanged():
  """tau = 0 recycles only dead neurons; zeroed outgoing weights keep Q."""
  net, params, fresh, opt_state, states = _setup('impala', 12)
  x = jnp.asarray(states, jnp.float32) / 255.0
  q = lambda p: net.apply(p, net.apply(p, x, method=net.encode),
                          method=net.q_logits)
  new_params, _, fractions = redo.recycle_dormant(
      net, params, fresh, opt_state, states, jnp.float32(0.0),
      ('encoder', 'projection'))
  assert float(fractions['projection']) >= 2 / 16  # the planted, at least
  assert not np.array_equal(new_params['params']['projection']['kernel'],
                            params['params']['projection']['kernel'])
  np.testing.assert_allclose(q(new_params), q(params), rtol=1e-5, atol=1e-5)


def test_layer_groups():
  net, params, _, _, _ = _setup('impala', 12)
  spec = redo.recyclable_layers(net, params, ('encoder',))
  assert sorted(spec) == sorted(f'encoder_block{i}_conv0' for i in range(6))
  spec = redo.recyclable_layers(net, params, ('projection',))
  assert list(spec) == ['projection']


@pytest.mark.parametrize('kwargs, match', [
    (dict(redo_every=10, redo_layers='encoder,head'), 'ReDo layers'),
    (dict(redo_every=10, redo_tau=-0.1), 'redo_tau'),
    (dict(redo_every=-1), 'redo_every'),
])
def test_bad_values_name_the_parameter(kwargs, match):
  net = functools.partial(networks.BBFNetwork, width_scale=0.25,
                          hidden_dim=16)
  with pytest.raises(ValueError, match=match):
    agent_lib.BBFAgent(num_actions=3, observation_shape=(12, 12),
                       network=net, **kwargs)


def test_softmoe_projection_cannot_be_recycled():
  net = functools.partial(networks.BBFNetwork, width_scale=0.25,
                          head_type='softmoe', num_experts=2,
                          expert_width=8)
  with pytest.raises(ValueError, match="head_type='dense'"):
    agent_lib.BBFAgent(num_actions=3, observation_shape=(12, 12),
                       network=net, redo_every=10)
  # The encoder alone is fine.
  agent_lib.BBFAgent(num_actions=3, observation_shape=(12, 12), network=net,
                     redo_every=10, redo_layers='encoder')


@pytest.mark.parametrize('name', ['bbf_redo.gin', 'bbf_redo_no_resets.gin'])
def test_minatar_file_trains_through_the_train_binary(name, tmp_path):
  """A few recyclings in a real run; their fractions reach TensorBoard and
  the ReDo RNG the checkpoint."""
  final = train_minatar(tmp_path, MINATAR_DIR / name, [
      'Atari100kRunner.num_iterations = 1',
      'Atari100kRunner.training_steps = 150',
      'BBFAgent.batches_to_group = 1',
      'BBFAgent.redo_every = 25'])  # gradient steps from agent step 101
  assert final['domain'] == 'minatar' and final['env_steps'] == 150
  tags = tensorboard_tags(str(tmp_path))
  for tag in ('Plasticity/Recycled/all', 'Plasticity/Recycled/projection',
              'Plasticity/Recycled/encoder_block0_conv0',
              'Plasticity/Recycled/encoder_block3_conv0'):
    assert tag in tags, (tag, sorted(tags))
  bundle = load_checkpoint(str(tmp_path), 150)
  assert 'rng' in bundle['redo']
