# coding=utf-8
"""Dopamine's own agents, with the smallest fixes that Dopamine 4.1.2 needs.

The gin files in gin_configs/baselines/ run Dopamine's agents through our
Atari100kRunner. Two defects of Dopamine 4.1.2 make that silently or loudly
wrong, so the Rainbow-family agents are built from the subclasses below
(registered here, built by `plugin.create_agent`); everything else (networks,
losses, replay, augmentation, every `JaxDQNAgent.*` / `JaxFullRainbowAgent.*`
/ `Atari100kRainbowAgent.*` gin binding, since gin wraps the parents'
`__init__`, which these classes inherit) is Dopamine's.

1. Prioritized replay is never used (google/dopamine issue #230, open).
   `JaxFullRainbowAgent.__init__` stores `self._replay_scheme =
   replay_scheme` and then calls `JaxDQNAgent.__init__`, which sets
   `self._replay_scheme = 'uniform'`. With `replay_scheme = 'prioritized'`
   (Rainbow, DER) every transition is stored with priority 1, priorities are
   never updated and the loss is not importance-weighted: uniform replay,
   with no error or warning. Affects JaxFullRainbowAgent and its subclass
   Atari100kRainbowAgent (and Dopamine's 'full_rainbow' agent name, which is
   why rainbow.gin uses 'jax_full_rainbow').
2. `Atari100kRainbowAgent.step` returns one action per environment. It was
   written for the batched `DataEfficientAtariRunner` of
   `dopamine/labs/atari_100k`: its `_reset_state()` (called by
   `begin_episode`) gives `state` a leading environment axis, shape
   (1, 84, 84, 4), and `step()` selects actions with a `select_action`
   vmapped over that axis, so it returns an action of shape (1,). In the
   single-environment `begin_episode / step / end_episode` contract (Dopamine's
   `Runner`, our `Atari100kRunner`) the ALE rejects it on the first `step()`:
   "TypeError: only integer scalar arrays can be converted to a scalar index"
   (ale_py/env.py, `self._action_set[action]`); and `step()` keeps it in
   `self.action`, which the next `step()` / `end_episode()` writes into the
   replay buffer. `begin_episode()` is fine (JaxFullRainbowAgent's, whose
   unbatched network flattens the (1, 84, 84, 4) state).

3. Dopamine's JAX `ReplayBuffer.save` goes through an orbax
   `CheckpointManager` cached per directory, which refuses (silently) to
   save a step at or below the newest step it has seen, even once that
   step's folder is gone. After a fallback from a damaged checkpoint N the
   runner deletes N's files and, when the run reaches N again, would write a
   new ckpt.N without any replay buffer. `sync_replay_checkpoints` makes the
   manager re-read the directory; the runner calls it after deleting files.

tests/test_baselines.py shows these defects on Dopamine's unadapted classes;
those tests fail once Dopamine fixes them, which is the signal to drop the
corresponding fix here.
"""

import numpy as onp
from dopamine.jax.agents.full_rainbow import full_rainbow_agent
from dopamine.labs.atari_100k import atari_100k_rainbow_agent


class _KeepsReplayScheme(object):
  """Keeps the first `_replay_scheme` written: the agent's `replay_scheme`.

  JaxFullRainbowAgent writes its `replay_scheme` argument first;
  JaxDQNAgent's constructor then writes 'uniform' over it (defect 1 above).
  Dopamine writes the attribute nowhere else.
  """

  @property
  def _replay_scheme(self):
    return self.__dict__['_bbf_replay_scheme']

  @_replay_scheme.setter
  def _replay_scheme(self, value):
    self.__dict__.setdefault('_bbf_replay_scheme', value)


class JaxFullRainbowAgent(_KeepsReplayScheme,
                          full_rainbow_agent.JaxFullRainbowAgent):
  """Dopamine's JaxFullRainbowAgent with its `replay_scheme` honoured (1)."""


class Atari100kRainbowAgent(_KeepsReplayScheme,
                            atari_100k_rainbow_agent.Atari100kRainbowAgent):
  """Dopamine's Atari100kRainbowAgent (DER, DrQ(eps)) for one environment.

  Fixes (1), its `replay_scheme` is honoured, and (2): `step()` returns and
  remembers the single action as a 0-d array, as `begin_episode()` and
  JaxDQNAgent do.
  """

  def step(self, reward=None, observation=None):
    action = super().step(reward, observation)
    self.action = onp.asarray(action).reshape(())
    return self.action


# Agent name (as written in gin) -> agent class. Dopamine's own create_agent
# builds its names ('jax_dqn', 'full_rainbow', ...) unchanged.
AGENTS = {
    'jax_full_rainbow': JaxFullRainbowAgent,
    'atari_100k_rainbow': Atari100kRainbowAgent,
}


def sync_replay_checkpoints(agent, checkpoint_dir):
  """Makes a Dopamine JAX replay buffer forget deleted checkpoints (fix 3)."""
  replay = getattr(agent, '_replay', None)
  make_manager = getattr(replay, '_make_checkpoint_manager', None)
  if make_manager is not None:
    make_manager(checkpoint_dir).reload()
