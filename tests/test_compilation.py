# coding=utf-8
"""Nothing recompiles during a run; replay memory stays within budget.

Annealed n and gamma, the epsilon schedule and resets enter jitted code as
traced values, so a whole run compiles the training step, action selection
and the reset once each. Counted with the jitted functions' cache sizes.
"""

import functools

import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import networks
from bbf_dopamine import replay


def test_schedules_epsilon_and_resets_do_not_recompile():
  network = functools.partial(networks.BBFNetwork, width_scale=0.25,
                              hidden_dim=16)
  agent = agent_lib.BBFAgent(
      num_actions=3, network=network, min_replay_history=30,
      epsilon_decay_period=20, replay_ratio=32, batch_size=16,
      batches_to_group=2, jumps=2, replay_capacity=500, cycle_steps=6,
      reset_every=10, no_resets_after=70)
  rng = np.random.default_rng(0)
  frame = lambda: rng.integers(0, 255, (84, 84, 1), np.uint8)
  agent.begin_episode(frame())
  sizes = []
  horizons, gammas, epsilons = set(), set(), set()
  for step in range(70):
    agent.step(float(rng.normal()), frame())
    horizons.add(agent.current_update_horizon())
    gammas.add(agent.current_gamma())
    epsilons.add(float(agent.epsilon_fn(agent.epsilon_decay_period,
                                        agent.training_steps,
                                        agent.min_replay_history,
                                        agent.epsilon_train)))
    if agent.gradient_steps and not sizes:
      # Snapshot after the first training call (one reset already done).
      sizes.append((learner.train._cache_size(),
                    learner.select_action._cache_size(),
                    agent._jit_reset._cache_size()))
      resets_at_snapshot = agent.num_resets
  final = (learner.train._cache_size(), learner.select_action._cache_size(),
           agent._jit_reset._cache_size())
  # The run really varied n, gamma and epsilon and reset three times ...
  assert len(horizons) >= 4 and len(gammas) >= 4 and len(epsilons) >= 10
  assert agent.num_resets == 6 and resets_at_snapshot <= 3
  # ... and compiled nothing new after its first training call.
  assert final == sizes[0]
  assert final[2] == 1


def test_replay_of_200k_transitions_fits_in_1_6_gb():
  buffer = replay.SubsequenceReplayBuffer(horizon=10, replay_capacity=200_000)
  total = sum(a.nbytes for a in buffer._state_arrays().values())
  # Each 84x84 frame is stored once: 200,000 * 7,056 B = 1.41 GB.
  assert buffer._frames.shape == (200_000, 84, 84)
  assert total < 1.6e9, total
