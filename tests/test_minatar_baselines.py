# coding=utf-8
"""Dopamine's DQN, Rainbow and DER on MinAtar from gin alone.

For every file in gin_configs/minatar/ but BBF's (bbf*.gin, see
test_minatar_gin_configs.py), found by glob so that a new file is tested
without being listed:
  * it parses, Dopamine's `run_experiment.create_runner` builds an
    Atari100kRunner holding the agent class that `create_agent.agent_name`
    names, and the runner's public `run_experiment()` trains (parameters
    change), evaluates and writes final_eval.json for domain 'minatar';
  * every binding written in the file was used (gin's operative config, see
    test_gin_configs.unused_bindings; the agent name by the class it built);
  * one binding switches the game: with seaquest (10 channels) the agent is
    built for (10, 10, 10) frames and plays;
  * its protocol bindings are gin_configs/minatar/bbf.gin's, so scores compare;
  * the header cites the papers and the Dopamine gin files of its values.
For the three files we ship, the values of the sources their headers cite
(literals below) reach the agent object, and the network sees MinAtar's 0/1
frames. Finally, the MinAtar fixes in bbf_dopamine/baselines.py (4-7) are
shown to be needed; those tests fail once Dopamine changes, which is the
signal to drop the corresponding fix.
"""

import inspect
import pathlib
import re

from dopamine.discrete_domains import run_experiment
from dopamine.jax.agents.dqn import dqn_agent
from dopamine.labs.environments.minatar import minatar_env as dopamine_minatar
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import baselines
from bbf_dopamine import minatar_env
from bbf_dopamine import plugin
from test_baselines import agent_facts
from test_baselines import leaves
from test_baselines import run_and_check
from test_gin_configs import AGENT_NAME
from test_gin_configs import file_bindings

ROOT = pathlib.Path(__file__).resolve().parents[1]
MINATAR_DIR = ROOT / 'gin_configs' / 'minatar'
BBF_GIN = MINATAR_DIR / 'bbf.gin'
# bbf*.gin (BBF and its variants) are tested by test_minatar_gin_configs.py.
BASELINE_FILES = sorted(p.name for p in MINATAR_DIR.glob('*.gin')
                        if not p.name.startswith('bbf'))

# Cheap overrides: tiny replay, training from the 21st transition, 60 agent
# steps in one iteration, one evaluation episode of at most 30 steps.
CHEAP = [
    'ReplayBuffer.max_capacity = 1000',
    'ReplayBuffer.batch_size = 8',
    'PrioritizedSamplingDistribution.max_capacity = 1000',
    'JaxDQNAgent.min_replay_history = 20',
    'Atari100kRunner.training_steps = 60',
    'Atari100kRunner.num_iterations = 1',
    'Atari100kRunner.num_eval_episodes = 1',
    'Atari100kRunner.max_steps_per_episode = 30',
]
TRAINING_STEPS = 60
SEAQUEST = "create_minatar_environment.game_name = 'seaquest'"

# Selectors (last component) of the protocol. pixel_scale is not protocol:
# it is what each agent's network expects (checked in FACTS).
PROTOCOL_SELECTORS = ('Atari100kRunner', 'create_runner',
                      'create_minatar_environment')
NOT_PROTOCOL = {('create_minatar_environment', 'pixel_scale')}

# Papers each header must cite, besides MinAtar (Young and Tian, 2019) and
# Dopamine's MinAtar settings (Obando-Ceron and Castro, 2021).
PAPERS = {
    'dqn.gin': ('Mnih et al. (2015)',),
    'rainbow.gin': ('Hessel et al. (2018)',),
    'der.gin': ('van Hasselt, Hessel & Aslanides (2019)',
                'Hessel et al. (2018)'),
}

# What each shipped file must produce in the agent. Literals from the sources
# its header cites: Dopamine's labs/environments/minatar/dqn_breakout.gin
# (DQN: MinatarDQNNetwork, n = 1, 1000 / 4 / 1000, Adam 2.5e-4 / 3.125e-4,
# replay 100k, batch 32) and rainbow_breakout.gin (Rainbow: 51 atoms, vmax
# 100, n = 3, prioritized replay, same schedule and Adam), full_rainbow.gin
# (noisy, dueling, double), labs/atari_100k/configs/DER.gin (DER: n = 10,
# 1600 / 1 / 2000, epsilon decay 2000, Adam 1e-4 / 1.5e-4); DQN's epsilon
# decay of 2000 steps is DER's (declared in dqn.gin's header).
_COMMON = dict(seed=0, gamma=0.99, epsilon_train=0.01, epsilon_eval=0.001,
               replay_capacity=100_000, batch_size=32, stack_size=1,
               observation_shape=(10, 10, 4), conv_kernel=(3, 3, 4, 16),
               network_inputs=(0.0, 1.0))
_FULL_RAINBOW = dict(
    network=baselines.MinatarFullRainbowNetwork,
    sampler='PrioritizedSamplingDistribution', sum_tree_capacity=100_000,
    noisy=True, dueling=True, double_dqn=True, distributional=True,
    num_atoms=51, support=(-100.0, 100.0), replay_scheme='prioritized',
    updates_per_train_step=1,
    epsilon_fn='zero_epsilon')  # noisy nets explore; Dopamine's choice
FACTS = {
    'dqn.gin': dict(
        _COMMON, agent_class=dqn_agent.JaxDQNAgent,
        network=dopamine_minatar.MinatarDQNNetwork, pixel_scale=1,
        update_horizon=1, min_replay_history=1000, update_period=4,
        target_update_period=1000, epsilon_decay_period=2000,
        epsilon_fn='linearly_decaying_epsilon', learning_rate=2.5e-4,
        adam_eps=3.125e-4, sampler='UniformSamplingDistribution'),
    'rainbow.gin': dict(
        _COMMON, **_FULL_RAINBOW, agent_class=baselines.MinAtarFullRainbowAgent,
        pixel_scale=1, update_horizon=3, min_replay_history=1000,
        update_period=4, target_update_period=1000,
        epsilon_decay_period=250_000,  # JaxDQNAgent's default; unused
        learning_rate=2.5e-4, adam_eps=3.125e-4),
    'der.gin': dict(
        _COMMON, **_FULL_RAINBOW, agent_class=baselines.MinAtar100kRainbowAgent,
        pixel_scale=255,  # the agent divides by 255
        update_horizon=10, min_replay_history=1600, update_period=1,
        target_update_period=2000, epsilon_decay_period=2000,
        learning_rate=1e-4, adam_eps=1.5e-4, data_augmentation=False,
        mse_loss=False),
}
AGENT_NAMES = {'dqn.gin': 'minatar_dqn', 'rainbow.gin': 'minatar_full_rainbow',
               'der.gin': 'minatar_100k_rainbow'}


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


# Helpers ------------------------------------------------------------------


def build_runner(name, tmp_path, extra=()):
  gin.parse_config_files_and_bindings([str(MINATAR_DIR / name)], list(extra))
  return run_experiment.create_runner(str(tmp_path))


def conv_kernel_shape(agent):
  return agent.online_params['params']['Conv_0']['kernel'].shape


def minatar_facts(runner):
  """agent_facts (test_baselines) plus what MinAtar adds."""
  agent = runner._agent  # pylint: disable=protected-access
  environment = runner._environment  # pylint: disable=protected-access
  frame = environment.reset()
  network_input = np.asarray(agent.preprocess_fn(frame[..., None]))
  return dict(
      agent_facts(agent),
      network=type(agent.network_def),
      stack_size=agent.stack_size,
      observation_shape=agent.observation_shape,
      conv_kernel=conv_kernel_shape(agent),
      pixel_scale=int(environment._scale),  # pylint: disable=protected-access
      network_inputs=tuple(np.unique(network_input).tolist()))


def protocol_bindings(path):
  return {(sel.rsplit('.', 1)[-1], param): value
          for (_, sel, param), value in file_bindings(path).items()
          if sel.rsplit('.', 1)[-1] in PROTOCOL_SELECTORS and
          (sel.rsplit('.', 1)[-1], param) not in NOT_PROTOCOL}


def play(agent, environment, steps):
  """Dopamine's single-environment contract, as Atari100kRunner drives it."""
  action = agent.begin_episode(environment.reset())
  for _ in range(steps):
    assert np.shape(action) == ()
    observation, reward, terminal, _ = environment.step(action)
    if terminal:
      agent.end_episode(reward, terminal)
      action = agent.begin_episode(environment.reset())
    else:
      action = agent.step(reward, observation)


# Tests ----------------------------------------------------------------------


def test_files_are_there_and_have_facts():
  assert {'dqn.gin', 'rainbow.gin', 'der.gin'} <= set(BASELINE_FILES)
  assert set(BASELINE_FILES) == set(FACTS) == set(PAPERS), (
      'Give every MinAtar baseline gin file its FACTS and PAPERS.')


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_protocol_is_minatar_bbf_gins(name):
  """Parse only: the protocol is minatar/bbf.gin's, binding for binding."""
  base = protocol_bindings(BBF_GIN)
  assert ('create_minatar_environment', 'sticky_action_prob') in base
  assert ('Atari100kRunner', 'num_eval_episodes') in base
  assert protocol_bindings(MINATAR_DIR / name) == base
  assert base[('create_minatar_environment', 'game_name')] == 'breakout'


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_header_cites_sources_and_usage(name):
  text = (MINATAR_DIR / name).read_text()
  header = re.match(r'((?:#.*\n)+)', text).group(1)
  flat = ' '.join(line.lstrip('# ') for line in header.splitlines())
  for paper in PAPERS[name] + ('Young and Tian, 2019',
                               'Obando-Ceron and Castro (2021)'):
    assert paper in flat, f'{name}: header does not cite {paper}'
  assert re.search(r'dopamine/labs/environments/minatar/\w+\.gin', header), (
      f'{name}: header names no Dopamine MinAtar gin file as the values\' '
      'source')
  assert 'Protocol' in header and 'gin_configs/minatar/bbf.gin' in header
  assert ('python -m dopamine.discrete_domains.train' in header and
          f'gin_configs/minatar/{name}' in header and
          "create_minatar_environment.game_name='asterix'" in header)
  assert re.search(r'^import bbf_dopamine\.plugin$', text, re.M)


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_runs_through_the_atari_100k_runner(name, tmp_path):
  _, final = run_and_check(MINATAR_DIR / name, tmp_path, CHEAP,
                           TRAINING_STEPS, plugin.AGENTS)
  assert final['domain'] == 'minatar' and final['game'] == 'breakout'
  assert final['human_normalized_mean'] is None


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_one_binding_switches_the_game(name, tmp_path):
  runner = build_runner(name, tmp_path, CHEAP + [
      SEAQUEST, 'JaxDQNAgent.min_replay_history = 5',
      'JaxDQNAgent.update_period = 1'])
  agent = runner._agent  # pylint: disable=protected-access
  environment = runner._environment  # pylint: disable=protected-access
  assert environment.observation_shape == (10, 10, 10)
  assert agent.observation_shape == (10, 10, 10)
  assert agent.state.shape[-4:] == (10, 10, 10, 1)
  assert conv_kernel_shape(agent) == (3, 3, 10, 16)
  params_before = leaves(agent.online_params)
  # Enough steps for n-step transitions past min_replay_history: updates.
  play(agent, environment, agent.update_horizon + 10)
  assert agent._replay.add_count > 5  # pylint: disable=protected-access
  assert agent._replay.sample().state.shape == (8, 10, 10, 10, 1)  # pylint: disable=protected-access
  assert any(not np.array_equal(a, b)
             for a, b in zip(params_before, leaves(agent.online_params)))


@pytest.mark.parametrize('name', sorted(FACTS))
def test_published_hyperparameters_reach_the_agent(name, tmp_path):
  """The file as shipped (no overrides): built, not run."""
  runner = build_runner(name, tmp_path)
  assert gin.query_parameter('create_agent.agent_name') == AGENT_NAMES[name]
  assert minatar_facts(runner) == FACTS[name]


# The MinAtar fixes ----------------------------------------------------------


def test_observation_shape_reaches_the_agents_from_the_environment():
  """Fix 4: registered, with the smallest subclasses that take the shape."""
  assert plugin.AGENTS['minatar_dqn'] is dqn_agent.JaxDQNAgent
  assert plugin.AGENTS['minatar_full_rainbow'] is (
      baselines.MinAtarFullRainbowAgent)
  assert plugin.AGENTS['minatar_100k_rainbow'] is (
      baselines.MinAtar100kRainbowAgent)
  for name in ('minatar_dqn', 'minatar_full_rainbow', 'minatar_100k_rainbow'):
    parameters = inspect.signature(plugin.AGENTS[name].__init__).parameters
    assert 'observation_shape' in parameters, name
  # Dopamine's Rainbow-family classes take none (so the plugin passes none).
  for ours in (baselines.JaxFullRainbowAgent, baselines.Atari100kRainbowAgent):
    assert 'observation_shape' not in inspect.signature(
        ours.__init__).parameters
  assert baselines.MinAtarFullRainbowAgent.__bases__ == (
      baselines._TakesObservationShape, baselines.JaxFullRainbowAgent)  # pylint: disable=protected-access
  assert baselines.MinAtar100kRainbowAgent.__bases__ == (
      baselines._TakesObservationShape, baselines.Atari100kRainbowAgent)  # pylint: disable=protected-access
  assert {k for k in vars(baselines.MinAtarFullRainbowAgent)
          if not k.startswith('__')} == set()
  assert {k for k in vars(baselines.MinAtar100kRainbowAgent)
          if not k.startswith('__')} == {'_record_observation'}

  # The shape given wins over JaxDQNAgent's (gin-bound or default) one; gin's
  # bindings of Dopamine's classes still apply.
  gin.parse_config_files_and_bindings(
      [str(MINATAR_DIR / 'rainbow.gin')],
      ['ReplayBuffer.max_capacity = 100', 'JaxDQNAgent.update_horizon = 2',
       'PrioritizedSamplingDistribution.max_capacity = 100',
       'JaxDQNAgent.observation_shape = (10, 10, 4)'])
  agent = baselines.MinAtarFullRainbowAgent(num_actions=6,
                                            observation_shape=(10, 10, 7))
  assert agent.observation_shape == (10, 10, 7)
  assert agent.state.shape == (10, 10, 7, 1)
  assert agent.update_horizon == 2
  agent = baselines.MinAtarFullRainbowAgent(num_actions=6)
  assert agent.observation_shape == (10, 10, 4)


def test_dopamine_minatar_network_convolves_over_the_stack_axis():
  """Fix 5: Dopamine 4.1.2's MinAtar network on the (10, 10, C, 1) state.

  If this test fails, Dopamine has fixed its network: drop
  `JaxDQNAgent.preprocess_fn` from gin_configs/minatar/dqn.gin.
  """
  network = dopamine_minatar.MinatarDQNNetwork(num_actions=6)
  state = jnp.zeros((10, 10, 4, 1))
  params = network.init(jax.random.PRNGKey(0), state)
  # One input channel: 10 rows convolved separately over (column, channel).
  assert params['params']['Conv_0']['kernel'].shape == (3, 3, 1, 16)
  folded = baselines.minatar_stack_to_channels(state)
  assert folded.shape == (10, 10, 4)
  params = network.init(jax.random.PRNGKey(0), folded)
  assert params['params']['Conv_0']['kernel'].shape == (3, 3, 4, 16)
  batch = np.arange(2 * 10 * 10 * 4).reshape((2, 10, 10, 4, 1))
  np.testing.assert_array_equal(baselines.minatar_stack_to_channels(batch),
                                batch[..., 0])


def test_full_rainbow_agent_cannot_build_minatar_rainbow_network():
  """Fix 6: MinatarRainbowNetwork lacks the fields JaxFullRainbowAgent sets."""
  gin.parse_config_files_and_bindings(
      [str(MINATAR_DIR / 'rainbow.gin')],
      ['ReplayBuffer.max_capacity = 100',
       'PrioritizedSamplingDistribution.max_capacity = 100',
       'JaxFullRainbowAgent.network = @minatar_env.MinatarRainbowNetwork'])
  with pytest.raises(TypeError, match='noisy'):
    baselines.MinAtarFullRainbowAgent(num_actions=6,
                                      observation_shape=(10, 10, 4))


def test_our_network_without_noise_and_dueling_is_dopamines():
  """Fix 6: same parameters, same outputs as MinatarRainbowNetwork."""
  support = jnp.linspace(-100.0, 100.0, 51)
  ours = baselines.MinatarFullRainbowNetwork(
      num_actions=6, num_atoms=51, noisy=False, dueling=False)
  dopamine = dopamine_minatar.MinatarRainbowNetwork(num_actions=6,
                                                    num_atoms=51)
  frame = (np.random.default_rng(0).random((10, 10, 4)) < 0.2).astype(
      np.float32)
  params = ours.init(jax.random.PRNGKey(1), frame[..., None], support)
  expected = dopamine.apply(params, frame, support)
  actual = ours.apply(params, frame[..., None], support)
  for a, b in zip(actual, expected):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # Noisy, dueling (the shipped configuration): a distribution per action.
  full = baselines.MinatarFullRainbowNetwork(num_actions=6, num_atoms=51)
  params = full.init(jax.random.PRNGKey(1), frame[..., None], support)
  out = full.apply(params, frame[..., None], support,
                   key=jax.random.PRNGKey(2))
  assert out.probabilities.shape == (6, 51) and out.q_values.shape == (6,)
  np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_dopamine_100k_agent_rejects_minatar_frames():
  """Fix 7: Atari100kRainbowAgent squeezes Atari's single grey channel.

  If this test fails, Dopamine has fixed its agent: drop
  `MinAtar100kRainbowAgent._record_observation` in bbf_dopamine/baselines.py.
  """
  gin.parse_config_files_and_bindings(
      [str(MINATAR_DIR / 'der.gin')],
      ['ReplayBuffer.max_capacity = 100',
       'PrioritizedSamplingDistribution.max_capacity = 100',
       # As Dopamine's MinAtar files give it (%minatar_env.BREAKOUT_SHAPE).
       'JaxDQNAgent.observation_shape = (10, 10, 4)'])
  frame = minatar_env.create_minatar_environment('breakout').reset()
  assert frame.shape == (10, 10, 4)
  dopamines = baselines.Atari100kRainbowAgent(num_actions=6)
  assert dopamines.observation_shape == (10, 10, 4)
  with pytest.raises(ValueError, match='squeeze'):
    dopamines._record_observation(frame)  # pylint: disable=protected-access
  ours = baselines.MinAtar100kRainbowAgent(num_actions=6,
                                           observation_shape=(10, 10, 4))
  ours._reset_state()  # pylint: disable=protected-access
  ours._record_observation(frame)  # pylint: disable=protected-access
  np.testing.assert_array_equal(ours.state[0, ..., -1], frame)
