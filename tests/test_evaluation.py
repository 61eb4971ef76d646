# coding=utf-8
"""Evaluation episodes: counts, no-ops, cuts, life losses and both policies.

A scripted environment whose returns are known in closed form, and two
scripted agents with the same deterministic policy: one drives the batched
path (`eval_actions`), the other Dopamine's `begin_episode` / `step`
contract. Also: BBF's batched greedy actions equal its one-state actions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import evaluation
from bbf_dopamine import learner
from bbf_dopamine import networks

SHAPE = (2, 2)


class Corridor(object):
  """Each step returns reward = action; life lost at step 3; game over at 6.

  The observation's pixels hold the number of steps taken in this game
  (no-ops included), so a policy can read time from its frame stack.
  """

  def __init__(self, length=6, life_loss_at=3):
    self.length, self.life_loss_at = length, life_loss_at
    self.game_over = False
    self.noops = []  # no-ops (action 0 before the first agent step) per game
    self.t = 0

  def _frame(self):
    return np.full(SHAPE + (1,), self.t, np.uint8)

  def reset(self):
    self.t, self.game_over = 0, False
    self.noops.append(0)
    return self._frame()

  def step(self, action):
    if self.t == self.noops[-1] and action == 0:  # `policy` never plays 0
      self.noops[-1] += 1
    self.t += 1
    self.game_over = self.t >= self.length
    terminal = self.game_over or self.t == self.life_loss_at
    return self._frame(), float(action), terminal, {}


def policy(state):
  """1 + (current frame value mod 2) + (1 if the stack was reset else 0)."""
  return 1 + int(state[..., -1].max()) % 2 + int(state[..., 0].max() == 0)


class BatchedAgent(object):
  def __init__(self):
    self.eval_mode = False
    self.state = np.zeros(SHAPE + (4,), np.uint8)
    self.action = 7
    self.seen = []

  def eval_actions(self, states):
    self.seen.append(states.copy())
    return np.asarray([policy(s) for s in states])


class SequentialAgent(object):
  def __init__(self):
    self.eval_mode = False
    self.state = np.zeros((1,) + SHAPE + (4,), np.uint8)
    self._observation = 'training episode in flight'
    self.action = 7

  def begin_episode(self, observation):
    assert self.eval_mode
    self.state = np.zeros_like(self.state)
    return self.step(None, observation)

  def step(self, reward, observation):
    del reward
    self.state = np.roll(self.state, -1, axis=-1)
    self.state[..., -1] = observation[..., 0]
    return policy(self.state[0])


def expected_return(noops, length=6, life_loss_at=3, cut=None):
  """Hand computation with the frame-stack rule of `policy`."""
  total, stack_reset_at = 0, noops
  steps = length - noops if cut is None else min(cut, length - noops)
  for k in range(steps):
    t = noops + k  # frame value the agent sees
    fresh = (t - stack_reset_at) < 3  # stack's oldest slot is still zero
    total += 1 + t % 2 + int(fresh)
    if t + 1 == life_loss_at:
      stack_reset_at = t + 1
  return total


@pytest.mark.parametrize('agent_class', [BatchedAgent, SequentialAgent])
@pytest.mark.parametrize('num_envs', [1, 3, 5])
def test_returns_counts_and_noops(agent_class, num_envs):
  agent = agent_class()
  before = {k: np.copy(v) if isinstance(v, np.ndarray) else v
            for k, v in vars(agent).items() if k != 'seen'}
  envs = [Corridor() for _ in range(num_envs)]
  result = evaluation.evaluate(agent, envs, num_episodes=5,
                               rng=np.random.default_rng(0), max_noops=2)
  noops = [n for env in envs[:5] for n in env.noops]
  assert len(result['returns']) == len(result['lengths']) == 5
  assert len(noops) == 5 and all(0 <= n <= 2 for n in noops)
  # Episodes are listed in the order they started: env by env at first,
  # then whichever env finished first.
  order = sorted(result['returns'])
  want = sorted(expected_return(n) for n in noops)
  assert order == want
  assert sorted(result['lengths']) == sorted(6 - n for n in noops)
  # The training episode in flight and the mode are restored.
  assert agent.eval_mode is False
  for key, value in before.items():
    np.testing.assert_array_equal(getattr(agent, key), value)


def test_noops_follow_the_generator():
  envs = [Corridor(length=50, life_loss_at=100)]
  evaluation.evaluate(BatchedAgent(), envs, num_episodes=4,
                      rng=np.random.default_rng(11), max_noops=30)
  draws = np.random.default_rng(11).integers(0, 31, size=4)
  # Action 0 is never chosen by `policy`, so every 0 step was a no-op.
  assert envs[0].noops == list(draws)


def test_batched_equals_sequential_and_cut():
  results = []
  for agent in (BatchedAgent(), SequentialAgent()):
    envs = [Corridor(length=10, life_loss_at=4) for _ in range(2)]
    results.append(evaluation.evaluate(
        agent, envs, num_episodes=3, rng=np.random.default_rng(3),
        max_noops=3, max_steps_per_episode=5))
  assert results[0] == results[1]
  assert all(length <= 5 for length in results[0]['lengths'])


def test_life_loss_restarts_the_stack():
  agent = BatchedAgent()
  evaluation.evaluate(agent, [Corridor()], num_episodes=1,
                      rng=np.random.default_rng(0), max_noops=0)
  # Ticks 0..5 see frames 0..5; after the life loss at step 3 the stack
  # holds only frame 3 (older slots zero).
  stacks = [s[0, 0, 0] for s in agent.seen]  # (S,) per tick
  np.testing.assert_array_equal(stacks[2], [0, 0, 1, 2])
  np.testing.assert_array_equal(stacks[3], [0, 0, 0, 3])
  np.testing.assert_array_equal(stacks[5], [0, 3, 4, 5])


def test_bbf_batched_greedy_actions_equal_single_state_actions():
  net = networks.BBFNetwork(num_actions=5, num_atoms=11, hidden_dim=16,
                            width_scale=0.25)
  states = jax.random.randint(jax.random.PRNGKey(1), (6, 84, 84, 4), 0, 256
                              ).astype(jnp.uint8)
  params = net.init(jax.random.PRNGKey(0), states[:1].astype(jnp.float32))
  key = jax.random.PRNGKey(2)
  _, batched = learner.select_actions(net, params, states, key,
                                      jnp.float32(0.0), 5)
  single = [int(learner.select_action(net, params, states[i:i + 1], key,
                                      jnp.float32(0.0), 5, False)[1])
            for i in range(6)]
  # The returned Q is that of the chosen action under the given support.
  support = jnp.linspace(-3.0, 3.0, 11)
  _, action, q = learner.select_action(net, params, states[:1], key,
                                       jnp.float32(0.0), 5, False,
                                       support=support)
  latent = net.apply(params, states[:1].astype(jnp.float32) / 255.0,
                     method=net.encode)
  logits = net.apply(params, latent, None, method=net.q_logits)[0]  # (A, atoms)
  expected = np.sum(np.asarray(jax.nn.softmax(logits)) * np.asarray(support),
                    axis=-1)
  assert int(action) == int(np.argmax(expected)) == single[0]
  np.testing.assert_allclose(float(q), expected[int(action)], rtol=1e-5)
  assert list(np.asarray(batched)) == single
  # epsilon = 1: uniformly random actions, not the greedy ones.
  _, random_actions = learner.select_actions(
      net, params, jnp.tile(states[:1], (200, 1, 1, 1)), key,
      jnp.float32(1.0), 5)
  assert set(np.asarray(random_actions).tolist()) == set(range(5))
