# coding=utf-8
"""Dopamine's own agents run through our Atari 100k runner from gin alone.

For every file in gin_configs/baselines/ (found by glob, so a new file is
tested without being listed):
  * it parses, Dopamine's `run_experiment.create_runner` builds an
    Atari100kRunner holding the Dopamine agent class that
    `create_agent.agent_name` names, and the runner's public
    `run_experiment()` trains (the agent's step counter advances and its
    parameters change: gradient updates happened), evaluates and writes
    final_eval.json;
  * every binding written in the file was used (gin's operative config, see
    test_gin_configs.unused_bindings; `create_agent.agent_name` is checked by
    the class of the agent it built);
  * its Atari 100k protocol bindings are bbf.gin's, so scores compare.
For the four files we ship, the published hyper-parameters (literals below,
from the papers / Dopamine's gin files cited in each gin file's header)
reach the agent object, and prioritized replay really prioritizes. Finally,
the fixes in bbf_dopamine/baselines.py are shown to be needed: Dopamine
4.1.2's Rainbow agents replay uniformly whatever `replay_scheme` says
(google/dopamine#230), and its Atari100kRainbowAgent returns a (1,) action
from `step()`, which the ALE rejects.
"""

import json
import math
import pathlib
import re

from dopamine.discrete_domains import atari_lib
from dopamine.discrete_domains import run_experiment
from dopamine.jax.agents.dqn import dqn_agent
from dopamine.jax.agents.full_rainbow import full_rainbow_agent
from dopamine.labs.atari_100k import atari_100k_rainbow_agent
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import baselines
from bbf_dopamine import checkpoints
from bbf_dopamine import plugin
from bbf_dopamine import runner as runner_lib
from test_gin_configs import AGENT_NAME
from test_gin_configs import file_bindings
from test_gin_configs import unused_bindings

ROOT = pathlib.Path(__file__).resolve().parents[1]
BBF_GIN = ROOT / 'gin_configs' / 'bbf.gin'
BASELINE_DIR = ROOT / 'gin_configs' / 'baselines'
BASELINE_FILES = sorted(p.name for p in BASELINE_DIR.glob('*.gin'))

# create_agent.agent_name -> the class it must build. Dopamine's own
# create_agent builds the first two; plugin.AGENTS the rest.
DOPAMINE_AGENTS = {
    'jax_dqn': dqn_agent.JaxDQNAgent,
    'full_rainbow': full_rainbow_agent.JaxFullRainbowAgent,
}
AGENT_CLASSES = {**DOPAMINE_AGENTS, **plugin.AGENTS}

# Cheap overrides: tiny replay, training from the 6th transition, 30 agent
# steps in one iteration, one evaluation episode of at most 20 steps.
CHEAP = [
    "atari_lib.create_atari_environment.game_name = 'Pong'",
    'ReplayBuffer.max_capacity = 1000',
    'ReplayBuffer.batch_size = 8',
    'PrioritizedSamplingDistribution.max_capacity = 1000',
    'JaxDQNAgent.min_replay_history = 5',
    'Atari100kRunner.training_steps = 30',
    'Atari100kRunner.num_iterations = 1',
    'Atari100kRunner.num_eval_episodes = 1',
    'Atari100kRunner.max_steps_per_episode = 20',
]
TRAINING_STEPS = 30

# Selectors (last component) of the Atari 100k protocol.
PROTOCOL_SELECTORS = ('Atari100kRunner', 'create_runner',
                      'create_atari_environment', 'AtariPreprocessing')

# What each shipped file must produce in the agent. Literals from the sources
# its header cites: dqn.gin = Dopamine's jax dqn.gin + DER.gin's data-efficient
# changes; rainbow.gin = full_rainbow.gin; der.gin = labs/atari_100k DER.gin
# (van Hasselt et al. 2019; n = 10 as in Dopamine); drq_eps.gin = DrQ_eps.gin
# (Kostrikov et al. 2021, Agarwal et al. 2021).
_COMMON = dict(seed=0, gamma=0.99, epsilon_train=0.01, epsilon_eval=0.001,
               replay_capacity=1_000_000, batch_size=32)
FACTS = {
    'dqn.gin': dict(
        _COMMON, agent_class=dqn_agent.JaxDQNAgent, update_horizon=1,
        min_replay_history=1600, update_period=1, target_update_period=2000,
        epsilon_decay_period=2000, epsilon_fn='linearly_decaying_epsilon',
        learning_rate=1e-4, adam_eps=1.5e-4,
        sampler='UniformSamplingDistribution'),
    'rainbow.gin': dict(
        _COMMON, agent_class=baselines.JaxFullRainbowAgent,
        update_horizon=3, min_replay_history=20_000, update_period=4,
        target_update_period=8000, epsilon_decay_period=250_000,
        epsilon_fn='zero_epsilon',  # noisy nets explore; Dopamine's choice
        learning_rate=6.25e-5, adam_eps=1.5e-4,
        sampler='PrioritizedSamplingDistribution',
        sum_tree_capacity=1_000_000, noisy=True, dueling=True,
        double_dqn=True, distributional=True, num_atoms=51,
        support=(-10.0, 10.0), replay_scheme='prioritized',
        updates_per_train_step=1),
    'der.gin': dict(
        _COMMON, agent_class=baselines.Atari100kRainbowAgent,
        update_horizon=10, min_replay_history=1600, update_period=1,
        target_update_period=2000, epsilon_decay_period=2000,
        epsilon_fn='zero_epsilon', learning_rate=1e-4, adam_eps=1.5e-4,
        sampler='PrioritizedSamplingDistribution',
        sum_tree_capacity=1_000_000, noisy=True, dueling=True,
        double_dqn=True, distributional=True, num_atoms=51,
        support=(-10.0, 10.0), replay_scheme='prioritized',
        updates_per_train_step=1, data_augmentation=False, mse_loss=False),
    'drq_eps.gin': dict(
        _COMMON, agent_class=baselines.Atari100kRainbowAgent,
        update_horizon=10, min_replay_history=1600, update_period=1,
        target_update_period=1, epsilon_decay_period=5000,
        epsilon_fn='linearly_decaying_epsilon', learning_rate=1e-4,
        adam_eps=1.5e-4, sampler='PrioritizedSamplingDistribution',
        sum_tree_capacity=1_000_000, noisy=False, dueling=True,
        double_dqn=True, distributional=False, num_atoms=1,
        support=None, replay_scheme='uniform',
        updates_per_train_step=1, data_augmentation=True, mse_loss=False),
}


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


@pytest.fixture
def pong():
  return atari_lib.create_atari_environment(game_name='Pong',
                                            sticky_actions=False)


# Helpers ------------------------------------------------------------------


def build_runner(name, tmp_path, extra=()):
  gin.parse_config_files_and_bindings([str(BASELINE_DIR / name)], list(extra))
  return run_experiment.create_runner(str(tmp_path))


def bound_agent_name():
  return gin.query_parameter('create_agent.agent_name')


def leaves(tree):
  return jax.tree_util.tree_leaves(tree)


def significant(x, digits=4):
  return float(f'{x:.{digits}g}')


def adam_hyperparameters(agent):
  """(learning rate, eps) of the agent's optimizer, measured.

  Adam's first step for a constant gradient g is -lr * g / (|g| + eps) (the
  bias-corrected moments are g and g**2), so two gradient sizes give both.
  """
  params = agent.online_params
  state = agent.optimizer.init(params)

  def first_update(g):
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, g), params)
    updates, _ = agent.optimizer.update(grads, state, params)
    return -float(np.asarray(leaves(updates)[0]).flat[0])

  x = 1e-4
  u1, u2 = first_update(1.0), first_update(x)
  eps = (u2 - u1) / (u1 - u2 / x)
  return significant(u1 * (1 + eps)), significant(eps)


def agent_facts(agent):
  replay = agent._replay  # pylint: disable=protected-access
  sampler = replay._sampling_distribution  # pylint: disable=protected-access
  accumulator = replay._transition_accumulator  # pylint: disable=protected-access
  assert accumulator._update_horizon == agent.update_horizon  # pylint: disable=protected-access
  assert accumulator._gamma == agent.gamma  # pylint: disable=protected-access
  assert math.isclose(agent.cumulative_gamma,
                      agent.gamma ** agent.update_horizon)
  learning_rate, adam_eps = adam_hyperparameters(agent)
  facts = dict(
      agent_class=type(agent),
      seed=agent._seed,  # pylint: disable=protected-access
      gamma=agent.gamma,
      update_horizon=agent.update_horizon,
      min_replay_history=agent.min_replay_history,
      update_period=agent.update_period,
      target_update_period=agent.target_update_period,
      epsilon_train=agent.epsilon_train,
      epsilon_eval=agent.epsilon_eval,
      epsilon_decay_period=agent.epsilon_decay_period,
      epsilon_fn=agent.epsilon_fn.__name__,
      learning_rate=learning_rate,
      adam_eps=adam_eps,
      replay_capacity=replay._max_capacity,  # pylint: disable=protected-access
      batch_size=replay._batch_size,  # pylint: disable=protected-access
      sampler=type(sampler).__name__,
  )
  # pylint: disable=protected-access
  if isinstance(agent, full_rainbow_agent.JaxFullRainbowAgent):
    net = agent.network_def
    assert (net.noisy, net.dueling, net.distributional, net.num_atoms) == (
        agent._noisy, agent._dueling, agent._distributional, agent._num_atoms)
    facts.update(
        sum_tree_capacity=sampler._max_capacity,
        noisy=agent._noisy,
        dueling=agent._dueling,
        double_dqn=agent._double_dqn,
        distributional=agent._distributional,
        num_atoms=agent._num_atoms,
        support=((float(agent._support[0]), float(agent._support[-1]))
                 if agent._distributional else None),
        replay_scheme=agent._replay_scheme,
        updates_per_train_step=agent._num_updates_per_train_step)
  if isinstance(agent, atari_100k_rainbow_agent.Atari100kRainbowAgent):
    # What training actually applies to the sampled states.
    augments = agent.train_preprocess_fn.keywords['data_augmentation']
    assert augments == agent._data_augmentation
    facts.update(data_augmentation=augments, mse_loss=agent._mse_loss)
  # pylint: enable=protected-access
  return facts


def protocol_bindings(path):
  return {(sel.rsplit('.', 1)[-1], param): value
          for (_, sel, param), value in file_bindings(path).items()
          if sel.rsplit('.', 1)[-1] in PROTOCOL_SELECTORS}


# Tests ----------------------------------------------------------------------


def test_files_are_there_and_have_facts():
  assert {'dqn.gin', 'rainbow.gin', 'der.gin', 'drq_eps.gin'} <= set(
      BASELINE_FILES)
  assert set(BASELINE_FILES) == set(FACTS), (
      'Give every baseline gin file its expected agent facts in FACTS.')


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_protocol_is_bbf_gins(name):
  """Parse only: the Atari 100k protocol is bbf.gin's, binding for binding."""
  base = protocol_bindings(BBF_GIN)
  assert ('Atari100kRunner', 'num_eval_episodes') in base
  assert protocol_bindings(BASELINE_DIR / name) == base


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_header_cites_sources_and_usage(name):
  text = (BASELINE_DIR / name).read_text()
  header = re.match(r'((?:#.*\n)+)', text).group(1)
  assert re.search(r'\((?:\d{4}|[^()]*et al\., \d{4})\)', header), (
      f'{name}: header cites no paper')
  assert re.search(r'dopamine/\S+/configs/\S+\.gin', header), (
      f'{name}: header names no Dopamine gin file as the values\' source')
  assert 'Protocol' in header
  assert ('python -m dopamine.discrete_domains.train' in header and
          f'gin_configs/baselines/{name}' in header)
  assert re.search(r'^import bbf_dopamine\.plugin$', text, re.M)


def run_and_check(path, tmp_path, extra, training_steps, agent_classes):
  """Runs a baseline gin file cheaply; checks what every such file must do.

  The file binds an agent name that builds exactly its class, a seed that
  reaches agent and runner, training changes the parameters, prioritized
  replay really prioritizes, final_eval.json is written, and every binding
  is used.

  Returns:
    (agent, final_eval dict) for the caller's own checks.
  """
  name = path.name
  bindings = file_bindings(path)
  written = set(bindings)
  bound = {(sel.rsplit('.', 1)[-1], param): value
           for (_, sel, param), value in bindings.items()}
  assert ('',) + AGENT_NAME in written, f'{name} binds no agent_name'

  gin.parse_config_files_and_bindings([str(path)], list(extra))
  runner = run_experiment.create_runner(str(tmp_path))
  agent = runner._agent  # pylint: disable=protected-access
  assert isinstance(runner, runner_lib.Atari100kRunner)
  # agent_name was used: it built exactly the class it names.
  assert type(agent) is agent_classes[bound_agent_name()]  # pylint: disable=unidiomatic-typecheck
  assert agent._seed is not None and runner._seed == agent._seed  # pylint: disable=protected-access
  params_before = leaves(agent.online_params)

  runner.run_experiment()

  assert agent.training_steps >= training_steps
  changed = [not np.array_equal(a, b)
             for a, b in zip(params_before, leaves(agent.online_params))]
  assert any(changed), f'{name}: no gradient update happened'
  assert not agent.eval_mode
  with open(tmp_path / runner_lib.FINAL_EVAL_FILE) as f:
    final = json.load(f)
  assert final['agent'] == type(agent).__name__
  assert final['env_steps'] == training_steps
  assert final['num_episodes'] == len(final['returns']) == 1
  assert final['seed'] == agent._seed  # pylint: disable=protected-access
  if bound.get(('JaxFullRainbowAgent', 'replay_scheme')) == 'prioritized':
    # Trained-on transitions got their loss as priority; new ones the max.
    sampler = agent._replay._sampling_distribution  # pylint: disable=protected-access
    priorities = sampler._sum_tree.get(np.arange(sampler.size))  # pylint: disable=protected-access
    assert len(np.unique(priorities)) > 1, f'{name}: replay is not prioritized'

  # agent_name is checked above; test_gin_configs counts it only for BBF.
  assert unused_bindings(written - {('',) + AGENT_NAME}, runner) == set(), (
      f'{name}: bindings that no configurable used')
  return agent, final


@pytest.mark.parametrize('name', BASELINE_FILES)
def test_runs_through_the_atari_100k_runner(name, tmp_path):
  _, final = run_and_check(BASELINE_DIR / name, tmp_path, CHEAP,
                           TRAINING_STEPS, AGENT_CLASSES)
  assert final['game'] == 'Pong' and final['domain'] == 'atari'


@pytest.mark.parametrize('name', sorted(FACTS))
def test_published_hyperparameters_reach_the_agent(name, tmp_path):
  """The file as shipped (no overrides): built, not run."""
  runner = build_runner(name, tmp_path)
  assert agent_facts(runner._agent) == FACTS[name]  # pylint: disable=protected-access


# The fixes ------------------------------------------------------------------

RAINBOW_CLASSES = [
    # (Dopamine's class, ours, a file that binds replay_scheme='prioritized')
    (full_rainbow_agent.JaxFullRainbowAgent, baselines.JaxFullRainbowAgent,
     'rainbow.gin'),
    (atari_100k_rainbow_agent.Atari100kRainbowAgent,
     baselines.Atari100kRainbowAgent, 'der.gin'),
]


def _tiny_agent(agent_class, pong, name='der.gin'):
  gin.parse_config_files_and_bindings(
      [str(BASELINE_DIR / name)],
      ['ReplayBuffer.max_capacity = 1000',
       'PrioritizedSamplingDistribution.max_capacity = 1000',
       'ReplayBuffer.batch_size = 8',
       'JaxDQNAgent.min_replay_history = 5',
       'JaxDQNAgent.update_period = 1'])
  return agent_class(num_actions=pong.action_space.n)


def _play(agent, env, steps):
  action = agent.begin_episode(env.reset())
  for _ in range(steps):
    observation, reward, _, _ = env.step(action)
    action = np.asarray(agent.step(reward, observation)).reshape(())
    agent.action = action  # Dopamine's Atari100kRainbowAgent: (1,) (defect 2)
  return action


@pytest.mark.parametrize('dopamine_class,ours,name', RAINBOW_CLASSES)
def test_dopamine_agent_ignores_prioritized_replay(dopamine_class, ours, name,
                                                   pong):
  """Dopamine 4.1.2 replays uniformly whatever replay_scheme says (#230).

  If this test fails, Dopamine has fixed its agents: drop _KeepsReplayScheme
  in bbf_dopamine/baselines.py.
  """
  del ours
  agent = _tiny_agent(dopamine_class, pong, name)
  assert gin.query_parameter('JaxFullRainbowAgent.replay_scheme') == (
      'prioritized')
  assert agent._replay_scheme == 'uniform'  # pylint: disable=protected-access
  params_before = leaves(agent.online_params)
  _play(agent, pong, 30)
  assert not all(np.array_equal(a, b) for a, b in zip(
      params_before, leaves(agent.online_params)))  # it trained
  sampler = agent._replay._sampling_distribution  # pylint: disable=protected-access
  priorities = sampler._sum_tree.get(np.arange(sampler.size))  # pylint: disable=protected-access
  assert set(priorities.tolist()) == {1.0}  # never updated: uniform replay


@pytest.mark.parametrize('dopamine_class,ours,name', RAINBOW_CLASSES)
def test_ours_prioritizes(dopamine_class, ours, name, pong):
  del dopamine_class
  agent = _tiny_agent(ours, pong, name)
  assert agent._replay_scheme == 'prioritized'  # pylint: disable=protected-access
  _play(agent, pong, 30)
  sampler = agent._replay._sampling_distribution  # pylint: disable=protected-access
  priorities = sampler._sum_tree.get(np.arange(sampler.size))  # pylint: disable=protected-access
  assert len(set(priorities.tolist())) > 1  # updated from the losses

  # The uniform scheme stays uniform (DrQ(eps)).
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [str(BASELINE_DIR / name)],
      ['ReplayBuffer.max_capacity = 1000',
       'PrioritizedSamplingDistribution.max_capacity = 1000',
       "JaxFullRainbowAgent.replay_scheme = 'uniform'"])
  agent = ours(num_actions=pong.action_space.n)
  assert agent._replay_scheme == 'uniform'  # pylint: disable=protected-access


def test_unadapted_agent_breaks_the_single_environment_contract(pong):
  """Dopamine 4.1.2's Atari100kRainbowAgent.step returns a (1,) action.

  If this test fails, Dopamine has fixed its agent: drop the `step` override
  in bbf_dopamine/baselines.py.
  """
  agent = _tiny_agent(atari_100k_rainbow_agent.Atari100kRainbowAgent, pong)
  observation = pong.reset()
  action = agent.begin_episode(observation)
  assert np.shape(action) == ()
  observation, reward, _, _ = pong.step(action)
  action = agent.step(reward, observation)
  assert np.shape(action) == (1,)  # one per environment of a batched runner
  assert agent.state.shape == (1, 84, 84, 4)
  with pytest.raises(TypeError, match='scalar index'):
    pong.step(action)  # what Atari100kRunner / Dopamine's Runner do next


def test_ours_returns_one_action_and_stores_scalar_actions(pong):
  agent = _tiny_agent(baselines.Atari100kRainbowAgent, pong)
  actions = [agent.begin_episode(pong.reset())]
  for _ in range(15):
    observation, reward, _, _ = pong.step(actions[-1])
    actions.append(agent.step(reward, observation))
    assert np.shape(actions[-1]) == ()
    assert agent.action is actions[-1]
  agent.end_episode(0.0, terminal=False)
  batch = agent._replay.sample()  # pylint: disable=protected-access
  assert batch.action.shape == (8,)
  assert batch.state.shape == (8, 84, 84, 4)


def test_fixes_are_minimal_and_registered():
  for dopamine_class, ours, _ in RAINBOW_CLASSES:
    assert ours.__bases__ == (baselines._KeepsReplayScheme, dopamine_class)  # pylint: disable=protected-access
    # Gin's bindings of Dopamine's class apply to ours (inherited __init__).
    assert ours.__init__ is dopamine_class.__init__
  assert {k for k in vars(baselines.JaxFullRainbowAgent)
          if not k.startswith('__')} == set()
  assert {k for k in vars(baselines.Atari100kRainbowAgent)
          if not k.startswith('__')} == {'step'}
  assert {k for k in vars(baselines._KeepsReplayScheme)  # pylint: disable=protected-access
          if not k.startswith('__')} == {'_replay_scheme'}
  assert plugin.AGENTS['jax_full_rainbow'] is baselines.JaxFullRainbowAgent
  assert plugin.AGENTS['atari_100k_rainbow'] is (
      baselines.Atari100kRainbowAgent)


def test_fallback_rewrites_the_replay_checkpoint(tmp_path):
  """Fix 3: after a fallback, checkpoint N is rewritten with its replay.

  Without `sync_replay_checkpoints` orbax's cached manager skips the replay
  save for step N (it saw N before), and ckpt.N has no replay folder.
  """
  extra = CHEAP + ['Atari100kRunner.checkpoint_every = 10',
                   'Atari100kRunner.intermediate_eval_episodes = 0']
  build_runner('der.gin', tmp_path, extra).run_experiment()
  directory = tmp_path / 'checkpoints'
  assert checkpoints.complete_numbers(str(directory)) == [30, 20]
  (directory / 'ckpt.30').write_bytes(b'truncated')
  gin.clear_config()
  runner = build_runner('der.gin', tmp_path, extra)
  assert runner._resumed_from == 20  # pylint: disable=protected-access
  runner.run_experiment()
  assert (directory / '30').is_dir()
  assert (directory / '30').stat().st_mtime > (directory / 'ckpt.20').stat(
      ).st_mtime
  gin.clear_config()
  again = build_runner('der.gin', tmp_path, extra)
  assert again._resumed_from == 30  # pylint: disable=protected-access
