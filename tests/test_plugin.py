# coding=utf-8
"""bbf_dopamine.plugin adds 'bbf' to Dopamine's create_agent and changes
nothing else: Dopamine's built-in agents and its error for an unknown name
still come from Dopamine's own function, and importing the plugin again does
not wrap the wrapper.
"""

import importlib

from dopamine.discrete_domains import atari_lib
from dopamine.discrete_domains import run_experiment
from dopamine.jax.agents.dqn import dqn_agent as jax_dqn_agent
import gin
import numpy as np
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import plugin

# Dopamine's JAX replay buffer has no defaults for these (install_notes).
JAX_DQN_BINDINGS = [
    'ReplayBuffer.max_capacity = 1000',
    'ReplayBuffer.batch_size = 32',
]
TINY_BBF_BINDINGS = [
    'BBFNetwork.width_scale = 0.25',
    'BBFNetwork.hidden_dim = 32',
    'BBFAgent.replay_capacity = 1000',
]


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


@pytest.fixture(scope='module')
def pong():
  return atari_lib.create_atari_environment(game_name='Pong',
                                            sticky_actions=False)


def dopamine_original():
  return run_experiment.create_agent._bbf_original  # pylint: disable=protected-access


def test_plugin_wraps_dopamines_create_agent_once():
  assert run_experiment.create_agent is plugin.create_agent
  original = dopamine_original()
  assert original.__module__ == 'dopamine.discrete_domains.run_experiment'
  assert not hasattr(original, '_bbf_original')

  importlib.reload(plugin)  # a second import of the module's code
  assert run_experiment.create_agent is plugin.create_agent
  assert dopamine_original() is original


@pytest.mark.parametrize('reload_first', [False, True])
def test_builtin_agent_by_argument(pong, reload_first):
  if reload_first:
    importlib.reload(plugin)
  gin.parse_config(JAX_DQN_BINDINGS)
  agent = run_experiment.create_agent(None, pong, agent_name='jax_dqn')
  assert type(agent) is jax_dqn_agent.JaxDQNAgent  # pylint: disable=unidiomatic-typecheck
  assert agent.num_actions == pong.action_space.n


def test_builtin_agent_bound_in_gin(pong):
  gin.parse_config(JAX_DQN_BINDINGS + ["create_agent.agent_name = 'jax_dqn'"])
  agent = run_experiment.create_agent(None, pong)
  assert type(agent) is jax_dqn_agent.JaxDQNAgent  # pylint: disable=unidiomatic-typecheck


def test_unknown_agent_raises_dopamines_error(pong):
  with pytest.raises(ValueError, match='Unknown agent: no_such_agent'):
    run_experiment.create_agent(None, pong, agent_name='no_such_agent')
  gin.parse_config(["create_agent.agent_name = 'no_such_agent'"])
  with pytest.raises(ValueError, match='Unknown agent: no_such_agent'):
    run_experiment.create_agent(None, pong)


def test_bbf_by_argument_and_bound_in_gin(pong):
  gin.parse_config(TINY_BBF_BINDINGS)
  agent = run_experiment.create_agent(None, pong, agent_name='bbf')
  assert type(agent) is agent_lib.BBFAgent  # pylint: disable=unidiomatic-typecheck
  assert agent.num_actions == pong.action_space.n

  gin.clear_config()
  gin.parse_config(TINY_BBF_BINDINGS + ["create_agent.agent_name = 'bbf'"])
  agent = run_experiment.create_agent(None, pong)
  assert type(agent) is agent_lib.BBFAgent  # pylint: disable=unidiomatic-typecheck


def test_create_runner_builds_bbf_from_gin(tmp_path):
  """Dopamine's create_runner looks create_agent up after the plugin wrapped it."""
  gin.parse_config(TINY_BBF_BINDINGS + [
      "create_agent.agent_name = 'bbf'",
      "atari_lib.create_atari_environment.game_name = 'Pong'",
  ])
  runner = run_experiment.create_runner(str(tmp_path))
  assert type(runner._agent) is agent_lib.BBFAgent  # pylint: disable=protected-access,unidiomatic-typecheck


def _sticky_frames(seed, steps=300):
  """Frames of real Pong with sticky actions after the plugin seeds it."""
  env = atari_lib.create_atari_environment('Pong', sticky_actions=True)
  assert plugin.seed_environment(env, seed)
  env.reset()
  frames = []
  for t in range(steps):
    observation, _, terminal, _ = env.step(t % 2 + 2)  # alternate up / down
    frames.append(observation.copy())
    if terminal:
      env.reset()
  return np.stack(frames)


def test_seed_drives_the_environment():
  """Same seed -> identical sticky-action trajectories; other seed differs."""
  first, again, other = _sticky_frames(1), _sticky_frames(1), _sticky_frames(2)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
