# coding=utf-8
"""`python -m bbf_dopamine.evaluate` and `python -m bbf_dopamine.record`.

One real BBF run on Pong through Dopamine's train binary (test_end_to_end's
TINY bindings, 1 iteration of 100 agent steps) is shared by the module. Three
more bindings make it cost about 20 s instead of 45 s on 2 CPU cores while
its parameters still move: learning starts at agent step 91 (18 gradient
steps), with no augmentation and one SPR step (less to compile).

The programs run as subprocesses, the way a user runs them, all started at
once after training; the in-process API, tested meanwhile, gives the second
evaluation of the determinism check and the agent whose parameters are
compared with the checkpoint's. About 55 s on 2 idle CPU cores.
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import cv2
import gin
import jax
import numpy as np
from PIL import Image
import pytest

from bbf_dopamine import evaluate
from bbf_dopamine import record
import test_end_to_end

ROOT = test_end_to_end.ROOT
STEPS = test_end_to_end.TRAINING_STEPS  # ckpt.N: N agent steps
EPISODES, EPISODE_STEPS, SEED = 2, 50, 3
FRAMES = 20
CHEAPER = ['BBFAgent.min_replay_history = 90',
           'BBFAgent.data_augmentation = False',
           'BBFAgent.jumps = 1']


def _start(module, *args):
  command = [sys.executable, '-m', f'bbf_dopamine.{module}', *args]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


class _Programs(object):
  """Subprocesses started together; each result is collected once."""

  def __init__(self, **commands):
    self._processes = {name: _start(*args) for name, args in commands.items()}
    self._results = {}

  def result(self, name):
    """(exit code, stdout, stderr) of the program started as `name`."""
    if name not in self._results:
      process = self._processes[name]
      out, err = process.communicate(timeout=300)
      self._results[name] = (process.returncode, out, err)
    return self._results[name]

  def close(self):
    for process in self._processes.values():
      if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  base_dir = str(tmp_path_factory.mktemp('tools_run'))
  test_end_to_end.train(base_dir, num_iterations=1, extra=CHEAPER)
  return base_dir


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()  # restore_run leaves the run's configuration behind.


@pytest.fixture(scope='module')
def paths(run_dir, tmp_path_factory):
  """A copy of the run with ckpt.N cut in half, and the files to write."""
  work = tmp_path_factory.mktemp('tools_work')
  broken = str(work / 'broken_run')
  os.makedirs(broken)
  shutil.copy(os.path.join(run_dir, 'config.gin'), broken)
  shutil.copytree(os.path.join(run_dir, 'checkpoints'),
                  os.path.join(broken, 'checkpoints'))
  truncated = os.path.join(broken, 'checkpoints', f'ckpt.{STEPS}')
  with open(truncated, 'r+b') as f:
    f.truncate(os.path.getsize(truncated) // 2)
  return {'broken': broken, 'truncated': truncated,
          'missing': str(work / 'nothing_here'), 'gif': str(work / 'ep.gif')}


@pytest.fixture(scope='module')
def programs(run_dir, paths):
  """Every subprocess of the module, started at once.

  Each is mostly imports and jit compilation on one core; side by side they
  keep both cores busy while the in-process tests run.
  """
  started = _Programs(
      evaluate=('evaluate', f'--base_dir={run_dir}',
                f'--num_episodes={EPISODES}',
                f'--max_steps_per_episode={EPISODE_STEPS}', f'--seed={SEED}'),
      gif=('record', f'--base_dir={run_dir}', f'--out={paths["gif"]}',
           f'--max_steps={FRAMES}', f'--seed={SEED}'),
      no_config=('evaluate', f'--base_dir={paths["missing"]}'),
      no_checkpoint=('evaluate', f'--base_dir={run_dir}',
                     '--checkpoint=12345'),
      truncated=('evaluate', f'--base_dir={paths["broken"]}'))
  yield started
  started.close()


@pytest.fixture
def cli_evaluation(programs):
  code, out, err = programs.result('evaluate')
  assert code == 0, err[-5000:]
  return out


def _saved(out):
  return re.search(r'^saved: (.+)$', out, re.M).group(1)


def test_restores_the_checkpoint_and_repeats_returns(run_dir, programs):
  run = evaluate.restore_run(run_dir, num_envs=EPISODES, seed=SEED)
  # The run's own protocol (TINY, bbf.gin) unless overridden.
  assert (run.max_noops, run.max_steps_per_episode) == (30, EPISODE_STEPS)
  with open(os.path.join(run_dir, 'checkpoints', f'ckpt.{STEPS}'), 'rb') as f:
    saved = pickle.load(f)
  assert run.checkpoint == STEPS
  assert saved['gradient_steps'] > 0  # trained: not the initial weights
  assert run.agent.gradient_steps == saved['gradient_steps']
  leaves = jax.tree_util.tree_leaves(run.agent.online_params)
  expected = jax.tree_util.tree_leaves(saved['train_state'].online_params)
  assert len(leaves) == len(expected)
  for leaf, want in zip(leaves, expected):
    np.testing.assert_array_equal(np.asarray(leaf), want)

  # The CLI's evaluation again, in this process: the same returns.
  again = evaluate.evaluate_restored(run, EPISODES)
  code, out, err = programs.result('evaluate')
  assert code == 0, err[-5000:]
  with open(_saved(out)) as f:
    first = json.load(f)
  assert again['returns'] == first['returns']
  assert again['lengths'] == first['lengths']


def test_errors_before_anything_is_built(tmp_path, run_dir):
  with pytest.raises(evaluate.EvaluationError, match='config.gin not found'):
    evaluate.evaluate_run(str(tmp_path))
  os.makedirs(tmp_path / 'checkpoints')
  shutil.copy(os.path.join(run_dir, 'config.gin'), tmp_path)
  with pytest.raises(evaluate.EvaluationError, match='No complete checkpoint'):
    evaluate.evaluate_run(str(tmp_path))
  with pytest.raises(evaluate.EvaluationError, match='--num_episodes'):
    evaluate.evaluate_run(run_dir, num_episodes=0)
  with pytest.raises(evaluate.EvaluationError, match=r'\.mp4 or \.gif'):
    record.record_episode(run_dir, str(tmp_path / 'video.avi'))


def test_record_mp4(run_dir, tmp_path):
  out = str(tmp_path / 'video' / 'episode.mp4')
  result = record.record_episode(run_dir, out, max_steps=FRAMES, seed=SEED)
  assert isinstance(result['return'], float)
  assert result['length'] == result['frames'] == FRAMES
  assert result['path'] == out and result['checkpoint'] == STEPS
  video = cv2.VideoCapture(out)
  try:
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert (int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(video.get(cv2.CAP_PROP_FRAME_WIDTH))) == (210, 160)
    decoded = 0
    while video.read()[0]:
      decoded += 1
    assert decoded == FRAMES
  finally:
    video.release()


def test_evaluate_cli_prints_and_saves_returns(run_dir, cli_evaluation):
  saved = _saved(cli_evaluation)
  assert os.path.dirname(saved) == os.path.join(run_dir, 'evaluations')
  assert re.fullmatch(rf'eval_ckpt{STEPS}_\d{{8}}-\d{{6}}(-\d+)?\.json',
                      os.path.basename(saved))
  with open(saved) as f:
    result = json.load(f)
  assert len(result['returns']) == len(result['lengths']) == EPISODES
  assert result['num_episodes'] == EPISODES and result['seed'] == SEED
  assert result['checkpoint'] == STEPS and result['game'] == 'Pong'
  assert result['agent'] == 'BBFAgent'
  assert all(0 < n <= EPISODE_STEPS for n in result['lengths'])
  assert result['mean_return'] == np.mean(result['returns'])
  printed = re.search(rf'^mean return: (\S+) over {EPISODES} episodes$',
                      cli_evaluation, re.M).group(1)
  assert float(printed) == result['mean_return']
  for i, ret in enumerate(result['returns']):
    assert f'episode {i}: return {ret} ' in cli_evaluation
  # Pong is one of the 26 games: random -20.7, human 14.6.
  assert result['human_normalized_mean'] == pytest.approx(
      (result['mean_return'] + 20.7) / (14.6 + 20.7))


@pytest.mark.parametrize('case', ['no_config', 'no_checkpoint', 'truncated'])
def test_evaluate_user_errors_are_one_line(programs, paths, case):
  code, out, err = programs.result(case)
  assert code == 1, (out, err[-3000:])
  assert 'Traceback' not in err
  message = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(message) == 1, err[-3000:]
  if case == 'no_config':
    assert os.path.join(paths['missing'], 'config.gin') in message[0]
  elif case == 'no_checkpoint':
    assert 'Checkpoint 12345 is not among' in message[0]
    assert message[0].endswith(f'available: {STEPS}.')
  else:
    assert f'Cannot restore checkpoint {paths["truncated"]}:' in message[0]


def test_record_gif_cli(programs, paths):
  code, stdout, err = programs.result('gif')
  assert code == 0, err[-5000:]
  assert f'saved: {paths["gif"]}' in stdout
  assert re.search(rf'return -?\d+\.\d+ in {FRAMES} agent steps, {FRAMES} '
                   'frames', stdout)
  with Image.open(paths['gif']) as gif:
    assert gif.n_frames == FRAMES
    assert gif.size == (160, 210)  # (width, height) of the ALE screen
    gif.seek(FRAMES - 1)
    assert np.asarray(gif.convert('RGB')).shape == (210, 160, 3)
