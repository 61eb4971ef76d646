# coding=utf-8
"""Re-evaluates a checkpoint of a training run, without training.

    python -m bbf_dopamine.evaluate --base_dir runs/demo [--checkpoint N]
      [--num_episodes 10] [--max_noops M] [--max_steps_per_episode S]
      [--num_envs E] [--seed 0] [--gin_bindings 'BBFAgent.epsilon_eval = 0']

Environments and agent are built as the run built them, from its own
`base_dir/config.gin` (plus any `--gin_bindings`) through Dopamine's
`run_experiment.create_agent` as wrapped by `plugin.py`, so any agent of a
run works (BBF, Dopamine's JAX agents). The weights come from
`checkpoints/ckpt.N` (the newest complete one by default) through the
agent's own `unbundle`, which for BBF also loads the replay file (unused).
Episodes are played by `evaluation.evaluate`, the code that scores a run
after training, and saved to `evaluations/eval_ckpt<N>_<timestamp>.json`.
`--seed` fixes the no-ops, each environment's ALE (sticky actions) and the
agent's acting RNG (evaluation epsilon); returns also depend on `--num_envs`
(which environment plays which episode), so the file records it.
`--max_noops` and `--max_steps_per_episode` default to the run's own
(`Atari100kRunner.*`: 30 and 27,000 in bbf.gin, no no-ops for MinAtar).
"""

import dataclasses
import json
import os
import pickle
import sys
import time
from typing import Any, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from dopamine.discrete_domains import atari_lib
from dopamine.discrete_domains import run_experiment
import gin
import jax
import numpy as np

from bbf_dopamine import checkpoints
from bbf_dopamine import evaluation
from bbf_dopamine import plugin  # pylint: disable=unused-import
from bbf_dopamine import run_setup
from bbf_dopamine import scores

EVALUATIONS_DIR = 'evaluations'
# The Atari 100k protocol, for runs whose runner binds neither value.
DEFAULT_MAX_NOOPS, DEFAULT_MAX_STEPS_PER_EPISODE = 30, 27_000
# Environments side by side when num_envs is not given (as the runner's).
DEFAULT_MAX_ENVS = 100


class EvaluationError(Exception):
  """A problem with the user's input: one line of text, no traceback."""


@dataclasses.dataclass
class RestoredRun:
  """An agent with a checkpoint's weights, and environments built for it."""
  agent: Any
  environments: List[Any]
  checkpoint: int  # N of ckpt.N: the agent steps trained.
  checkpoint_path: str
  game: Optional[str]  # The gin-bound game, if any.
  domain: Optional[str]  # 'atari', 'minatar' or None.
  seed: int  # What the environments and the acting RNG were seeded with.
  max_noops: int  # The evaluation protocol: the run's unless overridden.
  max_steps_per_episode: int


def check_integer(name, value, low):
  """Raises EvaluationError unless `value` is None or an integer >= low."""
  if value is not None and (int(value) != value or value < low):
    raise EvaluationError(f'--{name} must be an integer >= {low}, got '
                          f'{value!r}.')


def _checkpoint_number(checkpoint_dir, requested):
  available = checkpoints.complete_numbers(checkpoint_dir)
  if not available:
    raise EvaluationError(
        f'No complete checkpoint in {checkpoint_dir} (a run writes ckpt.N '
        'with sentinel_checkpoint_complete.N there when an iteration ends).')
  if requested is not None and requested not in available:
    raise EvaluationError(
        f'Checkpoint {requested} is not among the complete checkpoints of '
        f'{checkpoint_dir}; available: '
        f'{", ".join(str(n) for n in available)}.')
  return (available[0] if requested is None else requested), available


def _unreadable(path, error, available, number):
  others = [str(n) for n in available if n != number]
  hint = (f' Other complete checkpoints: {", ".join(others)} (--checkpoint).'
          if others else '')
  return EvaluationError(f'Cannot restore checkpoint {path}: '
                         f'{type(error).__name__}: {error}.{hint}')


def _runner_binding(name, default):
  """What gin gave the run's runner for `name`, else `default`."""
  for selector in ('Atari100kRunner', 'Runner'):
    try:
      bound = gin.get_bindings(selector).get(name)
    except (ValueError, KeyError):  # Not registered in this configuration.
      bound = None
    if bound is not None:
      return bound
  return default


def restore_run(base_dir, checkpoint=None, gin_bindings=(), num_envs=1,
                seed=0, max_noops=None, max_steps_per_episode=None):
  """Rebuilds a run's agent and environments and loads a checkpoint.

  Replaces the process's gin configuration with the run's.

  Args:
    base_dir: the run directory (holds config.gin and checkpoints/).
    checkpoint: N of checkpoints/ckpt.N; None for the newest complete one.
    gin_bindings: extra gin bindings, applied after config.gin.
    num_envs: environments to build (the agent is built with the first).
    seed: seeds every environment's ALE and the agent's acting RNG.
    max_noops: up to this many random no-ops at every episode start; None:
      the run's.
    max_steps_per_episode: episodes are cut (and scored) at this many agent
      steps; None: the run's.

  Returns:
    A RestoredRun.

  Raises:
    EvaluationError: no config.gin, no (such) complete checkpoint, an
      unreadable checkpoint, gin bindings that do not parse, a bad number.
  """
  check_integer('num_envs', num_envs, 1)
  check_integer('max_noops', max_noops, 0)
  check_integer('max_steps_per_episode', max_steps_per_episode, 1)
  config = os.path.join(base_dir, run_setup.CONFIG_FILE)
  if not os.path.isfile(config):
    raise EvaluationError(
        f'{config} not found: --base_dir must be the directory of a training '
        'run (its config.gin holds the gin bindings to rebuild it).')
  checkpoint_dir = os.path.join(base_dir, 'checkpoints')
  number, available = _checkpoint_number(checkpoint_dir, checkpoint)
  path = os.path.join(checkpoint_dir,
                      f'{checkpoints.CHECKPOINT_PREFIX}.{number}')
  try:  # Before anything is built: a broken file fails in a second.
    with open(path, 'rb') as f:
      data = pickle.load(f)
    if not isinstance(data, dict):
      raise ValueError(f'holds a {type(data).__name__}, not a checkpoint')
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(path, error, available, number) from error

  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([config], list(gin_bindings),
                                        skip_unknown=False)
  except Exception as error:  # pylint: disable=broad-except
    raise EvaluationError(f'Cannot apply {config} with --gin_bindings '
                          f'{list(gin_bindings)}: {error}') from error

  make_environment = _runner_binding('create_environment_fn',
                                     atari_lib.create_atari_environment)
  environments = [make_environment() for _ in range(num_envs)]
  # summary_writer=None: given base_dir, the plugin would rewrite the run's
  # config.gin (with our extra bindings) and agents would write summaries.
  agent = run_experiment.create_agent(None, environments[0],
                                      summary_writer=None)
  try:
    if not agent.unbundle(checkpoint_dir, number, data):
      raise ValueError(f'{type(agent).__name__}.unbundle refused it (are its '
                       'companion files, e.g. the replay buffer, there?)')
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(path, error, available, number) from error
  # Seeded after unbundle, which puts BBF's training episode (ALE state and
  # RNG) back into the first environment; one stream per environment from
  # one seed, as the runner's evaluation.
  for index, env in enumerate(environments):
    run_setup.seed_environment(
        env, np.random.SeedSequence([seed, 1, index]).generate_state(1)[0])
  if isinstance(getattr(agent, '_rng', None), jax.Array):
    # The checkpoint's acting RNG would tie the epsilon draws to the run
    # instead of to --seed (Dopamine's JAX agents and BBF both use _rng).
    agent._rng = jax.random.PRNGKey(seed)  # pylint: disable=protected-access
  logging.info('Restored %s from %s.', type(agent).__name__, path)
  if max_noops is None:
    max_noops = _runner_binding('max_noops', DEFAULT_MAX_NOOPS)
  if max_steps_per_episode is None:
    max_steps_per_episode = _runner_binding('max_steps_per_episode',
                                            DEFAULT_MAX_STEPS_PER_EPISODE)
  return RestoredRun(agent, environments, number, path,
                     *run_setup.game_name(), seed,
                     max_noops, max_steps_per_episode)


def evaluate_restored(run, num_episodes):
  """Evaluation episodes of a RestoredRun: {'returns', 'lengths'}.

  The first call returns what `evaluate_run` does with the same arguments;
  a second one continues the environments' and the agent's random streams.
  """
  # [seed, 2]: a stream apart from the environments' ([seed, 1, index]).
  rng = np.random.default_rng([run.seed, 2])
  return evaluation.evaluate(run.agent, run.environments, num_episodes, rng,
                             run.max_noops, run.max_steps_per_episode)


def _output_path(base_dir, number):
  directory = os.path.join(base_dir, EVALUATIONS_DIR)
  os.makedirs(directory, exist_ok=True)
  stem = f'eval_ckpt{number}_{time.strftime("%Y%m%d-%H%M%S")}'
  path, suffix = os.path.join(directory, stem + '.json'), 0
  while os.path.exists(path):  # Two evaluations within one second.
    suffix += 1
    path = os.path.join(directory, f'{stem}-{suffix}.json')
  return path


def evaluate_run(base_dir, checkpoint=None, num_episodes=10, max_noops=None,
                 max_steps_per_episode=None, num_envs=None, gin_bindings=(),
                 seed=0):
  """Evaluates a run's checkpoint and saves every return.

  Args:
    base_dir, checkpoint, max_noops, max_steps_per_episode, gin_bindings,
      seed: as for `restore_run`.
    num_episodes: evaluation episodes.
    num_envs: environments stepped side by side; None: one per episode, at
      most DEFAULT_MAX_ENVS.

  Returns:
    The record saved as JSON, plus its `path`.

  Raises:
    EvaluationError: bad arguments or an unusable run directory.
  """
  check_integer('num_episodes', num_episodes, 1)
  check_integer('num_envs', num_envs, 1)
  # evaluate() uses no more environments than episodes.
  num_envs = min(num_envs or DEFAULT_MAX_ENVS, num_episodes)
  run = restore_run(base_dir, checkpoint, gin_bindings, num_envs, seed,
                    max_noops, max_steps_per_episode)
  start = time.time()
  results = evaluate_restored(run, num_episodes)
  mean = float(np.mean(results['returns']))
  normalized = None
  # Human scores exist for the 26 Atari games only (MinAtar reuses names
  # such as 'breakout').
  if run.domain == 'atari' and scores.is_atari_100k_game(run.game):
    normalized = scores.human_normalized(run.game, mean)
  record = {
      'base_dir': os.path.abspath(base_dir), 'checkpoint': run.checkpoint,
      'checkpoint_path': os.path.abspath(run.checkpoint_path),
      'agent': type(run.agent).__name__, 'game': run.game,
      'domain': run.domain, 'num_episodes': num_episodes,
      'num_envs': num_envs, 'max_noops': run.max_noops,
      'max_steps_per_episode': run.max_steps_per_episode, 'seed': seed,
      'gin_bindings': list(gin_bindings),
      'returns': [float(r) for r in results['returns']],
      'lengths': [int(n) for n in results['lengths']],
      'mean_return': mean, 'human_normalized_mean': normalized,
      'seconds': time.time() - start,
      'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
  }
  path = _output_path(base_dir, run.checkpoint)
  with open(path, 'w') as f:
    json.dump(record, f, indent=1)
  record['path'] = path
  return record


def define_restore_flags():
  """Flags shared with record.py; defined only when run as a program.

  Importing the module next to other absl programs then cannot clash over
  names such as --seed.
  """
  flags.DEFINE_string('base_dir', None, 'The training run\'s directory.')
  flags.DEFINE_integer('checkpoint', None, 'Agent step N of checkpoints/'
                       'ckpt.N (default: the newest complete checkpoint).')
  flags.DEFINE_integer('max_noops', None, 'Up to this many random no-ops at '
                       'every episode start (default: the run\'s '
                       f'Atari100kRunner.max_noops, else {DEFAULT_MAX_NOOPS}).')
  flags.DEFINE_integer('seed', 0, 'Seed of the no-ops, the environments and '
                       'the evaluation epsilon.')
  flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings applied after '
                            'base_dir/config.gin')
  flags.mark_flag_as_required('base_dir')


def call_or_exit(fn, **kwargs):
  """fn(**kwargs); a user error ends the program with one line, exit 1."""
  try:
    return fn(**kwargs)
  except EvaluationError as error:
    sys.exit(f'error: {error}')


def _define_flags():
  define_restore_flags()
  flags.DEFINE_integer('num_episodes', 10, 'Evaluation episodes.')
  flags.DEFINE_integer(
      'max_steps_per_episode', None, 'Episodes are cut at this many agent '
      'steps (default: the run\'s Atari100kRunner.max_steps_per_episode, '
      f'else {DEFAULT_MAX_STEPS_PER_EPISODE}).')
  flags.DEFINE_integer('num_envs', None, 'Environments stepped side by side '
                       f'(default: one per episode, at most '
                       f'{DEFAULT_MAX_ENVS}).')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  fl = flags.FLAGS
  record = call_or_exit(
      evaluate_run, base_dir=fl.base_dir, checkpoint=fl.checkpoint,
      num_episodes=fl.num_episodes, max_noops=fl.max_noops,
      max_steps_per_episode=fl.max_steps_per_episode, num_envs=fl.num_envs,
      gin_bindings=fl.gin_bindings, seed=fl.seed)
  print(f'{record["agent"]} on {record["game"]}, checkpoint '
        f'{record["checkpoint"]}, seed {record["seed"]}:')
  for i, (ret, length) in enumerate(zip(record['returns'],
                                        record['lengths'])):
    print(f'  episode {i}: return {ret} ({length} agent steps)')
  # Python prints floats exactly (repr): the printed mean is the saved one.
  print(f'mean return: {record["mean_return"]} over '
        f'{record["num_episodes"]} episodes')
  if record['human_normalized_mean'] is not None:
    print(f'human-normalized mean: {record["human_normalized_mean"]}')
  print(f'saved: {record["path"]}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
