# coding=utf-8
"""Makes `create_agent.agent_name = 'bbf'` work in Dopamine's own binary.

Dopamine 4.1.2's `run_experiment.create_agent` is a fixed if/elif over its
built-in agents, and `create_runner` looks `create_agent` up as a module
global when it builds the Runner. Importing this module (gin files do it with
`import bbf_dopamine.plugin`) wraps that global once: names registered here
build our agents, every other name goes to Dopamine's original function
unchanged. No Dopamine file is edited.
"""

import os

import gin
from dopamine.discrete_domains import run_experiment
import tensorflow as tf

from bbf_dopamine import agent as agent_lib

# Agent name (as written in gin) -> agent class.
AGENTS = {'bbf': agent_lib.BBFAgent}
CONFIG_FILE = 'config.gin'

_dopamine_create_agent = getattr(run_experiment.create_agent,
                                 '_bbf_original', run_experiment.create_agent)


def _bound_agent_name():
  try:
    return gin.query_parameter('create_agent.agent_name')
  except ValueError:
    return None


def create_agent(sess, environment, agent_name=None, summary_writer=None,
                 debug_mode=False):
  """Same contract as Dopamine's `create_agent`, plus the names in AGENTS."""
  name = agent_name if agent_name is not None else _bound_agent_name()
  if name is not None and name.lower() in AGENTS:
    # Dopamine's Runner passes its base_dir as `summary_writer`.
    base_dir = summary_writer if isinstance(summary_writer, str) else None
    if base_dir:
      save_config(base_dir)
    if not debug_mode and _bound_debug_mode() is not True:
      summary_writer = None  # Dopamine's convention: summaries need debug_mode.
    # Dopamine's train binary calls tf.compat.v1.disable_v2_behavior(). In
    # graph mode the TF2 summary writers of the Runner's TensorboardCollector
    # (built after the agent) only build ops that no session runs, so
    # metrics/tensorboard stays empty. BBF is pure JAX: restore eager mode.
    if not tf.executing_eagerly():
      tf.compat.v1.enable_v2_behavior()
    agent = AGENTS[name.lower()](
        num_actions=environment.action_space.n,
        summary_writer=summary_writer)
    seed_environment(environment, agent.seed)
    agent.attach_environment(environment)
    if base_dir and agent.debug_dir is None:
      agent.debug_dir = os.path.join(base_dir, 'debug')
    return agent
  kwargs = {'summary_writer': summary_writer}
  if agent_name is not None:
    kwargs['agent_name'] = agent_name
  if debug_mode:
    kwargs['debug_mode'] = debug_mode
  return _dopamine_create_agent(sess, environment, **kwargs)


def seed_environment(environment, seed):
  """Seeds the game's RNG (sticky actions) with the agent's seed.

  Dopamine's `create_atari_environment` never seeds the ALE, so runs with
  sticky actions differ from one launch to the next whatever the agent's
  seed. Seeding the wrapped Gymnasium environment once makes every later
  `reset()` (Dopamine's AtariPreprocessing calls it without a seed) continue
  a reproducible stream. Environments without a Gymnasium `reset(seed=...)`
  are left alone.
  """
  inner = getattr(environment, 'environment', environment)
  try:
    inner.reset(seed=int(seed))
  except TypeError:
    return False
  return True


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


def _bound_debug_mode():
  try:
    return gin.query_parameter('create_agent.debug_mode')
  except ValueError:
    return None


create_agent._bbf_original = _dopamine_create_agent  # pylint: disable=protected-access
run_experiment.create_agent = create_agent
