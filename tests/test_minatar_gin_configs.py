# coding=utf-8
"""Every BBF gin file of gin_configs/minatar/ builds and uses its bindings.

For gin_configs/minatar/bbf.gin and each variant of it (bbf_*.gin, found by
glob, so a new file is tested without being listed; the Dopamine baselines
are test_minatar_baselines.py's):
  * it parses, Dopamine's `run_experiment.create_runner` builds the
    Atari100kRunner on the MinAtar environment and a BBFAgent, and the
    runner's public `run_experiment()` trains a few agent steps;
  * every binding written in the file was read by a configurable that was
    actually called (test_gin_configs.unused_bindings);
  * the values that define the variant reach the agent (reset calendar, n and
    gamma schedules, SPR weight, weight decay, ...: test_gin_configs's facts);
  * each variant equals minatar/bbf.gin except for the bindings it declares,
    and its header cites its paper and names each of them.
"""

import pathlib
import re

from dopamine.discrete_domains import run_experiment
import gin
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import runner as runner_lib
from test_gin_configs import agent_facts
from test_gin_configs import BBF_FACTS
from test_gin_configs import comparable
from test_gin_configs import file_bindings
from test_gin_configs import REMOVED
from test_gin_configs import short
from test_gin_configs import prune_bindings
from test_gin_configs import prune_facts
from test_gin_configs import REDO_BINDINGS
from test_gin_configs import REDO_FACTS
from test_gin_configs import softmoe_bindings
from test_gin_configs import unused_bindings

MINATAR_DIR = pathlib.Path(__file__).resolve().parents[1] / 'gin_configs' / (
    'minatar')
BBF_FILES = sorted(p.name for p in MINATAR_DIR.glob('bbf*.gin'))

# Each variant's bindings that differ from minatar/bbf.gin.
MINATAR_DEVIATIONS = {
    'bbf_no_resets.gin': {'BBFAgent.no_resets_after': 0},
    'bbf_no_spr.gin': {'BBFAgent.spr_weight': 0},
    'bbf_no_annealing.gin': {'BBFAgent.max_update_horizon': 3,
                             'BBFAgent.min_gamma': 0.997},
    'bbf_no_wd.gin': {'create_scaling_optimizer.weight_decay': 0.0},
    'bbf_n10.gin': {'BBFAgent.update_horizon': 10},
    'bbf_gamma099.gin': {'BBFAgent.gamma': 0.99, 'BBFAgent.min_gamma': 0.99},
    # 9 tokens (3x3 latent), ceil(9 / experts) slots; experts keep d = 32.
    'bbf_softmoe4.gin': softmoe_bindings(4, 3, 512),
    'bbf_softmoe8.gin': softmoe_bindings(8, 2, 512),
    'bbf_tokenized1.gin': softmoe_bindings(1, 9, 2048),
    'bbf_redo.gin': REDO_BINDINGS,
    'bbf_redo_no_resets.gin': dict(REDO_BINDINGS,
                                   **{'BBFAgent.no_resets_after': 0}),
    'bbf_prune90.gin': prune_bindings(0.9),
    'bbf_prune95.gin': prune_bindings(0.95),
}

# What each file must produce in the agent: differences from BBF_FACTS
# (minatar/bbf.gin keeps bbf.gin's schedules: resets every 20k agent steps,
# n 10 -> 3 and gamma 0.97 -> 0.997 over 10k, shrink / perturb 0.5).
MINATAR_FACTS = {
    'bbf.gin': {},
    'bbf_no_resets.gin': dict(resets=()),
    'bbf_no_spr.gin': dict(spr_weight=0.0),
    'bbf_no_annealing.gin': dict(n=(3, 3), gamma=(0.997, 0.997)),
    'bbf_no_wd.gin': dict(weight_decay=False),
    'bbf_n10.gin': dict(n=(10, 10)),
    'bbf_gamma099.gin': dict(gamma=(0.99, 0.99)),
    'bbf_softmoe4.gin': {},
    'bbf_softmoe8.gin': {},
    'bbf_tokenized1.gin': {},
    'bbf_redo.gin': dict(redo=REDO_FACTS),
    'bbf_redo_no_resets.gin': dict(redo=REDO_FACTS, resets=()),
    'bbf_prune90.gin': dict(pruning=prune_facts(0.9), resets=()),
    'bbf_prune95.gin': dict(pruning=prune_facts(0.95), resets=()),
}

# Cheap: a tiny network and replay, 40 agent steps (training from the 21st),
# one evaluation episode of at most 20 steps; each rebinds a parameter the
# files bind, so the set of bound parameters is unchanged.
CHEAP = [
    'BBFNetwork.hidden_dim = 16',
    'BBFNetwork.width_scale = 0.25',
    'BBFAgent.min_replay_history = 20',
    'BBFAgent.replay_capacity = 500',
    'Atari100kRunner.training_steps = 40',
    'Atari100kRunner.num_iterations = 1',
    'Atari100kRunner.num_eval_episodes = 1',
    'Atari100kRunner.max_steps_per_episode = 20',
]

pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


def test_all_files_are_covered():
  assert 'bbf.gin' in BBF_FILES and len(BBF_FILES) > 1
  assert set(BBF_FILES) - {'bbf.gin'} == set(MINATAR_DEVIATIONS), (
      'Give every MinAtar BBF variant its declared deviations from '
      'minatar/bbf.gin in MINATAR_DEVIATIONS.')
  assert set(BBF_FILES) == set(MINATAR_FACTS), (
      'Give every MinAtar BBF file its expected agent facts in MINATAR_FACTS.')


@pytest.mark.parametrize('name', BBF_FILES)
def test_runner_builds_and_every_binding_is_used(name, tmp_path):
  path = MINATAR_DIR / name
  written = set(file_bindings(path))
  gin.parse_config_files_and_bindings([str(path)], CHEAP)
  runner = run_experiment.create_runner(str(tmp_path))
  agent = runner._agent  # pylint: disable=protected-access
  assert isinstance(runner, runner_lib.Atari100kRunner)
  assert isinstance(agent, agent_lib.BBFAgent)
  assert agent.observation_shape == (10, 10, 4)  # breakout: 4 channels
  # Before training: the n / gamma schedules start at their first value.
  expected = dict(BBF_FACTS, **MINATAR_FACTS[name])
  assert agent_facts(agent) == expected, name
  runner.run_experiment()
  assert runner._total_steps == 40  # pylint: disable=protected-access
  assert agent.gradient_steps > 0
  assert unused_bindings(written, runner) == set(), (
      f'{name}: bindings that no configurable used')


@pytest.mark.parametrize('name', [n for n in BBF_FILES if n != 'bbf.gin'])
def test_variant_is_minatar_bbf_plus_declared_deviations(name):
  base = {(s, sel, p): comparable(v) for (s, sel, p), v in
          file_bindings(MINATAR_DIR / 'bbf.gin').items()}
  variant = {(s, sel, p): comparable(v) for (s, sel, p), v in
             file_bindings(MINATAR_DIR / name).items()}
  differences = {}
  for key in base.keys() | variant.keys():
    value = variant.get(key, REMOVED)
    if base.get(key, REMOVED) != value:
      differences[short(key[1], key[2])] = value
  assert differences == MINATAR_DEVIATIONS[name]

  text = (MINATAR_DIR / name).read_text()
  header = '\n'.join(re.match(r'((?:#.*\n)+)', text).group(1).splitlines())
  assert re.search(r'\((?:\d{4}|[^()]*et al\., \d{4})\)', header), (
      f'{name}: header cites no paper (Authors (year) / (X et al., year))')
  assert 'Young and Tian (2019)' in header  # MinAtar
  assert 'Deviations from gin_configs/minatar/bbf.gin' in header
  for binding in MINATAR_DEVIATIONS[name]:
    assert binding in header, f'{name}: header does not list {binding}'
  assert f'--gin_files=gin_configs/minatar/{name}' in header


STUDY_DIR = MINATAR_DIR.parents[1] / 'results' / 'minatar' / 'configs'
# The study's budget (results/minatar/configs/*.gin): rebinds only these.
STUDY_BUDGET = {'Atari100kRunner.training_steps': 1_000,
                'BBFAgent.reset_every': 2_500,
                'BBFAgent.cycle_steps': 1_250,
                'BBFAgent.diagnostics_every': 250,
                'BBFAgent.no_resets_after': 10_000,
                # ReDo and pruning: periods shrunk 8x like reset_every and
                # cycle_steps, pruning from 2k to 8k of the 10k agent steps.
                'BBFAgent.redo_every': 125,
                'BBFAgent.pruning_frequency': 125,
                'BBFAgent.pruning_total_steps': 10_000}


@pytest.mark.parametrize('name', sorted(p.name for p in STUDY_DIR.glob('*.gin')))
def test_study_config_is_its_shipped_file_on_the_study_budget(
    name, monkeypatch):
  monkeypatch.chdir(MINATAR_DIR.parents[1])  # gin resolves includes from cwd
  text = (STUDY_DIR / name).read_text()
  shipped = MINATAR_DIR / name
  assert f"include 'gin_configs/minatar/{name}'" in text
  base = {short(sel, p): comparable(v)
          for (_, sel, p), v in file_bindings(shipped).items()}
  study = {short(sel, p): comparable(v)
           for (_, sel, p), v in file_bindings(STUDY_DIR / name).items()}
  changed = {k: v for k, v in study.items() if base.get(k, REMOVED) != v}
  assert set(base) <= set(study)
  budget = {k: v for k, v in STUDY_BUDGET.items() if k in changed}
  assert changed == budget and 'Atari100kRunner.training_steps' in changed
  if name.startswith('bbf'):
    assert changed['BBFAgent.reset_every'] == 2_500
    # No reset at the end of training; none at all where the file has none.
    resets = base['BBFAgent.no_resets_after'] > 0
    assert ('BBFAgent.no_resets_after' in changed) == resets
