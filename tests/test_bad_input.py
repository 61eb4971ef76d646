# coding=utf-8
"""Bad configuration fails before any agent step, with a message naming it.

Each case starts from gin_configs/bbf.gin (made cheap), adds one bad binding
and goes through what Dopamine's train binary does: parse the gin files, then
`run_experiment.create_runner`, then `run_experiment()`. The error must come
from parsing or construction (no agent step is taken) and must name the
offending value or knob.
"""

import pathlib

from dopamine.discrete_domains import run_experiment
import gin
import gymnasium
import pytest

from bbf_dopamine import agent as agent_lib
from test_gin_configs import CHEAP

ROOT = pathlib.Path(__file__).resolve().parents[1]
BBF_GIN = str(ROOT / 'gin_configs' / 'bbf.gin')


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


@pytest.fixture
def agent_steps(monkeypatch):
  """Counts BBFAgent.begin_episode / step calls."""
  calls = []
  for method in ('begin_episode', 'step'):
    original = getattr(agent_lib.BBFAgent, method)

    def spy(self, *args, _original=original, **kwargs):
      calls.append(1)
      return _original(self, *args, **kwargs)

    monkeypatch.setattr(agent_lib.BBFAgent, method, spy)
  return calls


def train(tmp_path, binding):
  """What dopamine.discrete_domains.train does, with one extra binding."""
  gin.parse_config_files_and_bindings([BBF_GIN], CHEAP + [binding])
  runner = run_experiment.create_runner(str(tmp_path))
  runner.run_experiment()


@pytest.mark.parametrize('binding, error, match', [
    ("atari_lib.create_atari_environment.game_name = 'NotAGame'",
     gymnasium.error.Error, 'NotAGame'),
    ('BBFNetwork.width_scale = 0', ValueError, 'width_scale'),
    ('BBFNetwork.hidden_dim = 0', ValueError, 'hidden_dim'),
    ("BBFNetwork.encoder_type = 'resnet'", ValueError, 'encoder_type'),
    ('BBFAgent.reset_every = 0', ValueError, 'reset_every'),
    # batch_size is 32: 48 / 32 is not a whole number of gradient steps.
    ('BBFAgent.replay_ratio = 48', ValueError, 'replay_ratio=48'),
    ("BBFAgent.replay_scheme = 'uniformly'", ValueError, 'uniformly'),
    ("create_agent.agent_name = 'bbff'", ValueError, 'bbff'),
    # Unknown names: gin rejects them while parsing.
    ('BBFAgent.not_a_knob = 1', ValueError, 'not_a_knob'),
    ('NotAConfigurable.width = 1', ValueError, 'NotAConfigurable'),
])
def test_bad_binding_fails_before_training(binding, error, match, tmp_path,
                                           agent_steps):
  with pytest.raises(error, match=match):
    train(tmp_path, binding)
  assert not agent_steps


def test_good_configuration_trains(tmp_path, agent_steps):
  """The same path without a bad binding runs (so the cases above are real)."""
  train(tmp_path, 'BBFAgent.seed = 1')
  assert len(agent_steps) >= 4
