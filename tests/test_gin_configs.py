# coding=utf-8
"""Every gin file in gin_configs/ builds Dopamine's real Runner and uses all of
its bindings.

For each file (found by glob, so a new file is tested without being listed):
  * it parses, Dopamine's `run_experiment.create_runner` builds the real ALE
    environment and a BBFAgent from it, and the Runner's public
    `run_experiment()` runs a few agent steps (acting, replay, checkpoint);
  * every binding written in the file was read by a configurable that was
    actually called: gin's operative config records the parameters it
    supplied, and drops those a caller passed explicitly (a binding gin would
    otherwise accept and silently ignore);
  * the values that define the variant reach the agent (gradient steps per
    agent step, reset calendar, n and gamma schedules, shrink / perturb, SPR
    weight, encoder, noisy nets, target network, weight decay);
  * each variant equals bbf.gin except for the bindings it declares, and names
    each of them in its header comment; its network's encoder follows the
    file's width and encoder type.
Sizes are shrunk with extra bindings (width 0.25, hidden 32, tiny replay) so
that a file costs about a second once XLA has compiled its shapes.
"""

import pathlib
import re

from dopamine.discrete_domains import run_experiment
import gin
import jax
import jax.numpy as jnp
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import networks
from bbf_dopamine import runner as runner_lib
from bbf_dopamine import schedules

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = ROOT / 'gin_configs'
GIN_FILES = sorted(p.name for p in GIN_DIR.glob('*.gin'))

# Overrides that make building and stepping cheap; every one rebinds a
# parameter the files already bind, so the set of bound parameters is the same.
CHEAP = [
    'BBFNetwork.width_scale = 0.25',
    'BBFNetwork.hidden_dim = 32',
    'BBFAgent.replay_capacity = 1000',
    "atari_lib.create_atari_environment.game_name = 'Pong'",
    'Atari100kRunner.training_steps = 4',
    'Atari100kRunner.num_iterations = 1',
    'Atari100kRunner.num_eval_episodes = 1',
    'Atari100kRunner.max_steps_per_episode = 3',
]

# plugin.py reads these bindings with gin.query_parameter and never calls
# Dopamine's create_agent / create_runner, so gin never records them as
# operative.
AGENT_NAME = ('dopamine.discrete_domains.run_experiment.create_agent',
              'agent_name')
SCHEDULE = ('dopamine.discrete_domains.run_experiment.create_runner',
            'schedule')

# What each file must produce in the agent (differences from BBF_FACTS).
_RR8_RESETS = tuple(range(5_000, 100_000, 5_000))  # 5k .. 95k: 19 resets
BBF_FACTS = dict(
    updates_per_step=2, batches_to_group=2,
    resets=(20_000, 40_000, 60_000, 80_000),
    n=(10, 3), gamma=(0.97, 0.997), shrink_perturb=(0.5, 0.5),
    spr_weight=5.0, encoder='impala', noisy=False, target_tau=0.005,
    act_with_target=True, weight_decay=True, redo=None, pruning=None)
# ReDo every 1k gradient steps at tau 0.1 on the encoder and projection; GMP
# from 20k to 80k agent steps every 1k gradient steps, all modules.
REDO_FACTS = (1_000, 0.1, ('encoder', 'projection'))
def prune_facts(sparsity):
  return (sparsity, 20_000, 80_000, 1_000, networks.MODULE_NAMES)


FACTS = {
    'bbf.gin': {},
    'bbf_cpu_demo.gin': {},
    'bbf_rr8.gin': dict(updates_per_step=8, resets=_RR8_RESETS),
    'bbf_width1.gin': {},
    'bbf_width2.gin': {},
    'bbf_width8.gin': {},
    'bbf_no_resets.gin': dict(resets=()),
    'bbf_no_spr.gin': dict(spr_weight=0.0),
    'bbf_no_wd.gin': dict(weight_decay=False),
    'bbf_no_annealing.gin': dict(n=(3, 3), gamma=(0.997, 0.997)),
    'bbf_n10.gin': dict(n=(10, 10)),
    'bbf_gamma099.gin': dict(gamma=(0.99, 0.99)),
    'bbf_no_harder_resets.gin': dict(shrink_perturb=(0.8, 0.2)),
    'sr_spr.gin': dict(
        updates_per_step=8, batches_to_group=8, resets=_RR8_RESETS,
        n=(10, 10), gamma=(0.99, 0.99), shrink_perturb=(0.8, 0.2),
        encoder='nature', weight_decay=False),
    'spr.gin': dict(
        resets=(), n=(10, 10), gamma=(0.99, 0.99), encoder='nature',
        noisy=True, target_tau=1.0, act_with_target=False,
        weight_decay=False),
    'bbf_softmoe4.gin': {},
    'bbf_softmoe8.gin': {},
    'bbf_tokenized1.gin': {},
    'bbf_redo.gin': dict(redo=REDO_FACTS),
    'bbf_redo_no_resets.gin': dict(redo=REDO_FACTS, resets=()),
    'bbf_prune90.gin': dict(pruning=prune_facts(0.9), resets=()),
    'bbf_prune95.gin': dict(pruning=prune_facts(0.95), resets=()),
}

# Each variant's bindings that differ from bbf.gin; REMOVED: not bound.
REMOVED = object()
_NATURE = {
    'BBFNetwork.encoder_type': 'nature',
    'BBFNetwork.width_scale': 1,
    'BBFNetwork.hidden_dim': 512,
    'ImpalaCNN.num_blocks': REMOVED,
    'BBFAgent.gamma': 0.99,
    'BBFAgent.min_gamma': 0.99,
    'BBFAgent.update_horizon': 10,
    'create_scaling_optimizer.weight_decay': 0.0,
}


def softmoe_bindings(experts, slots, width, output_dim=None):
  """A SoftMoE head over per-position tokens (bbf_dopamine/moe.py); also
  used by test_minatar_gin_configs.py."""
  bindings = {
      'BBFNetwork.head_type': 'softmoe',
      'BBFNetwork.tokenization': 'per_position',
      'BBFNetwork.num_experts': experts,
      'BBFNetwork.slots_per_expert': slots,
      'BBFNetwork.expert_width': width,
  }
  if output_dim is not None:
    bindings['BBFNetwork.expert_output_dim'] = output_dim
  return bindings


REDO_BINDINGS = {'BBFAgent.redo_every': 1_000, 'BBFAgent.redo_tau': 0.1,
                 'BBFAgent.redo_layers': 'encoder,projection'}


def prune_bindings(sparsity):
  """Gradual magnitude pruning (pruning.py); also test_minatar_gin_configs."""
  return {'BBFAgent.target_sparsity': sparsity,
          'BBFAgent.pruning_start': 0.2, 'BBFAgent.pruning_end': 0.8,
          'BBFAgent.pruning_frequency': 1_000,
          'BBFAgent.pruning_total_steps': 100_000,
          'BBFAgent.prune_layers':
              'encoder,transition_model,projection,predictor,head',
          # No resets, as in the pruning papers (results/minatar).
          'BBFAgent.no_resets_after': 0}


DEVIATIONS = {
    'bbf_cpu_demo.gin': {
        'BBFNetwork.width_scale': 0.25,
        'BBFNetwork.hidden_dim': 64,
        'BBFAgent.min_replay_history': 200,
        'BBFAgent.epsilon_decay_period': 201,
        'BBFAgent.replay_capacity': 5_000,
        'create_atari_environment.game_name': 'Pong',
        'Atari100kRunner.num_iterations': 2,
        'Atari100kRunner.training_steps': 400,
        'Atari100kRunner.num_eval_episodes': 2,
        'Atari100kRunner.intermediate_eval_episodes': 1,
        'Atari100kRunner.max_steps_per_episode': 200,
        'Atari100kRunner.checkpoint_every': 200,
    },
    'bbf_rr8.gin': {'BBFAgent.replay_ratio': 256,
                    'BBFAgent.reset_every': 5_000},
    'bbf_width1.gin': {'BBFNetwork.width_scale': 1},
    'bbf_width2.gin': {'BBFNetwork.width_scale': 2},
    'bbf_width8.gin': {'BBFNetwork.width_scale': 8},
    'bbf_no_resets.gin': {'BBFAgent.no_resets_after': 0},
    'bbf_no_spr.gin': {'BBFAgent.spr_weight': 0},
    'bbf_no_wd.gin': {'create_scaling_optimizer.weight_decay': 0.0},
    'bbf_no_annealing.gin': {'BBFAgent.max_update_horizon': 3,
                             'BBFAgent.min_gamma': 0.997},
    'bbf_n10.gin': {'BBFAgent.update_horizon': 10},
    'bbf_gamma099.gin': {'BBFAgent.gamma': 0.99, 'BBFAgent.min_gamma': 0.99},
    'bbf_no_harder_resets.gin': {'BBFAgent.shrink_factor': 0.8,
                                 'BBFAgent.perturb_factor': 0.2},
    'sr_spr.gin': dict(_NATURE, **{
        'BBFAgent.replay_ratio': 256,
        'BBFAgent.batches_to_group': 8,
        'BBFAgent.reset_every': 5_000,
        'BBFAgent.shrink_factor': 0.8,
        'BBFAgent.perturb_factor': 0.2,
    }),
    'spr.gin': dict(_NATURE, **{
        'BBFAgent.no_resets_after': 0,
        'BBFAgent.noisy': True,
        'BBFAgent.target_update_tau': 1.0,
        'BBFAgent.target_action_selection': False,
    }),
    # 121 tokens (11x11 latent), ceil(121 / experts) slots, 16 features out.
    'bbf_softmoe4.gin': softmoe_bindings(4, 31, 2048, 16),
    'bbf_softmoe8.gin': softmoe_bindings(8, 16, 2048, 16),
    'bbf_tokenized1.gin': softmoe_bindings(1, 121, 8192, 16),
    'bbf_redo.gin': REDO_BINDINGS,
    'bbf_redo_no_resets.gin': dict(REDO_BINDINGS,
                                   **{'BBFAgent.no_resets_after': 0}),
    'bbf_prune90.gin': prune_bindings(0.9),
    'bbf_prune95.gin': prune_bindings(0.95),
}


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


# Helpers ------------------------------------------------------------------


def file_bindings(path):
  """{(scope, selector, parameter): value} of the bindings written in `path`."""
  gin.clear_config()
  gin.parse_config_file(str(path))
  bindings = {(scope, selector, param): value
              for (scope, selector), params in gin.config._CONFIG.items()  # pylint: disable=protected-access
              for param, value in params.items()}
  gin.clear_config()
  return bindings


def build_runner(path, tmp_path, extra=()):
  gin.parse_config_files_and_bindings([str(path)], CHEAP + list(extra))
  return run_experiment.create_runner(str(tmp_path))


def unused_bindings(bindings, runner):
  """The (scope, selector, parameter) in `bindings` that nothing used.

  Gin records in its operative config, per called configurable, the
  parameters it supplied (from a binding or a default) and leaves out those
  the caller passed explicitly; a bound parameter that is missing there was
  never read: its configurable was never called, or every caller overrode it.
  """
  operative = gin.config._OPERATIVE_CONFIG  # pylint: disable=protected-access
  unused = set()
  for scope, selector, param in bindings:
    if (selector, param) == AGENT_NAME:
      used = isinstance(runner._agent, agent_lib.BBFAgent)  # pylint: disable=protected-access
    elif (selector, param) == SCHEDULE:
      used = isinstance(runner, runner_lib.Atari100kRunner)
    else:
      used = any(
          op_selector == selector and param in values and
          set(scope.split('/') if scope else []) <= set(op_scope.split('/'))
          for (op_scope, op_selector), values in operative.items())
    if not used:
      unused.add((scope, selector, param))
  return unused


def short(selector, param):
  return f'{selector.rsplit(".", 1)[-1]}.{param}'


def comparable(value):
  """Gin references (@BBFNetwork) compare by their text."""
  if isinstance(value, gin.config.ConfigurableReference):
    return repr(value)
  return value


def reset_calendar(agent, total_steps=100_000):
  return tuple(
      t for t in range(agent.reset_every, total_steps + 1, agent.reset_every)
      if schedules.is_reset_step(t, agent.reset_every, agent.no_resets_after))


def decays_weights(agent):
  """True if the optimiser changes parameters when all gradients are 0.

  Adam's step is 0 for zero gradients and zero moments, so a non-zero update
  can only come from decoupled weight decay.
  """
  params = agent.online_params
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = jax.jit(agent.optimizer.update)(zeros, agent.optimizer_state,
                                               params)
  return any(bool(jnp.any(u != 0)) for u in jax.tree_util.tree_leaves(updates))


def agent_facts(agent):
  end = agent.cycle_steps  # first gradient step after the annealing cycle
  horizon = lambda t: schedules.update_horizon_at(
      t, agent.max_update_horizon, agent.update_horizon, agent.cycle_steps)
  gamma = lambda t: round(schedules.gamma_at(
      t, agent.min_gamma, agent.gamma, agent.cycle_steps), 9)
  config = agent._config  # pylint: disable=protected-access
  recycler, pruner = agent._redo, agent._pruner  # pylint: disable=protected-access
  return dict(
      updates_per_step=agent.num_updates_per_step,
      batches_to_group=agent.batches_to_group,
      resets=reset_calendar(agent),
      n=(agent.current_update_horizon(), horizon(end)),
      gamma=(round(agent.current_gamma(), 9), gamma(end)),
      shrink_perturb=(agent.shrink_factor, agent.perturb_factor),
      spr_weight=float(config.spr_weight),
      encoder=agent.network_def.encoder_type,
      noisy=bool(agent.noisy and agent.network_def.noisy),
      target_tau=config.target_update_tau,
      act_with_target=agent.target_action_selection,
      weight_decay=decays_weights(agent),
      redo=((recycler.every, recycler.tau, recycler.groups)
            if recycler.every else None),
      pruning=((pruner.target, pruner.start_step, pruner.end_step,
                pruner.frequency, pruner.layers) if pruner.enabled else None))


# Tests ----------------------------------------------------------------------


def test_all_files_are_covered():
  assert 'bbf.gin' in GIN_FILES
  assert set(GIN_FILES) == set(FACTS), (
      'Give every gin file its expected agent facts in FACTS.')
  assert set(GIN_FILES) - {'bbf.gin'} == set(DEVIATIONS), (
      'Give every variant its declared deviations from bbf.gin in DEVIATIONS.')


@pytest.mark.parametrize('name', GIN_FILES)
def test_runner_builds_and_every_binding_is_used(name, tmp_path):
  path = GIN_DIR / name
  written = set(file_bindings(path))
  assert written, f'{name} binds nothing'

  runner = build_runner(path, tmp_path)
  agent = runner._agent  # pylint: disable=protected-access
  assert isinstance(agent, agent_lib.BBFAgent)
  assert isinstance(runner, runner_lib.Atari100kRunner)
  runner.run_experiment()  # 1 iteration: 4 training steps, 1 eval episode
  assert runner._total_steps == 4  # pylint: disable=protected-access
  # The agent also counts the action it chose for the episode in flight.
  assert agent.training_steps in (4, 5)

  assert unused_bindings(written, runner) == set(), (
      f'{name}: bindings that no configurable used')
  expected = dict(BBF_FACTS, **FACTS[name])
  assert agent_facts(agent) == expected, name


@pytest.mark.parametrize('name', [n for n in GIN_FILES if n != 'bbf.gin'])
def test_variant_is_bbf_plus_declared_deviations(name):
  base = {(s, sel, p): comparable(v)
          for (s, sel, p), v in file_bindings(GIN_DIR / 'bbf.gin').items()}
  variant = {(s, sel, p): comparable(v)
             for (s, sel, p), v in file_bindings(GIN_DIR / name).items()}
  differences = {}
  for key in base.keys() | variant.keys():
    value = variant.get(key, REMOVED)
    if base.get(key, REMOVED) != value:
      differences[short(key[1], key[2])] = value
  assert differences == DEVIATIONS[name]

  text = (GIN_DIR / name).read_text()
  header = '\n'.join(re.match(r'((?:#.*\n)+)', text).group(1).splitlines())
  assert re.search(r'\((?:\d{4}|[^()]*et al\., \d{4})\)', header), (
      f'{name}: header cites no paper (Authors (year) / (X et al., year))')
  assert 'Deviations from gin_configs/bbf.gin' in header
  for binding in DEVIATIONS[name]:
    assert binding in header, f'{name}: header does not list {binding}'


@pytest.mark.parametrize('name', GIN_FILES)
def test_encoder_follows_file(name):
  """Width, encoder type and Impala depth of the file reach the encoder."""
  written = {short(sel, p): v
             for (_, sel, p), v in file_bindings(GIN_DIR / name).items()}
  gin.parse_config_files_and_bindings([str(GIN_DIR / name)],
                                      ['BBFNetwork.hidden_dim = 32'])
  net = networks.BBFNetwork(num_actions=6)  # other fields from gin
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 84, 84, 4)))  # traced, not run
  encoder = shapes['params']['encoder']
  width = written['BBFNetwork.width_scale']
  if written['BBFNetwork.encoder_type'] == 'impala':
    assert encoder['Conv_0']['kernel'].shape[-1] == round(16 * width)
    assert encoder['Conv_2']['kernel'].shape[-1] == round(32 * width)
    residual = [k for k in encoder if k.startswith('ResidualBlock')]
    assert len(residual) == 3 * written['ImpalaCNN.num_blocks']
  else:
    assert sorted(encoder) == ['Conv_0', 'Conv_1', 'Conv_2']
    assert encoder['Conv_0']['kernel'].shape == (8, 8, 4, round(32 * width))
  projection = shapes['params']['projection']
  if written.get('BBFNetwork.head_type') == 'softmoe':
    # Experts' first layer: (experts, token size = last stage's channels,
    # expert width); the predictor is as wide as the flattened tokens.
    experts = written['BBFNetwork.num_experts']
    kernel = projection['softmoe']['expert_kernel_0']
    assert kernel.shape == (experts, round(32 * width),
                            written['BBFNetwork.expert_width'])
    out = written.get('BBFNetwork.expert_output_dim', round(32 * width))
    assert shapes['params']['predictor']['kernel'].shape == (121 * out,) * 2
  else:
    assert projection['kernel'].shape[-1] == 32


def test_checker_reports_unused_bindings(tmp_path):
  """Bindings that gin accepts but nothing reads are reported, and only they.

  SR-SPR builds the Nature CNN, so ImpalaCNN is never called; BBFAgent passes
  `noisy` to the network explicitly, so a BBFNetwork.noisy binding is
  overridden by the caller. Gin raises no error for either.
  """
  text = (GIN_DIR / 'sr_spr.gin').read_text()
  path = tmp_path / 'sr_spr_plus_unused.gin'
  path.write_text(text + '\nImpalaCNN.num_blocks = 3\nBBFNetwork.noisy = True\n')
  written = set(file_bindings(path))
  runner = build_runner(path, tmp_path / 'run')
  assert unused_bindings(written, runner) == {
      ('', 'bbf_dopamine.networks.ImpalaCNN', 'num_blocks'),
      ('', 'bbf_dopamine.networks.BBFNetwork', 'noisy'),
  }
  assert not runner._agent.network_def.noisy  # pylint: disable=protected-access


def test_agent_name_counts_as_used_only_for_a_bbf_agent():
  binding = {('',) + AGENT_NAME}

  class NotBBFRunner:
    _agent = object()

  assert unused_bindings(binding, NotBBFRunner()) == binding
