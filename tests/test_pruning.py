# coding=utf-8
"""Gradual magnitude pruning (pruning.py).

  * the cubic schedule against hand-computed values (Zhu & Gupta, eq. 1);
  * a pruning step zeroes exactly floor(s * n) weights of every pruned
    tensor, the smallest in magnitude (numpy sort), keeps earlier pruned
    weights pruned, and leaves biases and unpruned modules bit-identical;
  * 100 AdamW updates with weight decay through the learner keep every
    pruned weight (online and target) and its Adam moments exactly zero;
  * the agent prunes on schedule: each logged sparsity is the schedule's
    value at that agent step, floored per tensor, under both reset rules
    ('keep' carries the masks through a reset, 'regrow' makes it dense and
    waits one pruning period before pruning again);
  * the MinAtar pruning files run through Dopamine's train binary.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import networks
from bbf_dopamine import optimizers
from bbf_dopamine import pruning
from test_learner import _batch
from test_learner import ACTIONS
from test_learner import JUMPS
from test_learner import STACK
from test_end_to_end import load_checkpoint
from test_end_to_end import tensorboard_tags
from test_moe import MINATAR_DIR
from test_minatar import train_minatar


def test_schedule_by_hand():
  # s_f = 0.9 from t0 = 20 to t1 = 80: s(50) = 0.9 (1 - 0.5^3) = 0.7875.
  at = functools.partial(pruning.sparsity_at, start=20, end=80, target=0.9)
  assert at(0) == 0.0 and at(19) == 0.0 and at(20) == 0.0
  assert at(50) == pytest.approx(0.7875)
  assert at(35) == pytest.approx(0.9 * (1 - 0.75 ** 3))
  assert at(80) == 0.9 and at(1000) == 0.9
  assert pruning.sparsity_at(50, 20, 80, 0.0) == 0.0


def _state(layers):
  net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                            hidden_dim=32)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, STACK)))
  optimizer = optimizers.create_scaling_optimizer(learning_rate=1e-3,
                                                  encoder_learning_rate=1e-3,
                                                  weight_decay=0.1)
  state = learner.initial_state(params, optimizer, jax.random.PRNGKey(1),
                                masks=pruning.initial_masks(params, layers))
  config = learner.LearnerConfig(network=net, optimizer=optimizer,
                                 stack_size=STACK, jumps=JUMPS)
  return state, config


def _by_key(tree):
  return {networks.parameter_key(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_prune_step_by_hand():
  layers = ('encoder', 'projection', 'head')
  state, _ = _state(layers)
  before = _by_key(state.online_params)
  state = pruning.prune(state, pruning.num_pruned(state.masks, 0.5))
  first = _by_key(state.online_params)
  state = pruning.prune(state, pruning.num_pruned(state.masks, 0.8))
  after = _by_key(state.online_params)
  target = _by_key(state.target_params)
  pruned = 0
  for key, old in before.items():
    new = after[key]
    np.testing.assert_array_equal(target[key], new)  # same mask on target
    if key[0] not in layers or old.ndim < 2:
      np.testing.assert_array_equal(new, old, str(key))  # untouched
      continue
    n = old.size
    zeros = int(np.floor(0.8 * n))
    assert np.sum(new == 0) == zeros, key
    # The kept weights are the largest |w| and unchanged.
    kept = new != 0
    np.testing.assert_array_equal(new[kept], old[kept])
    assert np.abs(old[kept]).min() >= np.abs(old[~kept]).max()
    # Weights pruned at 50% stay pruned at 80%.
    assert np.all(new[first[key] == 0] == 0)
    assert np.sum(first[key] == 0) == int(np.floor(0.5 * n))
    pruned += 1
  assert pruned >= 10
  values = pruning.sparsities(state.masks)
  assert set(values) >= {'encoder', 'projection', 'head', 'all'}
  assert 'transition_model' not in values
  assert values['projection/kernel'] == (
      np.floor(0.8 * before[('projection', 'kernel')].size) /
      before[('projection', 'kernel')].size)


def test_pruned_weights_stay_zero_under_adamw():
  layers = networks.MODULE_NAMES
  state, config = _state(layers)
  state = pruning.prune(state, pruning.num_pruned(state.masks, 0.9))
  masks = _by_key(state.masks)
  start = _by_key(state.online_params)
  for step in range(100):  # one minibatch per call: 100 AdamW updates
    state, metrics, _ = learner.train(state, _batch(step), jnp.int32(3),
                                      jnp.float32(0.97), config=config)
  assert np.all(np.isfinite(np.asarray(metrics['Loss'])))
  online, target = _by_key(state.online_params), _by_key(state.target_params)
  changed = 0
  for key, mask in masks.items():
    if mask.ndim == 0:
      continue
    assert np.all(online[key][mask == 0] == 0), key
    assert np.all(target[key][mask == 0] == 0), key
    changed += not np.array_equal(online[key][mask == 1],
                                  start[key][mask == 1])
  assert changed == sum(m.ndim > 0 for m in masks.values())  # all trained
  # Adam's moments of pruned weights are zero.
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state):
    key = networks.parameter_key(path)
    if key is None or masks[key].ndim == 0:
      continue
    assert np.all(np.asarray(leaf)[masks[key] == 0] == 0), key


def _pruning_agent(**kwargs):
  net = functools.partial(networks.BBFNetwork, width_scale=0.25,
                          hidden_dim=16)
  settings = dict(
      num_actions=3, observation_shape=(12, 12), network=net, seed=0,
      min_replay_history=20, replay_ratio=32, batch_size=16,
      batches_to_group=2, jumps=2, replay_capacity=500, reset_every=50,
      no_resets_after=100, diagnostics_every=0, target_sparsity=0.9,
      pruning_start=0.2, pruning_end=0.8, pruning_total_steps=100,
      pruning_frequency=8, prune_layers='encoder,projection,head')
  settings.update(kwargs)
  agent = agent_lib.BBFAgent(**settings)
  logged, at_reset = [], []
  agent._write_scalars = lambda values, step: logged.append(  # pylint: disable=protected-access
      (agent.training_steps, values))
  reset_networks = agent.reset_networks

  def record_reset():
    reset_networks()
    state = agent._state  # pylint: disable=protected-access
    at_reset.append((_by_key(state.online_params), _by_key(state.masks)))
  agent.reset_networks = record_reset
  return agent, logged, at_reset


def _run(agent, steps):
  rng = np.random.default_rng(0)
  agent.begin_episode(rng.integers(0, 256, (12, 12)))
  for _ in range(steps - 1):
    agent.step(0.0, rng.integers(0, 256, (12, 12)))


@pytest.mark.parametrize('rule', pruning.RESET_RULES)
def test_agent_prunes_on_schedule(rule):
  """Both reset rules prune on the same schedule; 'keep' carries the masks
  through the reset at agent step 50, 'regrow' leaves it dense and the next
  scheduled step (52) prunes the retrained weights from scratch."""
  agent, logged, at_reset = _pruning_agent(pruning_on_reset=rule)
  sizes = {networks.parameter_key(p): m.size for p, m in
           jax.tree_util.tree_leaves_with_path(agent._state.masks)  # pylint: disable=protected-access
           if m.ndim}
  _run(agent, 100)
  assert agent.training_steps == 100 and agent.num_resets == 1
  prunes = [(t, v) for t, v in logged if 'Plasticity/Sparsity/all' in v]
  steps = [t for t, _ in prunes]
  # Every 8 gradient steps (4 agent steps) from agent step 20 to 80; at 20
  # the schedule's sparsity is still 0.
  assert steps == list(range(24, 81, 4)), steps
  for t, values in prunes:
    s = pruning.sparsity_at(t, 20, 80, 0.9)
    for key, n in sizes.items():
      assert values['Plasticity/Sparsity/' + '/'.join(key)] == (
          np.floor(s * n) / n), (t, key)
  # Right after the reset (the last pruning step was at 48).
  (params, masks), = at_reset
  kept = np.floor(pruning.sparsity_at(48, 20, 80, 0.9) * np.array(
      list(sizes.values())))
  zeros = [np.sum(params[key] == 0) for key in sizes]
  mask_zeros = [np.sum(masks[key] == 0) for key in sizes]
  if rule == 'keep':
    assert zeros == mask_zeros == list(kept)
  else:
    assert zeros == mask_zeros == [0] * len(sizes)
  # At the end: 90% per tensor; biases and the transition model dense.
  final = _by_key(agent.online_params)
  for key, n in sizes.items():
    assert np.sum(final[key] == 0) == np.floor(0.9 * n), key
  assert np.all(final[('transition_model', 'Conv_0', 'kernel')] != 0)


def test_regrown_network_trains_a_period_before_it_is_pruned_again():
  """A reset after the schedule's end: 'regrow' prunes to the target one
  pruning period later (agent step 52), not at the reset's first gradient
  step, so the fresh weights' magnitudes mean something; 'keep' has
  nothing left to prune."""
  prunes = {}
  for rule in pruning.RESET_RULES:
    agent, logged, _ = _pruning_agent(pruning_on_reset=rule, pruning_end=0.4)
    _run(agent, 60)
    prunes[rule] = [(t, v['Plasticity/Sparsity/encoder']) for t, v in logged
                    if 'Plasticity/Sparsity/all' in v]
    assert agent.num_resets == 1
  before = [t for t, _ in prunes['keep']]
  assert before == list(range(24, 37, 4)) + [40], before
  assert prunes['regrow'][:len(before)] == prunes['keep']
  (t, encoder), = prunes['regrow'][len(before):]
  assert t == 52 and encoder == pytest.approx(0.9, abs=0.01), (t, encoder)


def test_pruner_waits_after_a_regrowing_reset_and_checkpoints_it():
  """Pruner's clock, by hand: past t_1 (agent step 80) a regrown network is
  pruned only when a period of 10 gradient steps ends, and a checkpoint
  taken in between (bundle / unbundle) keeps that wait."""
  def pruner(rule):
    return pruning.Pruner(0.9, 0.2, 0.8, 10, 'encoder', 100, on_reset=rule)
  keep, regrow = pruner('keep'), pruner('regrow')
  for p in (keep, regrow):
    p.pruned(0.9)
    p.reset()
  assert (keep.applied, keep.regrown) == (0.9, False)
  assert (regrow.applied, regrow.regrown) == (0.0, True)
  # Gradient steps 21 -> 22 end no period; 29 -> 30 end one.
  assert keep.due(21, 22, 85) is None
  assert regrow.due(21, 22, 85) is None
  restored = pruner('regrow')
  restored.unbundle(regrow.bundle())
  assert restored.due(21, 22, 85) is None
  assert restored.due(29, 30, 85) == 0.9
  # A checkpoint from before the rule existed: no wait pending.
  old = pruner('regrow')
  old.unbundle({'applied': 0.0})
  assert old.due(21, 22, 85) == 0.9


@pytest.mark.parametrize('sparsity, no_resets_after, warns', [
    (0.9, 100_000, True), (0.9, 40_000, True), (0.9, 0, False),
    # A reset needs a whole interval after it (schedules.is_reset_step).
    (0.9, 39_999, False), (0.0, 100_000, False)])
def test_pruning_with_resets_is_warned_about(sparsity, no_resets_after, warns,
                                             caplog):
  pruner = pruning.Pruner(sparsity, 0.2, 0.8, 1000, 'encoder', 100_000)
  with caplog.at_level('WARNING'):
    pruner.warn_about_resets(20_000, no_resets_after)
  assert ('collapsed at the reset' in caplog.text) == warns, caplog.text


@pytest.mark.parametrize('kwargs, match', [
    (dict(target_sparsity=1.0), 'target_sparsity'),
    (dict(target_sparsity=0.9, pruning_start=0.8, pruning_end=0.2),
     'pruning_start'),
    (dict(target_sparsity=0.9, pruning_frequency=0), 'pruning_frequency'),
    (dict(target_sparsity=0.9, prune_layers='encoder,torso'), 'prune_layers'),
    (dict(target_sparsity=0.9, pruning_on_reset='densify'),
     'pruning_on_reset'),
])
def test_bad_values_name_the_parameter(kwargs, match):
  net = functools.partial(networks.BBFNetwork, width_scale=0.25,
                          hidden_dim=16)
  with pytest.raises(ValueError, match=match):
    agent_lib.BBFAgent(num_actions=3, observation_shape=(12, 12),
                       network=net, **kwargs)


@pytest.mark.parametrize('name, sparsity', [('bbf_prune90.gin', 0.9),
                                            ('bbf_prune95.gin', 0.95)])
def test_minatar_file_trains_through_the_train_binary(name, sparsity,
                                                      tmp_path):
  """Pruning inside a real run: on schedule by its end, masks and per-layer
  sparsity in the checkpoint and TensorBoard."""
  final = train_minatar(tmp_path, MINATAR_DIR / name, [
      'Atari100kRunner.num_iterations = 1',
      'Atari100kRunner.training_steps = 150',
      'BBFAgent.batches_to_group = 1',
      # Training from agent step 101; pruning from 30 to 120, every 10
      # gradient steps: 2 steps on the way, the target at 120.
      'BBFAgent.pruning_total_steps = 150',
      'BBFAgent.pruning_frequency = 10'])
  assert final['domain'] == 'minatar' and final['env_steps'] == 150
  tags = tensorboard_tags(str(tmp_path))
  for tag in ('Plasticity/Sparsity/all', 'Plasticity/Sparsity/encoder',
              'Plasticity/Sparsity/head/advantage/kernel'):
    assert tag in tags, (tag, sorted(tags))
  bundle = load_checkpoint(str(tmp_path), 150)
  assert bundle['pruning']['applied'] == sparsity
  state = bundle['train_state']
  for path, mask in jax.tree_util.tree_leaves_with_path(state.masks):
    weight = _by_key(state.online_params)[networks.parameter_key(path)]
    if mask.ndim:
      assert np.sum(weight == 0) == np.floor(sparsity * mask.size), path
      assert np.all(weight[mask == 0] == 0)
