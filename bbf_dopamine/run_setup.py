# coding=utf-8
"""What a run sets up around training: its files, TensorFlow mode, seeds.

Shared by the runner, the plugin and the tools (evaluate, record): the
operative gin config written into base_dir, the package versions recorded
with every run, the seeding of environments (Dopamine seeds none), and the
switch back to eager TensorFlow without which Dopamine's TensorBoard
collector writes nothing under its train binary.
"""

from importlib import metadata
import json
import os
import platform

import gin
import tensorflow as tf

CONFIG_FILE = 'config.gin'


def save_config(base_dir):
  """Writes every gin binding of this run to base_dir/config.gin.

  Written before training starts, so a run can always be reproduced from its
  own directory; a resumed run overwrites it with the (same) bindings.
  """
  os.makedirs(base_dir, exist_ok=True)
  path = os.path.join(base_dir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    f.write(gin.config_str())
  os.replace(path + '.tmp', path)


def enable_eager_tensorflow():
  """Undoes the train binary's tf.compat.v1.disable_v2_behavior().

  In graph mode the TF2 summary writers of the Runner's TensorboardCollector
  (and of Dopamine's JAX agents) only build ops that no session runs, so
  metrics/tensorboard stays empty. JAX agents need no graph mode.
  """
  if not tf.executing_eagerly():
    tf.compat.v1.enable_v2_behavior()


def seed_environment(environment, seed):
  """Seeds the game's RNG (sticky actions, spawns) with the agent's seed.

  Dopamine's `create_atari_environment` never seeds the ALE, so runs with
  sticky actions differ from one launch to the next whatever the agent's
  seed. Seeding the wrapped Gymnasium environment once makes every later
  `reset()` (Dopamine's AtariPreprocessing calls it without a seed) continue
  a reproducible stream. Environments with a `seed(seed)` method (our MinAtar
  wrapper) are seeded through it; others are left alone.

  Returns:
    Whether the environment was seeded.
  """
  if callable(getattr(environment, 'seed', None)):
    environment.seed(int(seed))
    return True
  inner = getattr(environment, 'environment', environment)
  try:
    inner.reset(seed=int(seed))
  except TypeError:
    return False
  return True


def write_json(path, value):
  with open(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(path + '.tmp', path)


def game_name():
  """(game bound in gin, domain 'atari' or 'minatar'), or (None, None)."""
  for key, domain in (
      ('atari_lib.create_atari_environment.game_name', 'atari'),
      ('create_atari_environment.game_name', 'atari'),
      ('create_minatar_environment.game_name', 'minatar')):
    try:
      return gin.query_parameter(key), domain
    except ValueError:
      continue
  return None, None


def versions():
  """Versions of the packages that determine a run's numbers."""
  names = ('bbf-dopamine', 'dopamine-rl', 'jax', 'jaxlib', 'flax', 'optax',
           'numpy', 'tensorflow', 'ale-py', 'gymnasium', 'gin-config')
  found = {}
  for name in names:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = None
  found['python'] = platform.python_version()
  return found
