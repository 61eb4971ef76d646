# coding=utf-8
"""Shrink-and-perturb resets of parameters and optimiser state.

`resets.shrink_perturb` is checked leaf by leaf against numpy on a hand-made
tree; `BBFAgent.reset_networks` against a re-computation from the agent's own
reset key stream; the optimiser-state reset against the Adam moments and step
counts read directly out of optax's state structure.
"""

import functools

import jax
import numpy as np
import optax
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import networks
from bbf_dopamine import optimizers
from bbf_dopamine import resets

SHRUNK = ('encoder', 'transition_model')
REINITIALISED = ('projection', 'predictor', 'head')


def _tree(rng):
  leaf = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {'params': {
      'encoder': {'Conv_0': {'kernel': leaf(3, 3, 4, 2), 'bias': leaf(2)},
                  'ResidualBlock_0': {'Conv_0': {'kernel': leaf(3, 3, 2, 2)}}},
      'transition_model': {'Conv_0': {'kernel': leaf(3, 3, 6, 2),
                                      'bias': leaf(2)}},
      'projection': {'kernel': leaf(8, 5), 'bias': leaf(5)},
      'predictor': {'kernel': leaf(5, 5), 'bias': leaf(5)},
      # Submodule names inside a module must not matter.
      'head': {'advantage': {'kernel': leaf(5, 6)},
               'value': {'kernel': leaf(5, 3), 'bias': leaf(3)}},
  }}


def _module_leaves(tree):
  """{(module, path string): leaf} for a {'params': {module: ...}} tree."""
  out = {}
  for module, sub in tree['params'].items():
    for path, leaf in jax.tree_util.tree_leaves_with_path(sub):
      out[(module, jax.tree_util.keystr(path))] = np.asarray(leaf)
  return out


@pytest.mark.parametrize('keys, shrink, perturb', [
    (SHRUNK, 0.5, 0.5),
    (SHRUNK, 0.8, 0.2),
    (('head',), 0.3, 0.6),
    ((), 0.5, 0.5),
])
def test_shrink_perturb_leaf_by_leaf(keys, shrink, perturb):
  rng = np.random.default_rng(0)
  old, fresh = _tree(rng), _tree(rng)
  out = resets.shrink_perturb(old, fresh, keys, shrink, perturb)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(
      old)
  old_l, fresh_l, out_l = map(_module_leaves, (old, fresh, out))
  assert len(out_l) == 12
  for name, value in out_l.items():
    if name[0] in keys:
      np.testing.assert_allclose(
          value, shrink * old_l[name] + perturb * fresh_l[name], rtol=1e-6,
          err_msg=str(name))
    else:
      np.testing.assert_array_equal(value, fresh_l[name], err_msg=str(name))


def _tiny_agent(**kwargs):
  return agent_lib.BBFAgent(
      num_actions=4,
      network=functools.partial(networks.BBFNetwork, width_scale=0.25,
                                hidden_dim=32),
      replay_capacity=1000,
      min_replay_history=10,
      **kwargs)


def _adam_states(opt_state):
  """{partition label: optax ScaleByAdamState} of the scaling optimiser.

  create_scaling_optimizer = multi_transform({'encoder': adamw, 'head':
  adamw}); each adamw is chain(scale_by_adam, add_decayed_weights, scale).
  """
  out = {}
  for label in ('encoder', 'head'):
    adam = opt_state.inner_states[label].inner_state[0]
    assert isinstance(adam, optax.ScaleByAdamState)
    out[label] = adam
  return out


def _moments(opt_state):
  """{(module, 'mu' | 'nu', path): leaf} over both partitions."""
  out = {}
  for label, adam in _adam_states(opt_state).items():
    for moment in ('mu', 'nu'):
      for module, sub in getattr(adam, moment)['params'].items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(sub):
          # Each module's moments live in exactly one partition.
          assert (module in optimizers.ENCODER_MODULES) == (
              label == 'encoder')
          out[(module, moment, jax.tree_util.keystr(path))] = np.asarray(leaf)
  return out


def _counts(opt_state):
  return {label: int(adam.count)
          for label, adam in _adam_states(opt_state).items()}


def _train_optimizer(agent, steps=3, seed=1):
  """A few real optimiser steps with random gradients; perturbed target."""
  rng = np.random.default_rng(seed)
  noise = lambda tree, scale: jax.tree_util.tree_map(
      lambda p: (scale * rng.normal(size=p.shape)).astype(np.float32), tree)
  update = jax.jit(agent.optimizer.update)
  params, opt_state = agent.online_params, agent.optimizer_state
  for _ in range(steps):
    updates, opt_state = update(noise(params, 1.0), opt_state, params)
    params = optax.apply_updates(params, updates)
  target = jax.tree_util.tree_map(lambda p, n: p + n, params,
                                  noise(params, 0.01))
  agent._state = agent._state._replace(  # pylint: disable=protected-access
      online_params=params, target_params=target, opt_state=opt_state)
  # All five modules have non-zero moments now; the counts are `steps`.
  moments = _moments(opt_state)
  assert {name[0] for name in moments} == set(networks.MODULE_NAMES)
  assert all(np.abs(v).max() > 0 for v in moments.values())
  assert _counts(opt_state) == {'encoder': steps, 'head': steps}


@pytest.fixture(scope='module')
def agent():
  return _tiny_agent()


def test_agent_reset_networks(agent):
  _train_optimizer(agent)
  old_online = _module_leaves(agent.online_params)
  old_target = _module_leaves(agent.target_network_params)
  old_moments = _moments(agent.optimizer_state)
  old_counts = _counts(agent.optimizer_state)
  # The agent draws (new reset key, online key, target key) from _reset_rng.
  next_rng, key_online, key_target = jax.random.split(
      agent._reset_rng, 3)  # pylint: disable=protected-access
  fresh_online = _module_leaves(agent._init_params(key_online))  # pylint: disable=protected-access
  fresh_target = _module_leaves(agent._init_params(key_target))  # pylint: disable=protected-access

  agent.reset_networks()

  np.testing.assert_array_equal(
      np.asarray(agent._reset_rng), np.asarray(next_rng))  # pylint: disable=protected-access
  assert agent.num_resets == 1
  # The two fresh draws are different networks (biases start at zero).
  kernels = [name for name in fresh_online if fresh_online[name].ndim > 1]
  assert len(kernels) == 15 + 2 + 1 + 1 + 2  # encoder, TM, proj, pred, head
  for name in kernels:
    assert not np.allclose(fresh_online[name], fresh_target[name]), name

  for new, old, fresh in (
      (_module_leaves(agent.online_params), old_online, fresh_online),
      (_module_leaves(agent.target_network_params), old_target,
       fresh_target)):
    assert new.keys() == old.keys() == fresh.keys()
    assert {name[0] for name in new} == set(networks.MODULE_NAMES)
    for name, value in new.items():
      if name[0] in SHRUNK:
        expected = 0.5 * old[name] + 0.5 * fresh[name]
      else:
        expected = fresh[name]
      np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7,
                                 err_msg=str(name))

  # Optimiser: shrunk modules keep their moments, re-initialised modules
  # start from zero moments, and both step counts are kept.
  new_moments = _moments(agent.optimizer_state)
  assert new_moments.keys() == old_moments.keys()
  for name, value in new_moments.items():
    if name[0] in SHRUNK:
      np.testing.assert_array_equal(value, old_moments[name], str(name))
    else:
      assert name[0] in REINITIALISED
      np.testing.assert_array_equal(value, np.zeros_like(value), str(name))
  assert _counts(agent.optimizer_state) == old_counts == {'encoder': 3,
                                                          'head': 3}
  # Nothing else hides in the optimiser state.
  assert len(jax.tree_util.tree_leaves(agent.optimizer_state)) == (
      len(new_moments) + 2)


def test_agent_reset_networks_legacy_optimizer_reset():
  agent = _tiny_agent(legacy_optimizer_reset=True)
  _train_optimizer(agent)
  agent.reset_networks()
  leaves = jax.tree_util.tree_leaves(agent.optimizer_state)
  assert len(leaves) == len(_moments(agent.optimizer_state)) + 2
  for leaf in leaves:
    np.testing.assert_array_equal(np.asarray(leaf), 0)
  assert _counts(agent.optimizer_state) == {'encoder': 0, 'head': 0}


@pytest.mark.parametrize('keys', [
    SHRUNK,
    ('encoder',),
    ('transition_model',),
    ('transition_model', 'head'),
    ('projection', 'predictor', 'head'),
    (),
])
def test_reset_optimizer_state_per_module(agent, keys):
  # The optax partitions are labelled 'encoder' and 'head', like two of the
  # modules; which moments survive must depend on the module alone.
  optimizer = optimizers.create_scaling_optimizer()
  params = agent.online_params
  rng = np.random.default_rng(2)
  state = optimizer.init(params)
  update = jax.jit(optimizer.update)
  for _ in range(2):
    grads = jax.tree_util.tree_map(
        lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    _, state = update(grads, state, params)
  before = _moments(state)
  out = resets.reset_optimizer_state(state, keys)
  after = _moments(out)
  for name, value in after.items():
    expected = before[name] if name[0] in keys else np.zeros_like(value)
    np.testing.assert_array_equal(value, expected, str(name))
  assert _counts(out) == {'encoder': 2, 'head': 2}
  legacy = resets.reset_optimizer_state(state, keys, legacy=True)
  for leaf in jax.tree_util.tree_leaves(legacy):
    np.testing.assert_array_equal(np.asarray(leaf), 0)
