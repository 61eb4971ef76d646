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

4.-7. MinAtar (gin_configs/minatar/): the observation shape comes from the
   game, Dopamine's MinAtar networks see the state's stack axis as a
   spatial one, and its Rainbow-family agents need a MinAtar network and
   (Atari100kRainbowAgent) take MinAtar's multi-channel frames; see the
   MinAtar section at the end and tests/test_minatar_baselines.py.

tests/test_baselines.py shows these defects on Dopamine's unadapted classes;
those tests fail once Dopamine fixes them, which is the signal to drop the
corresponding fix here.
"""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as onp
from dopamine.discrete_domains import atari_lib
from dopamine.jax import networks
from dopamine.jax.agents.dqn import dqn_agent
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


# MinAtar ----------------------------------------------------------------------
#
# gin_configs/minatar/{dqn,rainbow,der}.gin run the same agents on MinAtar
# (Young and Tian, 2019). There the observation is (10, 10, C), C from 4 to 10
# depending on the game; Dopamine's own MinAtar gin files
# (dopamine/labs/environments/minatar/*_<game>.gin) bind it per game with
# `%minatar_env.<GAME>_SHAPE`. Here it comes from the environment: the plugin
# passes `environment.observation_shape` to every registered agent whose
# `__init__` takes `observation_shape`, so one binding
# (`create_minatar_environment.game_name`) switches the game. What Dopamine
# 4.1.2 needs for that, and on MinAtar at all, fixed below:
#
# 4. JaxFullRainbowAgent and Atari100kRainbowAgent take no `observation_shape`
#    (only JaxDQNAgent does, and gin binds it there): `_TakesObservationShape`
#    accepts it and makes it the agent's `observation_shape`.
# 5. Dopamine's MinAtar networks (MinatarDQNNetwork, MinatarRainbowNetwork)
#    apply `nn.Conv(16, (3, 3))` to the agent's state as it comes, shape
#    (10, 10, C, stack_size) = (10, 10, C, 1): flax reads that as 10 rows
#    (a batch) of (10, C) "images" with ONE input channel, so the 3x3 kernel
#    slides over (column, object channel), never across rows: kernel
#    (3, 3, 1, 16) instead of MinAtar's (3, 3, C, 16) (Young and Tian's
#    network: 16 3x3 filters over the 10x10xC grid).
#    `minatar_stack_to_channels` (a `preprocess_fn`) folds the stack axis
#    into the channels first.
# 6. MinatarRainbowNetwork cannot serve JaxFullRainbowAgent (Rainbow, DER):
#    that agent builds its network with `noisy`, `dueling` and
#    `distributional` fields and calls it with `key` and `eval_mode`.
#    `MinatarFullRainbowNetwork` is MinatarRainbowNetwork's torso (one conv
#    layer of 16 3x3 filters, stride 1, Xavier-uniform, ReLU, no hidden
#    layer) with FullRainbowNetwork's heads (noisy / dueling /
#    distributional, Dopamine's `feature_layer`): the shape of Obando-Ceron
#    and Castro's (2021) MinAtar networks (one conv layer, no hidden layer,
#    optional noisy / dueling heads). With noisy = dueling = False it
#    computes exactly what MinatarRainbowNetwork computes (same parameters),
#    on the folded state (5).
# 7. Atari100kRainbowAgent's `_record_observation` squeezes the frame's last
#    axis, which must be Atari's single grey channel (84, 84, 1); a MinAtar
#    frame (10, 10, C) fails ("cannot select an axis to squeeze out which has
#    size not equal to one"). `MinAtar100kRainbowAgent` gives it a trailing
#    axis of 1 to squeeze.
#
# Dopamine's JaxDQNAgent takes `observation_shape` already and is registered
# unmodified as 'minatar_dqn'.

@gin.configurable
def minatar_stack_to_channels(state):
  """(..., H, W, C, stack) -> (..., H, W, C * stack), values unchanged (5).

  A `JaxDQNAgent.preprocess_fn`: applied to the agent's state (10, 10, C, 1)
  and to replay batches (B, 10, 10, C, 1) alike.
  """
  return state.reshape(state.shape[:-2] + (-1,))


@gin.configurable
class MinatarFullRainbowNetwork(nn.Module):
  """MinatarRainbowNetwork's torso with FullRainbowNetwork's heads (6).

  Takes the agent's state, (..., 10, 10, C, stack), as it comes (the stack
  axis is folded into the channels, 5), values as they are, as Dopamine's
  MinAtar networks do: `inputs_preprocessed` is accepted (JaxDQNAgent passes
  it with a `preprocess_fn`) and, as there, unused.
  """

  num_actions: int
  num_atoms: int
  noisy: bool = True
  dueling: bool = True
  distributional: bool = True
  inputs_preprocessed: bool = True

  @nn.compact
  def __call__(self, x, support, eval_mode=False, key=None):
    if key is None:  # Only `init` calls without a key; it draws no noise.
      key = jax.random.PRNGKey(0)
    x = x.astype(jnp.float32)
    x = x.reshape(x.shape[:-2] + (-1,))  # Stack axis into channels (5).
    x = nn.Conv(features=16, kernel_size=(3, 3), strides=(1, 1),
                kernel_init=nn.initializers.xavier_uniform())(x)
    x = nn.relu(x).reshape(-1)
    layer = networks.feature_layer(key, self.noisy, eval_mode=eval_mode)
    outputs = self.num_actions * self.num_atoms
    if self.dueling:
      advantage = layer(x, features=outputs).reshape(
          (self.num_actions, self.num_atoms))
      value = layer(x, features=self.num_atoms).reshape((1, self.num_atoms))
      logits = value + advantage - advantage.mean(axis=0, keepdims=True)
    else:
      logits = layer(x, features=outputs).reshape(
          (self.num_actions, self.num_atoms))
    if not self.distributional:
      return atari_lib.DQNNetworkType(logits.sum(axis=1))
    probabilities = nn.softmax(logits)
    q_values = (support * probabilities).sum(axis=1)
    return atari_lib.RainbowNetworkType(q_values, logits, probabilities)


class _TakesObservationShape(object):
  """Takes `observation_shape` and makes it the agent's (4).

  The Dopamine class's `__init__` (gin-wrapped: its bindings still apply)
  never passes `observation_shape` on; JaxDQNAgent's then writes its own
  (gin-bound or default) into `self.observation_shape`, which keeps the first
  value written: this one, when given.
  """

  def __init__(self, num_actions, observation_shape=None, **kwargs):
    if observation_shape is not None:
      self.__dict__['_bbf_observation_shape'] = tuple(observation_shape)
    super().__init__(num_actions=num_actions, **kwargs)

  @property
  def observation_shape(self):
    return self.__dict__['_bbf_observation_shape']

  @observation_shape.setter
  def observation_shape(self, value):
    self.__dict__.setdefault('_bbf_observation_shape', tuple(value))


class MinAtarFullRainbowAgent(_TakesObservationShape, JaxFullRainbowAgent):
  """JaxFullRainbowAgent (fix 1) whose observation shape is the game's (4)."""


class MinAtar100kRainbowAgent(_TakesObservationShape, Atari100kRainbowAgent):
  """Atari100kRainbowAgent (fixes 1, 2) for MinAtar frames (4, 7)."""

  def _record_observation(self, observation):
    super()._record_observation(onp.asarray(observation)[..., None])


AGENTS.update({
    'minatar_dqn': dqn_agent.JaxDQNAgent,  # Dopamine's, unmodified.
    'minatar_full_rainbow': MinAtarFullRainbowAgent,
    'minatar_100k_rainbow': MinAtar100kRainbowAgent,
})
