# coding=utf-8
"""The agent's plasticity monitor: probe batch, churn, reset markers."""

import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import diagnostics
from bbf_dopamine import networks


def _agent(**kwargs):
  network = lambda **kw: networks.BBFNetwork(width_scale=0.25, hidden_dim=16,
                                             **kw)
  return agent_lib.BBFAgent(num_actions=3, network=network, num_atoms=5,
                            replay_capacity=300, min_replay_history=40,
                            diagnostics_batch_size=8, **kwargs)


def _fill(agent, steps=120):
  rng = np.random.default_rng(1)
  for t in range(steps):
    end = t % 30 == 29
    agent._replay.add(rng.integers(0, 256, (84, 84), np.uint8), t % 3,  # pylint: disable=protected-access
                      1.0, end, end)


def test_probe_batch_churn_and_training_stream_untouched():
  agent = _agent(diagnostics_every=10)
  _fill(agent)
  before = agent._np_rng.bit_generator.state  # pylint: disable=protected-access
  monitor = agent._plasticity  # pylint: disable=protected-access
  first = monitor.measure(agent.online_params, agent._replay)  # pylint: disable=protected-access
  assert agent._np_rng.bit_generator.state == before  # pylint: disable=protected-access
  states = monitor.probe_states
  assert states.shape == (8, 84, 84, 4) and states.dtype == np.uint8
  assert 'Plasticity/PolicyChurn' not in first  # nothing to compare yet
  # Same parameters: no churn; the numbers are diagnostics.probe's.
  again = monitor.measure(agent.online_params, agent._replay)  # pylint: disable=protected-access
  assert again['Plasticity/PolicyChurn'] == 0.0
  metrics, greedy = diagnostics.probe(
      agent.network_def, agent.online_params, states,
      agent._config.support, 0.0, 0.01)  # pylint: disable=protected-access
  for key, value in metrics.items():
    assert again[key] == float(value)
  # Other parameters: churn is the fraction of changed greedy actions.
  other = jax.tree_util.tree_map(lambda x: x + 0.5, agent.online_params)
  third = monitor.measure(other, agent._replay)  # pylint: disable=protected-access
  _, greedy_other = diagnostics.probe(agent.network_def, other, states,
                                      agent._config.support, 0.0, 0.01)  # pylint: disable=protected-access
  assert third['Plasticity/PolicyChurn'] == float(
      np.mean(np.asarray(greedy) != np.asarray(greedy_other)))
  # The probe batch is the same one after a checkpoint round trip.
  fresh = _agent(diagnostics_every=10)
  fresh._plasticity.unbundle(monitor.bundle())  # pylint: disable=protected-access
  np.testing.assert_array_equal(fresh._plasticity.probe_states, states)  # pylint: disable=protected-access


def test_measured_on_schedule_and_around_resets():
  agent = _agent(diagnostics_every=4, reset_every=50, replay_ratio=64)
  written = []
  agent._write_scalars = lambda values, step: written.append((step, values))  # pylint: disable=protected-access
  _fill(agent, 45)
  agent.training_steps = 45
  for _ in range(10):  # agent steps 45..54: training from step 41 on
    agent._train_step()  # pylint: disable=protected-access
  plasticity = [(s, v) for s, v in written
                if 'Plasticity/DormantFraction/all' in v]
  steps = [s for s, _ in plasticity]
  # Every 4 gradient steps (2 per agent step), plus before and after the
  # reset at agent step 50, the second one marked.
  assert steps == sorted(steps) and 4 in steps and 8 in steps
  marked = [s for s, v in plasticity if v.get('Plasticity/Reset') == 1.0]
  assert len(marked) == 1 and agent.num_resets == 1
  assert steps.count(marked[0]) >= 2  # before and after, same step
  assert jnp.isfinite(plasticity[-1][1]['Plasticity/SRank/penultimate'])


def test_overestimation_against_hand_computed_returns():
  agent = _agent(diagnostics_every=10)
  _fill(agent)
  monitor = agent._plasticity  # pylint: disable=protected-access
  # A completed episode, gamma 0.5: G = (1.5, 1, 2), Q - G = (-0.5, 0, -1).
  for q, r in ((1.0, 1.0), (1.0, 0.0)):
    monitor.record(q, r)
  monitor.record(1.0, 2.0, terminal=True, episode_end=True, gamma=0.5)
  # An episode cut by the time limit has no Monte-Carlo return: ignored.
  monitor.record(9.0, 0.0)
  monitor.record(9.0, 0.0, terminal=False, episode_end=True, gamma=0.5)
  values = monitor.measure(agent.online_params, agent._replay)  # pylint: disable=protected-access
  assert values['Plasticity/Overestimation'] == -0.5
  # Gaps are per measurement period.
  values = monitor.measure(agent.online_params, agent._replay)  # pylint: disable=protected-access
  assert 'Plasticity/Overestimation' not in values


def test_agent_records_the_q_of_each_action_taken():
  agent = _agent(diagnostics_every=10)
  recorded = []
  agent._plasticity.record = lambda *a, **k: recorded.append((a, k))  # pylint: disable=protected-access
  frame = np.zeros((84, 84), np.uint8)
  agent.begin_episode(frame)
  q0 = agent._q_taken  # pylint: disable=protected-access
  agent.step(1.0, frame + 1)
  q1 = agent._q_taken  # pylint: disable=protected-access
  agent.end_episode(-1.0, True)
  assert recorded[0] == ((q0, 1.0), {})
  assert recorded[1] == ((q1, -1.0, True),
                         {'episode_end': True, 'gamma': agent.current_gamma()})
  assert all(np.isfinite([q0, q1]))
