# coding=utf-8
"""Makes `create_agent.agent_name = 'bbf'` and `create_runner.schedule =
'atari_100k'` work in Dopamine's own binary.

Dopamine 4.1.2's `run_experiment.create_agent` and `create_runner` are fixed
if/elifs over its built-in agents and runners, looked up as module globals by
Dopamine's train binary (`create_runner`) and by `create_runner`
(`create_agent`). Importing this module (gin files do it with
`import bbf_dopamine.plugin`) wraps both globals once: names registered here
build ours, every other name goes to Dopamine's original function unchanged.
No Dopamine file is edited.
"""

import inspect
import os

import gin
from dopamine.discrete_domains import run_experiment

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import baselines
from bbf_dopamine import runner as runner_lib

# Agent name (as written in gin) -> agent class.
AGENTS = {'bbf': agent_lib.BBFAgent, **baselines.AGENTS}
# create_runner.schedule (as written in gin) -> runner class.
RUNNERS = {'atari_100k': runner_lib.Atari100kRunner}
CONFIG_FILE = runner_lib.CONFIG_FILE

_dopamine_create_agent = getattr(run_experiment.create_agent,
                                 '_bbf_original', run_experiment.create_agent)
_dopamine_create_runner = getattr(run_experiment.create_runner,
                                  '_bbf_original', run_experiment.create_runner)


def _bound(parameter):
  try:
    return gin.query_parameter(parameter)
  except ValueError:
    return None


def create_runner(base_dir, schedule=None):
  """Same contract as Dopamine's `create_runner`, plus the names in RUNNERS."""
  name = schedule if schedule is not None else _bound('create_runner.schedule')
  if name is not None and name in RUNNERS:
    return RUNNERS[name](base_dir, run_experiment.create_agent)
  if schedule is not None:
    return _dopamine_create_runner(base_dir, schedule=schedule)
  return _dopamine_create_runner(base_dir)


def create_agent(sess, environment, agent_name=None, summary_writer=None,
                 debug_mode=False):
  """Same contract as Dopamine's `create_agent`, plus the names in AGENTS."""
  name = (agent_name if agent_name is not None
          else _bound('create_agent.agent_name'))
  if name is not None and name.lower() in AGENTS:
    # Dopamine's Runner passes its base_dir as `summary_writer`.
    base_dir = summary_writer if isinstance(summary_writer, str) else None
    if base_dir:
      save_config(base_dir)
    if not debug_mode and _bound('create_agent.debug_mode') is not True:
      summary_writer = None  # Dopamine's convention: summaries need debug_mode.
    runner_lib.enable_eager_tensorflow()
    agent_class = AGENTS[name.lower()]
    kwargs = {}
    if (hasattr(environment, 'observation_shape') and 'observation_shape' in
        inspect.signature(agent_class.__init__).parameters):
      # MinAtar: (10, 10, C), C depends on the game, so it comes from the
      # environment instead of a per-game gin binding.
      kwargs['observation_shape'] = environment.observation_shape
    agent = agent_class(num_actions=environment.action_space.n,
                        summary_writer=summary_writer, **kwargs)
    seed = getattr(agent, 'seed', getattr(agent, '_seed', None))
    if seed is not None:
      seed_environment(environment, seed)
    if hasattr(agent, 'attach_environment'):
      agent.attach_environment(environment)
    if base_dir and getattr(agent, 'debug_dir', False) is None:
      agent.debug_dir = os.path.join(base_dir, 'debug')
    return agent
  kwargs = {'summary_writer': summary_writer}
  if agent_name is not None:
    kwargs['agent_name'] = agent_name
  if debug_mode:
    kwargs['debug_mode'] = debug_mode
  return _dopamine_create_agent(sess, environment, **kwargs)


seed_environment = runner_lib.seed_environment
save_config = runner_lib.save_config

create_agent._bbf_original = _dopamine_create_agent  # pylint: disable=protected-access
run_experiment.create_agent = create_agent
create_runner._bbf_original = _dopamine_create_runner  # pylint: disable=protected-access
run_experiment.create_runner = create_runner
