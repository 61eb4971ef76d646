# coding=utf-8
"""Evaluation episodes of the Atari 100k protocol, many environments at once.

The protocol (Kaiser et al. 2020, as run by DER, DrQ, SPR and BBF) scores an
agent by the mean return of a fixed number of evaluation episodes, each
starting with up to `max_noops` random no-ops and cut at
`max_steps_per_episode` agent steps. Environments are stepped one after the
other, but action selection is batched across them when the agent offers
`eval_actions(states)` (BBFAgent does): one network call per tick instead of
one per environment. Other Dopamine agents are driven through their own
`begin_episode` / `step` with their frame stack swapped per environment, so
they are evaluated unmodified.

A life loss ends the agent's episode but not the game (Dopamine's Runner
does the same with `terminal_on_life_loss`): the frame stack restarts.
"""

import copy

import numpy as np

# Agent attributes that carry the training episode in flight; evaluation
# must leave them as it found them.
_AGENT_EPISODE_ATTRIBUTES = ('state', '_observation', '_last_observation',
                             'action')


def start_episode(env, rng, max_noops):
  """Resets `env` and plays 0..max_noops no-ops (action 0 is NOOP in ALE)."""
  observation = env.reset()
  for _ in range(int(rng.integers(0, max_noops + 1))):
    observation, _, _, _ = env.step(0)
    if getattr(env, 'game_over', False):
      observation = env.reset()
  return observation


def save_agent_episode(agent):
  return {name: copy.deepcopy(getattr(agent, name))
          for name in _AGENT_EPISODE_ATTRIBUTES if hasattr(agent, name)}


def restore_agent_episode(agent, saved):
  for name, value in saved.items():
    setattr(agent, name, value)


class _BatchedPolicy(object):
  """Keeps one frame stack per environment; one agent call per tick."""

  def __init__(self, agent, num_envs):
    self._agent = agent
    stack = np.asarray(agent.state).shape  # (h, w[, C], S)
    self._states = np.zeros((num_envs,) + stack, np.uint8)  # (E, h, w, S)

  def act(self, env_ids, observations, begins):
    for i, observation, begin in zip(env_ids, observations, begins):
      if begin:
        self._states[i] = 0
      self._states[i] = np.roll(self._states[i], -1, axis=-1)
      self._states[i, ..., -1] = np.reshape(observation,
                                            self._states.shape[1:-1])
    # Always all E stacks, so the jitted function sees one shape.
    actions = np.asarray(self._agent.eval_actions(self._states))  # (E,)
    return [int(actions[i]) for i in env_ids]


class _SequentialPolicy(object):
  """Any Dopamine agent: its own begin_episode / step, stack swapped in."""

  def __init__(self, agent, num_envs):
    self._agent = agent
    self._states = [np.zeros_like(agent.state) for _ in range(num_envs)]

  def act(self, env_ids, observations, begins):
    actions = []
    for i, observation, begin in zip(env_ids, observations, begins):
      self._agent.state = self._states[i]
      if begin:
        action = self._agent.begin_episode(observation)
      else:
        action = self._agent.step(0.0, observation)
      self._states[i] = self._agent.state
      actions.append(int(action))
    return actions


def evaluate(agent, envs, num_episodes, rng, max_noops=30,
             max_steps_per_episode=27_000):
  """Runs `num_episodes` evaluation episodes over `envs`.

  Args:
    agent: a Dopamine agent; put in eval mode for the duration.
    envs: environments (Dopamine's Atari preprocessing interface); at most
      `num_episodes` of them are used, each running episodes until all
      `num_episodes` have started.
    num_episodes: how many episodes to score.
    rng: numpy Generator for the no-ops.
    max_noops: up to this many no-ops at every episode start.
    max_steps_per_episode: episodes are cut (and scored) at this length.

  Returns:
    dict with `returns` and `lengths`, lists in the order episodes started.
  """
  envs = list(envs)[:num_episodes]
  saved, was_eval = save_agent_episode(agent), agent.eval_mode
  agent.eval_mode = True
  policy_class = (_BatchedPolicy if callable(getattr(agent, 'eval_actions',
                                                     None))
                  else _SequentialPolicy)
  policy = policy_class(agent, len(envs))
  returns, lengths = [0.0] * num_episodes, [0] * num_episodes
  episode_of = list(range(len(envs)))  # env -> episode it is playing
  started = len(envs)
  observations = [start_episode(env, rng, max_noops) for env in envs]
  begins = [True] * len(envs)
  live = list(range(len(envs)))
  try:
    while live:
      actions = policy.act(live, [observations[i] for i in live],
                           [begins[i] for i in live])
      still_live = []
      for i, action in zip(live, actions):
        env, episode = envs[i], episode_of[i]
        observation, reward, terminal, _ = env.step(action)
        returns[episode] += float(reward)
        lengths[episode] += 1
        observations[i], begins[i] = observation, bool(terminal)
        if env.game_over or lengths[episode] >= max_steps_per_episode:
          if started == num_episodes:
            continue
          episode_of[i], started = started, started + 1
          observations[i] = start_episode(env, rng, max_noops)
          begins[i] = True
        still_live.append(i)
      live = still_live
  finally:
    agent.eval_mode = was_eval
    restore_agent_episode(agent, saved)
  return {'returns': returns, 'lengths': lengths}
