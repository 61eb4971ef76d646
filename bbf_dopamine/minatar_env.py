# coding=utf-8
"""MinAtar (Young and Tian, 2019) as a seeded, uint8 Dopamine environment.

MinAtar's five games (asterix, breakout, freeway, seaquest, space_invaders)
are 10x10 grids with one boolean channel per object kind (4 to 10 channels):
the CPU-scale testbed of this package. Dopamine 4.1.2 wraps MinAtar in
`dopamine.labs.environments.minatar.minatar_env`, but that wrapper
  * never seeds MinAtar's RNG (spawns, and MinAtar's own sticky actions with
    probability 0.1, which it applies whatever `sticky_actions` says), so no
    two runs are alike whatever the agent's seed, and
  * returns boolean frames, where BBF's replay and network expect uint8
    pixels scaled by 1/255.
This module is the same thin wrapper with both fixed: `seed(seed)` seeds
MinAtar (the plugin calls it with the agent's seed), observations are uint8
`pixel_scale * frame` (255 for BBF, 1 for Dopamine's MinAtar networks, which
use the values as they are), and MinAtar's sticky-action probability is a
gin parameter (0.1, MinAtar's default and the protocol of Young and Tian).
"""

import gin
import minatar
import numpy as np

GAMES = ('asterix', 'breakout', 'freeway', 'seaquest', 'space_invaders')


class _ActionSpace(object):
  def __init__(self, n):
    self.n = n


class MinAtarEnvironment(object):
  """Dopamine's environment contract (reset / step 4-tuple / game_over)."""

  def __init__(self, game_name, sticky_action_prob=0.1,
               difficulty_ramping=True, pixel_scale=255):
    if game_name not in GAMES:
      raise ValueError(f'Unknown MinAtar game {game_name!r}; MinAtar has '
                       f'{", ".join(GAMES)}.')
    self.game_name = game_name
    self.environment = minatar.Environment(
        game_name, sticky_action_prob=sticky_action_prob,
        difficulty_ramping=difficulty_ramping)
    self.action_space = _ActionSpace(self.environment.num_actions())
    self.observation_shape = tuple(self.environment.state_shape())
    self._scale = np.uint8(pixel_scale)
    self.game_over = False

  def seed(self, seed):
    self.environment.seed(int(seed))

  def _observation(self):
    return self.environment.state().astype(np.uint8) * self._scale

  def reset(self):
    self.game_over = False
    self.environment.reset()
    return self._observation()

  def step(self, action):
    reward, terminal = self.environment.act(int(action))
    self.game_over = bool(terminal)
    return self._observation(), float(reward), bool(terminal), {}


@gin.configurable
def create_minatar_environment(game_name=None, sticky_action_prob=0.1,
                               difficulty_ramping=True, pixel_scale=255):
  """Gin factory, used as `Atari100kRunner.create_environment_fn`."""
  return MinAtarEnvironment(game_name, sticky_action_prob, difficulty_ramping,
                            pixel_scale)
