# coding=utf-8
"""BBF trains on real ALE Pong through Dopamine's own entry point, and resumes.

Runs `python -m dopamine.discrete_domains.train --gin_files gin_configs/bbf.gin`
as a subprocess, the way a user does, with gin bindings that shrink the
network, the replay buffer and the run (width 0.25, hidden 32, learning after
50 transitions, Pong episodes cut at 50 agent steps, 2 evaluation episodes).
Every BBF component is still on, and bbf.gin's Atari 100k runner writes
checkpoints, logs, metrics and final_eval.json. Then runs the same command
again on the same base_dir with `Atari100kRunner.num_iterations=2`: the run
must reload the checkpoint of iteration 0 and continue its counters and replay
buffer instead of starting over. About two minutes on 2 CPU cores.
"""

import glob
import json
import os
import pathlib
import pickle
import subprocess
import sys

from dopamine.discrete_domains import checkpointer
import pytest
import tensorflow as tf

from bbf_dopamine import scores

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIN_REPLAY_HISTORY = 50
EPISODE_STEPS = 50  # Atari100kRunner.max_steps_per_episode
TRAINING_STEPS = 100  # -> two episodes of 50 agent steps per iteration
# bbf.gin's 2 gradient steps per agent step (replay_ratio 64 / batch_size 32)
# kept with a quarter of the batch: the step's cost is linear in the batch, and
# these runs check plumbing, not learning (a run takes ~55 s instead of ~110 s).
BATCH_SIZE = 8
GRADIENT_STEPS_PER_AGENT_STEP = 2
EVAL_EPISODES = 2
TINY = [
    'BBFNetwork.width_scale = 0.25',
    'BBFNetwork.hidden_dim = 32',
    f'BBFAgent.batch_size = {BATCH_SIZE}',
    f'BBFAgent.replay_ratio = {BATCH_SIZE * GRADIENT_STEPS_PER_AGENT_STEP}',
    f'BBFAgent.min_replay_history = {MIN_REPLAY_HISTORY}',
    'BBFAgent.replay_capacity = 2000',
    'BBFAgent.log_every = 10',  # so that Agent/* summaries are written
    "atari_lib.create_atari_environment.game_name = 'Pong'",
    f'Atari100kRunner.training_steps = {TRAINING_STEPS}',
    f'Atari100kRunner.num_eval_episodes = {EVAL_EPISODES}',
    'Atari100kRunner.intermediate_eval_episodes = 1',
    f'Atari100kRunner.max_steps_per_episode = {EPISODE_STEPS}',
]
RELOADED = 'Resumed from checkpoint {}'


def train(base_dir, num_iterations, extra=()):
  """Runs Dopamine's train binary on bbf.gin; returns the CompletedProcess."""
  bindings = TINY + [f'Atari100kRunner.num_iterations = {num_iterations}']
  command = [sys.executable, '-m', 'dopamine.discrete_domains.train',
             f'--base_dir={base_dir}', '--gin_files=gin_configs/bbf.gin']
  command += [f'--gin_bindings={b}' for b in bindings + list(extra)]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)
  assert result.returncode == 0, (
      f'train exited with {result.returncode}:\n{result.stderr[-5000:]}')
  return result


def load_checkpoint(base_dir, number):
  """Dopamine's own reader for checkpoints/ckpt.N (the agent's bundle)."""
  return checkpointer.Checkpointer(
      os.path.join(base_dir, 'checkpoints')).load_checkpoint(number)


def tensorboard_tags(base_dir):
  tags = set()
  for path in glob.glob(
      os.path.join(base_dir, 'metrics', 'tensorboard', 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.fixture(scope='module')
def base_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('bbf_pong'))


@pytest.fixture(scope='module')
def first_run(base_dir):
  return train(base_dir, num_iterations=1)


@pytest.fixture(scope='module')
def second_run(base_dir, first_run):  # pylint: disable=unused-argument
  before = load_checkpoint(base_dir, TRAINING_STEPS)
  return train(base_dir, num_iterations=2), before


def test_first_run_writes_checkpoints_logs_and_metrics(base_dir, first_run):
  assert 'Created BBFAgent' in first_run.stderr
  assert 'Resumed from' not in first_run.stderr
  end = TRAINING_STEPS  # checkpoints are numbered by agent steps
  for name in (f'checkpoints/ckpt.{end}',
               f'checkpoints/sentinel_checkpoint_complete.{end}',
               f'checkpoints/bbf_replay_ckpt.{end}.npz',
               'logs/log_0', 'config.gin', 'run_info.json',
               'final_eval.json'):
    assert os.path.isfile(os.path.join(base_dir, name)), name

  pickles = glob.glob(os.path.join(base_dir, 'metrics', 'pickle', '*.pkl'))
  assert pickles
  with open(pickles[0], 'rb') as f:
    statistics = pickle.load(f)
  assert 'Train/AverageReturns' in statistics['iteration_0']
  assert 'Eval/AverageReturns' in statistics['iteration_0']

  tags = tensorboard_tags(base_dir)
  for tag in ('Train/AverageReturns', 'Eval/AverageReturns',
              'Train/AverageStepsPerSecond', 'Train/EpisodeReturns',
              'Eval/EpisodeReturns', 'Eval/HumanNormalizedReturns',
              'Agent/Loss', 'Agent/DQNLoss', 'Agent/SPRLoss'):
    assert tag in tags, (tag, sorted(tags))

  bundle = load_checkpoint(base_dir, end)
  assert bundle['bbf_runner']['iteration'] == 1  # iteration 0 is done
  logs = bundle['logs']['iteration_0']
  lengths = logs['train_episode_lengths']
  assert lengths == [EPISODE_STEPS, EPISODE_STEPS]
  assert logs['env_steps'] == [TRAINING_STEPS]
  assert bundle['training_steps'] == sum(lengths)
  # Gradient steps start once more than MIN_REPLAY_HISTORY transitions are
  # stored, i.e. at agent step MIN_REPLAY_HISTORY + 1 (0-based).
  learning_steps = sum(lengths) - MIN_REPLAY_HISTORY - 1
  assert bundle['gradient_steps'] == (
      GRADIENT_STEPS_PER_AGENT_STEP * learning_steps)

  # One run of 1 iteration: its final evaluation is the score.
  with open(os.path.join(base_dir, 'final_eval.json')) as f:
    final = json.load(f)
  assert final['num_episodes'] == len(final['returns']) == EVAL_EPISODES
  assert final['returns'] == logs['eval_episode_returns']
  assert final['mean_return'] == pytest.approx(sum(final['returns']) / 2)
  # Pong: random -20.7, human 14.6 (shipped table).
  assert final['human_normalized_mean'] == pytest.approx(
      (final['mean_return'] + 20.7) / (14.6 + 20.7))
  assert final['game'] == 'Pong' and final['seed'] == 0
  assert final['env_steps'] == TRAINING_STEPS
  assert scores.human_normalized('Pong', 14.6) == pytest.approx(1.0)
  with open(os.path.join(base_dir, 'run_info.json')) as f:
    info = json.load(f)
  assert info['seed'] == 0 and info['versions']['dopamine-rl'] == '4.1.2'
  assert info['devices'] and len(info['launches']) == 1


def test_second_run_resumes_from_checkpoint(base_dir, second_run):
  result, before = second_run
  assert RELOADED.format(TRAINING_STEPS) in result.stderr
  end = 2 * TRAINING_STEPS
  for name in (f'checkpoints/ckpt.{end}',
               f'checkpoints/sentinel_checkpoint_complete.{end}',
               f'checkpoints/bbf_replay_ckpt.{end}.npz'):
    assert os.path.isfile(os.path.join(base_dir, name)), name

  after = load_checkpoint(base_dir, end)
  assert after['bbf_runner']['iteration'] == 2
  # Dopamine's logger data came back from the checkpoint and was extended.
  assert after['logs']['iteration_0'] == before['logs']['iteration_0']
  steps_1 = sum(after['logs']['iteration_1']['train_episode_lengths'])
  assert steps_1 == 2 * EPISODE_STEPS
  assert after['logs']['iteration_1']['env_steps'] == [end]
  # Counters continued: two iterations' worth of agent steps ...
  assert after['training_steps'] == before['training_steps'] + steps_1
  assert after['training_steps'] > before['training_steps'] >= TRAINING_STEPS
  # ... and the reloaded replay buffer already held more than
  # min_replay_history transitions, so every agent step of iteration 1
  # trained (a fresh buffer would first collect 50 transitions again).
  assert after['gradient_steps'] == (
      before['gradient_steps'] + GRADIENT_STEPS_PER_AGENT_STEP * steps_1)
  assert after['num_resets'] == before['num_resets'] == 0
  with open(os.path.join(base_dir, 'run_info.json')) as f:
    launches = json.load(f)['launches']
  assert [l['resumed_from_checkpoint'] for l in launches] == [
      None, TRAINING_STEPS]
