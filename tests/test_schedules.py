# coding=utf-8
"""BBF's annealing schedules and reset calendar against hand-computed values,
and the restart of both schedules at an agent reset."""

import functools
import math

import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import networks
from bbf_dopamine import schedules


@pytest.mark.parametrize('step, expected', [
    (0, 10),
    # round(10 * 0.3^(1/2)) = round(5.477...) = 5
    (5000, 5),
    (10000, 3),
    (20000, 3),
])
def test_update_horizon_at(step, expected):
  n = schedules.update_horizon_at(step, 10, 3, 10000)
  assert n == expected
  assert isinstance(n, int)


def test_update_horizon_is_monotone_and_hits_each_value():
  values = [schedules.update_horizon_at(t, 10, 3, 10000)
            for t in range(0, 10001, 10)]
  assert values[0] == 10 and values[-1] == 3
  assert all(a >= b for a, b in zip(values, values[1:]))
  assert sorted(set(values)) == list(range(3, 11))
  # n drops from 10 to 9 where 10 * 0.3^(t/T) < 9.5:
  # t > T * ln(0.95) / ln(0.3).
  t_switch = 10000 * math.log(0.95) / math.log(0.3)
  assert schedules.update_horizon_at(math.floor(t_switch), 10, 3, 10000) == 10
  assert schedules.update_horizon_at(math.ceil(t_switch), 10, 3, 10000) == 9


@pytest.mark.parametrize('step, expected', [
    (0, 0.97),
    (5000, 1.0 - 0.03 * 0.1 ** 0.5),  # 0.990513...
    (10000, 0.997),
    (20000, 0.997),
])
def test_gamma_at(step, expected):
  gamma = schedules.gamma_at(step, 0.97, 0.997, 10000)
  assert gamma == pytest.approx(expected, abs=1e-12)


def test_gamma_at_quarter_point():
  # 1 - gamma(T/4) = 0.03 * 0.1^(1/4)
  assert schedules.gamma_at(2500, 0.97, 0.997, 10000) == pytest.approx(
      1.0 - 0.03 * 0.1 ** 0.25, abs=1e-12)


def test_is_reset_step_default_calendar():
  hits = [s for s in range(0, 100001)
          if schedules.is_reset_step(s, 20000, 100000)]
  assert hits == [20000, 40000, 60000, 80000]


def test_is_reset_step_every_5000():
  hits = [s for s in range(0, 100001)
          if schedules.is_reset_step(s, 5000, 100000)]
  assert hits == list(range(5000, 95001, 5000))
  assert len(hits) == 19


@pytest.fixture(scope='module')
def agent():
  # One agent for the module: building it and its first (jitted) reset
  # compile for seconds; every test sets the counters it relies on.
  return agent_lib.BBFAgent(
      num_actions=4,
      network=functools.partial(networks.BBFNetwork, width_scale=0.25,
                                hidden_dim=32),
      replay_capacity=1000,
      min_replay_history=10)


def _rewind(agent):
  agent.gradient_steps = agent.cycle_start = agent.num_resets = 0
  agent.training_steps = 0


def test_schedules_restart_after_reset(agent):
  _rewind(agent)
  assert agent.current_update_horizon() == 10
  assert agent.current_gamma() == pytest.approx(0.97)
  agent.gradient_steps = 5000
  assert agent.current_update_horizon() == 5
  assert agent.current_gamma() == pytest.approx(1.0 - 0.03 * 0.1 ** 0.5)
  agent.reset_networks()
  assert agent.num_resets == 1
  assert agent.cycle_start == 5000
  assert agent.current_update_horizon() == 10
  assert agent.current_gamma() == pytest.approx(0.97)
  # Half a cycle after the reset: the midpoint values again.
  agent.gradient_steps = 10000
  assert agent.current_update_horizon() == 5
  assert agent.current_gamma() == pytest.approx(1.0 - 0.03 * 0.1 ** 0.5)
  agent.gradient_steps = 15000
  assert agent.current_update_horizon() == 3
  assert agent.current_gamma() == pytest.approx(0.997)
  agent.gradient_steps = 40000
  assert agent.current_update_horizon() == 3
  assert agent.current_gamma() == pytest.approx(0.997)
  # A reset after the cycle has finished restarts it too.
  agent.reset_networks()
  assert agent.num_resets == 2
  assert agent.cycle_start == 40000
  assert agent.current_update_horizon() == 10
  assert agent.current_gamma() == pytest.approx(0.97)


def test_agent_resets_on_the_calendar(agent, monkeypatch):
  # Drive the agent's step bookkeeping with an empty replay (no gradient
  # steps) and record resets: reset_every=3, no_resets_after=10 -> resets
  # once 3 and 6 agent steps have been taken (9 + 3 > 10).
  _rewind(agent)
  monkeypatch.setattr(agent, 'reset_every', 3)
  monkeypatch.setattr(agent, 'no_resets_after', 10)
  calls = []
  monkeypatch.setattr(agent, 'reset_networks',
                      lambda: calls.append(agent.training_steps))
  for _ in range(12):
    agent._train_step()  # pylint: disable=protected-access
  assert calls == [3, 6]
  assert agent.gradient_steps == 0
  assert agent.training_steps == 12
