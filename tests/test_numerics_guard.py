# coding=utf-8
"""A non-finite loss stops training at once, names the step and quantity,
saves the offending batch and never reaches a checkpoint."""

import functools
import os

import numpy as np
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import networks


def _agent(debug_dir):
  network = functools.partial(networks.BBFNetwork, width_scale=0.25,
                              hidden_dim=16)
  return agent_lib.BBFAgent(
      num_actions=3, network=network, min_replay_history=20,
      replay_ratio=32, batch_size=8, batches_to_group=4, jumps=2,
      replay_capacity=200, debug_dir=str(debug_dir))


def _run(agent, steps, reward_fn):
  rng = np.random.default_rng(0)
  agent.begin_episode(rng.integers(0, 255, (84, 84, 1), np.uint8))
  for t in range(steps):
    agent.step(reward_fn(t), rng.integers(0, 255, (84, 84, 1), np.uint8))


def test_nan_reward_stops_training_with_a_named_error(tmp_path):
  agent = _agent(tmp_path / 'debug')
  _run(agent, 25, lambda t: 0.0)  # healthy training first
  healthy_steps = agent.gradient_steps
  assert healthy_steps > 0
  with pytest.raises(FloatingPointError,
                     match=r'Non-finite loss at gradient step \d+'):
    _run(agent, 40, lambda t: float('nan') if t % 2 else 0.0)
  saved = os.listdir(tmp_path / 'debug')
  assert len(saved) == 1 and saved[0].startswith('nonfinite_step_')
  with np.load(tmp_path / 'debug' / saved[0]) as data:
    assert np.isnan(data['rewards']).any()
    assert not data['FiniteLoss'].all()
  # The counters were not advanced past the failing call, so nothing after
  # it (a checkpoint included) ran.
  step = int(saved[0][len('nonfinite_step_'):-len('.npz')])
  assert healthy_steps < step <= agent.gradient_steps + 4
  assert not any(f.startswith('bbf_replay') for f in os.listdir(tmp_path))


def test_finite_training_is_not_stopped(tmp_path):
  agent = _agent(tmp_path / 'debug')
  _run(agent, 30, lambda t: float(t % 3 - 1))
  assert agent.gradient_steps == 4 * (30 - 20)
  assert not (tmp_path / 'debug').exists()
