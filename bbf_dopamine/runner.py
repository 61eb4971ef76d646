# coding=utf-8
"""The Atari 100k protocol as a Dopamine Runner, with runs that survive.

Protocol (Kaiser et al. 2020; as in DER, DrQ(eps), SPR and BBF): exactly
`num_iterations * training_steps` agent steps of training (100k = 400k
frames), up to `max_noops` random no-ops at every episode start, episodes cut
at `max_steps_per_episode` agent steps, then `num_eval_episodes` evaluation
episodes run across parallel environments (`evaluation.py`). Sticky actions,
life-loss terminals and the evaluation epsilon are the environment's and the
agent's gin settings (`gin_configs/bbf.gin` sets the protocol's values).

Selected from gin with `create_runner.schedule = 'atari_100k'` (see
`plugin.py`); it subclasses Dopamine's `Runner`, so logs/, metrics/ (console,
pickle, TensorBoard, flushed every iteration) and checkpoints/ are where
Dopamine users look. Differences from Dopamine's runners:

  * training stops at exactly `training_steps` agent steps per iteration; an
    unfinished episode continues in the next iteration;
  * checkpoints every `checkpoint_every` agent steps, also inside an
    iteration and inside an episode (the ALE state is saved), numbered by
    agent steps, written crash-safely (`checkpoints.py`);
  * never restarts silently: an unreadable newest checkpoint falls back to
    the newest readable one, loudly; none readable is an error unless
    `fresh_start` is set;
  * checks before training that base_dir is writable and has the space;
  * writes config.gin, run_info.json (seed, versions, device) and
    final_eval.json, and puts TensorFlow back in eager mode so TensorBoard
    metrics get written (runs JAX agents; Dopamine's TF agents need its own
    Runner).
"""

import json
import os
import pickle
import platform
import sys
import time

from absl import logging
from dopamine.discrete_domains import atari_lib
from dopamine.discrete_domains import iteration_statistics
from dopamine.discrete_domains import run_experiment
from dopamine.metrics import statistics_instance
import gin
import jax
import numpy as np

from bbf_dopamine import baselines
from bbf_dopamine import checkpoints
from bbf_dopamine import evaluation
from bbf_dopamine import run_setup
from bbf_dopamine import scores

CONFIG_FILE = run_setup.CONFIG_FILE
RUN_INFO_FILE = 'run_info.json'
FINAL_EVAL_FILE = 'final_eval.json'
_MOVED_ASIDE = ('checkpoints', 'logs', 'metrics', RUN_INFO_FILE,
                FINAL_EVAL_FILE)
# Re-exported: the plugin and the tools use them through this module too.
save_config = run_setup.save_config
seed_environment = run_setup.seed_environment
enable_eager_tensorflow = run_setup.enable_eager_tensorflow
_write_json = run_setup.write_json
_game_name = run_setup.game_name
versions = run_setup.versions


def _normalized(game, value, domain='atari'):
  if domain != 'atari' or value is None:
    return None  # Human scores exist for Atari only.
  try:
    return float(scores.human_normalized(game, value))
  except (ValueError, TypeError, KeyError):
    return None  # Not one of the 26 Atari 100k games.


@gin.configurable
class Atari100kRunner(run_experiment.Runner):
  """Atari 100k training and evaluation through Dopamine's train binary."""

  def __init__(self,
               base_dir,
               create_agent_fn,
               create_environment_fn=atari_lib.create_atari_environment,
               num_iterations=10,
               training_steps=10_000,
               num_eval_episodes=100,
               intermediate_eval_episodes=10,
               num_eval_envs=100,
               max_noops=30,
               max_steps_per_episode=27_000,
               clip_rewards=True,
               checkpoint_every=10_000,
               keep_checkpoints=2,
               fresh_start=False,
               log_every_steps=1000):
    """Builds the runner, checks base_dir and resumes from its checkpoint.

    Args:
      base_dir: the run directory.
      create_agent_fn: Dopamine's create_agent (agent chosen by gin).
      create_environment_fn: builds one environment (called once for
        training and up to `num_eval_envs` times for evaluation).
      num_iterations: iterations of `training_steps` agent steps each.
      training_steps: agent steps per iteration.
      num_eval_episodes: episodes of the final evaluation (the score).
      intermediate_eval_episodes: episodes evaluated after every other
        iteration, for learning curves (0: none).
      num_eval_envs: environments evaluated side by side.
      max_noops: up to this many random no-ops at every episode start.
      max_steps_per_episode: agent steps after which an episode is cut.
      clip_rewards: clip training rewards to [-1, 1] (returns stay raw).
      checkpoint_every: agent steps between checkpoints, independent of the
        iteration length; the end of every iteration is checkpointed too.
      keep_checkpoints: complete checkpoints kept on disk (>= 2 leaves a
        fallback if the newest is damaged).
      fresh_start: move an existing run in base_dir aside (renamed with a
        timestamp) and start over instead of resuming.
      log_every_steps: agent steps between progress lines.
    """
    for name, value in (('num_iterations', num_iterations),
                        ('training_steps', training_steps),
                        ('num_eval_envs', num_eval_envs),
                        ('max_steps_per_episode', max_steps_per_episode),
                        ('checkpoint_every', checkpoint_every),
                        ('keep_checkpoints', keep_checkpoints),
                        ('log_every_steps', log_every_steps)):
      if int(value) != value or value < 1:
        raise ValueError(
            f'Atari100kRunner.{name} must be a positive integer, got {value!r}.')
    for name, value in (('num_eval_episodes', num_eval_episodes),
                        ('intermediate_eval_episodes',
                         intermediate_eval_episodes),
                        ('max_noops', max_noops)):
      if int(value) != value or value < 0:
        raise ValueError(f'Atari100kRunner.{name} must be an integer >= 0, '
                         f'got {value!r}.')
    checkpoints.check_writable(base_dir, 0)
    if fresh_start:
      self._move_old_run_aside(base_dir)
    save_config(base_dir)
    enable_eager_tensorflow()
    self._num_eval_episodes = num_eval_episodes
    self._intermediate_eval_episodes = intermediate_eval_episodes
    self._num_eval_envs = num_eval_envs
    self._max_noops = max_noops
    self._checkpoint_every = checkpoint_every
    self._keep_checkpoints = keep_checkpoints
    self._log_every_steps = log_every_steps
    self._create_environment_fn = create_environment_fn
    self._eval_envs = []
    self._game, self._domain = _game_name()
    # Runner state; everything here is in every checkpoint.
    self._iteration = 0
    self._steps_in_iteration = 0
    self._total_steps = 0
    self._statistics = iteration_statistics.IterationStatistics()
    self._episode = None  # {'return', 'length'} of the episode in flight.
    self._action = None
    self._checkpoint_due = False  # A checkpoint waits for an episode end.
    self._resumed_from = None
    super().__init__(base_dir, create_agent_fn, create_environment_fn,
                     num_iterations=num_iterations,
                     training_steps=training_steps, evaluation_steps=0,
                     max_steps_per_episode=max_steps_per_episode,
                     clip_rewards=clip_rewards)
    estimate = getattr(self._agent, 'checkpoint_nbytes', 0)
    checkpoints.check_writable(base_dir, (keep_checkpoints + 1) * estimate)

  @property
  def _seed(self):
    seed = getattr(self._agent, 'seed', getattr(self._agent, '_seed', None))
    return int(seed) if seed is not None else None

  def _move_old_run_aside(self, base_dir):
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for name in _MOVED_ASIDE:
      path = os.path.join(base_dir, name)
      if os.path.exists(path):
        os.rename(path, f'{path}.old-{stamp}')
        logging.warning('fresh_start: moved %s to %s.old-%s', path, path,
                        stamp)

  # Resuming ---------------------------------------------------------------

  def _initialize_checkpointer_and_maybe_resume(self, checkpoint_file_prefix):
    """Replaces Dopamine's silent-restart resume (see checkpoints.py)."""
    del checkpoint_file_prefix  # Dopamine's names are kept: ckpt.N.
    os.makedirs(self._checkpoint_dir, exist_ok=True)
    # Seeded before any restore (Dopamine's own agents too; BBF: again).
    if self._seed is not None:
      seed_environment(self._environment, self._seed)
    self._noop_rng = np.random.default_rng([self._seed or 0, 0])
    checkpoints.remove_incomplete(self._checkpoint_dir)
    restored = checkpoints.load_newest(self._checkpoint_dir, self._restore)
    if restored is not None:
      self._resumed_from = restored[0]
      logging.info('Resumed from checkpoint %d: iteration %d, agent step %d.',
                   restored[0], self._iteration, self._total_steps)
    self._start_iteration = self._iteration

  def _restore(self, number, data):
    runner = data.get('bbf_runner')
    if runner is None:
      raise ValueError('not written by Atari100kRunner (no bbf_runner entry)')
    if not self._agent.unbundle(self._checkpoint_dir, number, data):
      raise ValueError(f'{type(self._agent).__name__}.unbundle refused it')
    if self._use_legacy_logger:
      self._logger.data = data['logs']
    self._iteration = runner['iteration']
    self._steps_in_iteration = runner['steps_in_iteration']
    self._total_steps = runner['total_steps']
    self._statistics.data_lists = runner['statistics']
    self._noop_rng.bit_generator.state = runner['noop_rng']
    self._episode = runner['episode']
    self._action = runner['action']
    if runner['environment'] is not None:
      self._restore_environment(runner['environment'])
      evaluation.restore_agent_episode(self._agent, runner['agent_episode'])

  # Mid-episode environment state -----------------------------------------

  def _ale(self):
    inner = getattr(self._environment, 'environment', None)
    return getattr(getattr(inner, 'unwrapped', None), 'ale', None)

  def _snapshot_environment(self):
    """What resumes the episode in flight, or None if it cannot be saved.

    Atari: the ALE's state and RNG plus the preprocessing wrapper's fields.
    Other environments (MinAtar, test games): the pickled environment.
    """
    env, ale = self._environment, self._ale()
    if ale is None or not hasattr(env, 'screen_buffer'):
      try:
        return {'pickled': pickle.dumps(env)}
      except Exception:  # pylint: disable=broad-except
        return None
    return {'ale': pickle.dumps(ale.cloneState(include_rng=True)),
            'screen_buffer': [np.copy(b) for b in env.screen_buffer],
            'lives': env.lives, 'game_over': env.game_over}

  def _restore_environment(self, saved):
    if 'pickled' in saved:
      self._environment = pickle.loads(saved['pickled'])
      attach = getattr(self._agent, 'attach_environment', None)
      if callable(attach):
        attach(self._environment)
      return
    env = self._environment
    env.reset()  # Gymnasium refuses step() before a reset().
    self._ale().restoreState(pickle.loads(saved['ale']))
    for i, buffer in enumerate(saved['screen_buffer']):
      env.screen_buffer[i][...] = buffer
    env.lives, env.game_over = saved['lives'], saved['game_over']

  # Checkpointing ----------------------------------------------------------

  def _checkpoint(self):
    """Writes checkpoint number `total_steps` with the whole run's state."""
    start = time.time()
    environment = None
    if self._episode is not None:
      environment = self._snapshot_environment()
      if environment is None:
        return False  # Retried at the next episode boundary.
    number = self._total_steps
    checkpoints.clear_from(self._checkpoint_dir, number)
    baselines.sync_replay_checkpoints(self._agent, self._checkpoint_dir)
    data = self._agent.bundle_and_checkpoint(self._checkpoint_dir, number)
    if not data:
      raise RuntimeError(f'{type(self._agent).__name__} returned no '
                         f'checkpoint data for {self._checkpoint_dir}.')
    data['bbf_runner'] = {
        'iteration': self._iteration,
        'steps_in_iteration': self._steps_in_iteration,
        'total_steps': self._total_steps,
        'statistics': self._statistics.data_lists,
        'noop_rng': self._noop_rng.bit_generator.state,
        'episode': self._episode,
        'action': self._action,
        'environment': environment,
        'agent_episode': (evaluation.save_agent_episode(self._agent)
                          if environment is not None else None),
    }
    # Dopamine's own Runner reads these two keys.
    data['current_iteration'] = self._iteration - 1
    if self._use_legacy_logger:
      data['logs'] = self._logger.data
    checkpoints.save(self._checkpoint_dir, number, data,
                     keep=self._keep_checkpoints)
    size = checkpoints.size(self._checkpoint_dir, number)
    logging.info('Checkpoint %d written: %.1f MB in %.2f s.', number,
                 size / 2**20, time.time() - start)
    return True

  # Training ---------------------------------------------------------------

  def _begin_training_episode(self):
    observation = evaluation.start_episode(self._environment, self._noop_rng,
                                           self._max_noops)
    self._episode = {'return': 0.0, 'length': 0}
    self._action = self._agent.begin_episode(observation)

  def _train(self, statistics):
    """Runs agent steps until the iteration's budget is spent."""
    last_log, last_time = self._total_steps, time.time()
    while self._steps_in_iteration < self._training_steps:
      if self._episode is None:
        self._begin_training_episode()
      episode = self._episode
      observation, reward, terminal, _ = self._environment.step(self._action)
      episode['return'] += float(reward)
      episode['length'] += 1
      self._steps_in_iteration += 1
      self._total_steps += 1
      if self._clip_rewards:
        reward = np.clip(reward, -1, 1)
      if (self._environment.game_over or
          episode['length'] == self._max_steps_per_episode):
        self._end_episode(reward, terminal)
        statistics.append({'train_episode_returns': episode['return'],
                           'train_episode_lengths': episode['length']})
        self._write_scalars([('Train/EpisodeReturns', episode['return'])],
                            self._total_steps)
        self._episode = None
      elif terminal:
        self._end_episode(reward, terminal)
        self._action = self._agent.begin_episode(observation)
      else:
        self._action = self._agent.step(reward, observation)
      if self._total_steps % self._checkpoint_every == 0:
        self._checkpoint_due = True
      if self._checkpoint_due and (self._steps_in_iteration <
                                   self._training_steps):
        self._checkpoint_due = not self._checkpoint()
      if self._total_steps - last_log >= self._log_every_steps:
        rate = (self._total_steps - last_log) / (time.time() - last_time)
        left = (self._num_iterations * self._training_steps -
                self._total_steps) / max(rate, 1e-9)
        logging.info('Iteration %d: agent step %d (%d/%d), %.2f steps/s, '
                     'about %.1f h left.', self._iteration, self._total_steps,
                     self._steps_in_iteration, self._training_steps, rate,
                     left / 3600)
        last_log, last_time = self._total_steps, time.time()

  # Evaluation -------------------------------------------------------------

  def _evaluate(self, num_episodes):
    while len(self._eval_envs) < min(self._num_eval_envs, num_episodes):
      self._eval_envs.append(self._create_environment_fn())
    # Reseeded at every evaluation from (seed, iteration, env): an
    # evaluation never depends on earlier ones, so a resumed run evaluates
    # exactly like one that ran straight through.
    seed = self._seed or 0
    for i, env in enumerate(self._eval_envs):
      seed_environment(env, np.random.SeedSequence(
          [seed, 1, self._iteration, i]).generate_state(1)[0])
    rng = np.random.default_rng([seed, 1, self._iteration])  # no-ops
    return evaluation.evaluate(self._agent, self._eval_envs, num_episodes,
                               rng, self._max_noops,
                               self._max_steps_per_episode)

  # Iterations -------------------------------------------------------------

  def _write_scalars(self, pairs, step):
    if self._has_collector_dispatcher:
      self._collector_dispatcher.write(
          [statistics_instance.StatisticsInstance(name, float(value), step)
           for name, value in pairs if value is not None])

  def _run_one_iteration(self, iteration):
    statistics = self._statistics
    logging.info('Starting iteration %d', iteration)
    self._agent.eval_mode = False
    steps_before, start = self._steps_in_iteration, time.time()
    self._train(statistics)
    steps_per_second = ((self._training_steps - steps_before) /
                        max(time.time() - start, 1e-9))
    train_returns = statistics.data_lists.get('train_episode_returns', [])
    train_mean = float(np.mean(train_returns)) if train_returns else None
    last = iteration == self._num_iterations - 1
    num_eval = (self._num_eval_episodes if last
                else self._intermediate_eval_episodes)
    eval_mean, eval_returns = None, []
    if num_eval:
      results = self._evaluate(num_eval)
      eval_returns = results['returns']
      eval_mean = float(np.mean(eval_returns))
      for ret, length in zip(results['returns'], results['lengths']):
        statistics.append({'eval_episode_returns': ret,
                           'eval_episode_lengths': length})
      statistics.append({'eval_average_return': eval_mean})
    statistics.append({'train_average_return': train_mean or 0.0,
                       'train_average_steps_per_second': steps_per_second,
                       'env_steps': self._total_steps})
    logging.info('Iteration %d: %d agent steps, %.2f steps/s, train return '
                 '%s over %d episodes, eval return %s over %d episodes.',
                 iteration, self._total_steps, steps_per_second, train_mean,
                 len(train_returns), eval_mean, len(eval_returns))
    self._write_scalars([
        ('Train/NumEpisodes', len(train_returns)),
        ('Train/AverageReturns', train_mean),
        ('Train/HumanNormalizedReturns', _normalized(self._game, train_mean,
                                                     self._domain)),
        ('Train/AverageStepsPerSecond', steps_per_second),
        ('Train/AgentSteps', self._total_steps),
        ('Eval/NumEpisodes', len(eval_returns)),
        ('Eval/AverageReturns', eval_mean),
        ('Eval/HumanNormalizedReturns', _normalized(self._game, eval_mean,
                                                    self._domain)),
    ], iteration)
    self._write_scalars([('Eval/EpisodeReturns', r) for r in eval_returns],
                        self._total_steps)
    if last and num_eval:
      self._write_final_eval(eval_returns)
    return statistics.data_lists

  def _write_final_eval(self, returns):
    mean = float(np.mean(returns))
    _write_json(os.path.join(self._base_dir, FINAL_EVAL_FILE), {
        'agent': type(self._agent).__name__, 'game': self._game,
        'seed': self._seed, 'env_steps': self._total_steps,
        'num_episodes': len(returns), 'returns': [float(r) for r in returns],
        'mean_return': mean,
        'domain': self._domain,
        'human_normalized_mean': _normalized(self._game, mean,
                                             self._domain)})

  def _write_run_info(self):
    path = os.path.join(self._base_dir, RUN_INFO_FILE)
    info = {'launches': []}
    if os.path.exists(path):
      with open(path) as f:
        info = json.load(f)
    info.update(seed=self._seed, game=self._game,
                agent=type(self._agent).__name__, versions=versions(),
                devices=[str(d) for d in jax.devices()])
    info['launches'].append({
        'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'argv': sys.argv,
        'host': platform.node(), 'resumed_from_checkpoint': self._resumed_from,
        'iteration': self._iteration, 'agent_steps': self._total_steps})
    _write_json(path, info)

  def run_experiment(self):
    """Runs the remaining iterations; each ends with a checkpoint."""
    if self._iteration >= self._num_iterations:
      logging.warning('All %d iterations of %s are done; nothing to run.',
                      self._num_iterations, self._base_dir)
      return
    self._write_run_info()
    while self._iteration < self._num_iterations:
      iteration = self._iteration
      statistics = self._run_one_iteration(iteration)
      if self._use_legacy_logger:
        self._log_experiment(iteration, statistics)
      self._iteration += 1
      self._steps_in_iteration = 0
      self._statistics = iteration_statistics.IterationStatistics()
      self._checkpoint_due = not self._checkpoint()
      if self._checkpoint_due:
        logging.warning('The episode in flight cannot be saved; checkpoint '
                        'deferred to the end of the episode.')
      if self._has_collector_dispatcher:
        self._collector_dispatcher.flush()
    if self._has_collector_dispatcher:
      self._collector_dispatcher.close()
