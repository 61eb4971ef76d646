# coding=utf-8
"""The jitted gradient step against a plain re-computation of BBF's loss.

The reference builds states, n-step targets and the C51 target with Dopamine's
own `project_distribution`, in numpy / unjitted code, from the raw window.
"""

import functools

from dopamine.jax.agents.rainbow import rainbow_agent
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbf_dopamine import learner
from bbf_dopamine import networks

STACK, JUMPS, HORIZON, BATCH, ACTIONS = 4, 2, 4, 3, 3
WINDOW = STACK - 1 + HORIZON + 1


def _batch(seed):
  rng = np.random.default_rng(seed)
  episode_ends = np.zeros((1, BATCH, WINDOW), np.uint8)
  terminals = np.zeros((1, BATCH, HORIZON), np.float32)
  episode_ends[0, 1, 1] = 1  # sample 1: the stack of s_t starts mid-window
  terminals[0, 2, 1] = 1  # sample 2: terminal after a_{t+1}
  episode_ends[0, 2, STACK - 1 + 1] = 1
  return learner.Batch(
      frames=rng.integers(0, 256, (1, BATCH, WINDOW, 84, 84), np.uint8),
      episode_ends=episode_ends,
      actions=rng.integers(0, ACTIONS, (1, BATCH, HORIZON)).astype(np.int32),
      rewards=rng.normal(size=(1, BATCH, HORIZON)).astype(np.float32),
      terminals=terminals,
      probabilities=np.full((1, BATCH), 0.1, np.float32))


def _stack(frames, ends, p):
  """Brute-force stack of s_{t+p}: zero frames from before an episode end."""
  out = np.zeros((84, 84, STACK), np.float32)
  for j in range(STACK):
    i = p + j
    if all(ends[m] == 0 for m in range(i, p + STACK - 1)):
      out[..., j] = frames[i]
  return out / 255.0


@pytest.mark.parametrize('legacy', [False, True])
def test_dqn_loss_matches_reference(legacy):
  net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                            hidden_dim=16)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, STACK)))
  target = net.init(jax.random.PRNGKey(1), jnp.zeros((1, 84, 84, STACK)))
  optimizer = optax.sgd(0.0)
  config = learner.LearnerConfig(
      network=net, optimizer=optimizer, stack_size=STACK, jumps=JUMPS,
      spr_weight=0.0, data_augmentation=False, legacy_nstep=legacy)
  state = learner.TrainState(params, target, optimizer.init(params),
                             jax.random.PRNGKey(2))
  batch = _batch(3)
  n, gamma = 3, 0.9
  # Copy before the call: `train` donates its state argument.
  params_np = jax.tree_util.tree_map(np.array, params)
  target_np = jax.tree_util.tree_map(np.array, target)
  _, metrics, priorities = learner.train(state, batch, jnp.int32(n),
                                         jnp.float32(gamma), config=config)

  support = np.linspace(-10, 10, 51)
  q_apply = lambda p, x: net.apply(p, net.apply(p, x[None], method=net.encode),
                                   method=net.q_logits)[0]
  losses = []
  for b in range(BATCH):
    frames = batch.frames[0, b]
    ends = batch.episode_ends[0, b]
    rewards, dones = batch.rewards[0, b], batch.terminals[0, b]
    ret, alive = 0.0, 1.0
    for k in range(n):
      ret += gamma ** k * rewards[k] * alive
      alive *= 1 - dones[k]
    checked = n - 1 if legacy else n
    discount = gamma ** n * np.prod(1 - dones[:checked])
    boot = _stack(frames, ends, n - 1 if legacy else n)
    online_q = (jax.nn.softmax(q_apply(params_np, boot)) * support).sum(-1)
    next_action = int(np.argmax(online_q))
    probs = jax.nn.softmax(q_apply(target_np, boot)[next_action])
    projected = rainbow_agent.project_distribution(
        ret + discount * support, probs, support)
    logits = q_apply(params_np, _stack(frames, ends, 0))[
        batch.actions[0, b, 0]]
    losses.append(-np.sum(np.asarray(projected) *
                          np.asarray(jax.nn.log_softmax(logits))))
  np.testing.assert_allclose(metrics['DQNLoss'][0], np.mean(losses),
                             rtol=1e-4)
  np.testing.assert_allclose(priorities[0], np.sqrt(np.array(losses) + 1e-10),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics['Loss'][0], np.mean(losses), rtol=1e-4)


def test_ema_target_and_no_retrace():
  net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                            hidden_dim=16)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, STACK)))
  target = jax.tree_util.tree_map(lambda x: x + 1.0, params)
  optimizer = optax.sgd(0.1)
  config = learner.LearnerConfig(network=net, optimizer=optimizer,
                                 stack_size=STACK, jumps=JUMPS,
                                 target_update_tau=0.25)
  state = learner.TrainState(params, target, optimizer.init(params),
                             jax.random.PRNGKey(2))
  target_np = jax.tree_util.tree_map(np.array, target)
  new_state, _, _ = learner.train(state, _batch(4), jnp.int32(3),
                                  jnp.float32(0.97), config=config)
  expected = jax.tree_util.tree_map(lambda t, o: 0.75 * t + 0.25 * np.asarray(o),
                                    target_np, new_state.online_params)
  jax.tree_util.tree_map(
      functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
      new_state.target_params, expected)
  # Changing n and gamma reuses the compiled step.
  before = learner.train._cache_size()
  for n, gamma in ((1, 0.99), (4, 0.9)):
    new_state, _, _ = learner.train(new_state, _batch(5), jnp.int32(n),
                                    jnp.float32(gamma), config=config)
  assert learner.train._cache_size() == before


def test_half_precision_keeps_losses_and_float32_parameters():
  """bf16 compute changes the loss only at bf16's precision; params stay f32."""
  results = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                              hidden_dim=16, dtype=dtype)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, STACK)))
    optimizer = optax.adam(1e-3)
    config = learner.LearnerConfig(network=net, optimizer=optimizer,
                                   stack_size=STACK, jumps=JUMPS,
                                   data_augmentation=False)
    state = learner.initial_state(params, optimizer, jax.random.PRNGKey(2))
    new_state, metrics, _ = learner.train(state, _batch(6), jnp.int32(3),
                                          jnp.float32(0.97), config=config)
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves(new_state)}
    # Parameters, moments and target in float32 (counts int32, keys uint32).
    assert jnp.dtype(jnp.bfloat16) not in dtypes, dtypes
    assert {x.dtype for x in jax.tree_util.tree_leaves(
        new_state.online_params)} == {jnp.dtype(jnp.float32)}
    results[jnp.dtype(dtype).name] = metrics
  full, half = results['float32'], results['bfloat16']
  for name in ('DQNLoss', 'SPRLoss'):
    np.testing.assert_allclose(half[name], full[name], rtol=3e-2, atol=1e-3)
  assert not np.array_equal(half['SPRLoss'], full['SPRLoss'])
