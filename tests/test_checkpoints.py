# coding=utf-8
"""Checkpoint files: atomic writes, pruning, fallback, and the run's guards.

Unit tests of `checkpoints.py` on real files, a child process that is killed
by the fault-injection hook half-way through a write, and the runner's checks
before training (unwritable base_dir, too little disk, fresh_start, foreign
checkpoints, bad runner settings). The end-to-end versions through
Dopamine's train binary are in test_determinism.py.
"""

import collections
import errno
import os
import pickle
import subprocess
import sys

from dopamine.discrete_domains import checkpointer
from dopamine.discrete_domains import run_experiment
import gin
import pytest

from bbf_dopamine import checkpoints
from test_gin_configs import CHEAP
from test_gin_configs import GIN_DIR


def _save(directory, number, keep=2):
  checkpoints.save(str(directory), number, {'number': number}, keep=keep)
  # A companion file like the agent's replay buffer.
  (directory / f'bbf_replay_ckpt.{number}.npz').write_bytes(b'x')


def test_save_is_readable_by_dopamine_and_prunes(tmp_path):
  for number in (10, 20, 30):
    (tmp_path / f'bbf_replay_ckpt.{number}.npz').write_bytes(b'x')
    checkpoints.save(str(tmp_path), number, {'number': number}, keep=2)
  assert checkpoints.complete_numbers(str(tmp_path)) == [30, 20]
  assert sorted(os.listdir(tmp_path)) == [
      'bbf_replay_ckpt.20.npz', 'bbf_replay_ckpt.30.npz', 'ckpt.20',
      'ckpt.30', 'sentinel_checkpoint_complete.20',
      'sentinel_checkpoint_complete.30']
  # Dopamine's own reader finds and loads the same files.
  assert checkpointer.get_latest_checkpoint_number(str(tmp_path)) == 30
  assert checkpointer.Checkpointer(str(tmp_path)).load_checkpoint(30) == {
      'number': 30}


def test_load_newest_falls_back_loudly_and_errors_when_none(tmp_path, caplog):
  for number in (5, 10, 15):
    _save(tmp_path, number, keep=3)
  (tmp_path / 'ckpt.15').write_bytes(b'\x80\x05garbage')
  refused = []

  def restore(number, data):
    if number == 10:
      refused.append(number)
      raise ValueError('holds a network of a different shape')
    assert data == {'number': number}

  with caplog.at_level('ERROR'):
    number, data = checkpoints.load_newest(str(tmp_path), restore)
  assert (number, data) == (5, {'number': 5}) and refused == [10]
  message = caplog.text
  assert 'CHECKPOINT FALLBACK' in message
  assert str(tmp_path / 'ckpt.15') in message
  assert 'different shape' in message

  (tmp_path / 'ckpt.5').write_bytes(pickle.dumps(['not', 'a', 'dict']))
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.load_newest(str(tmp_path), restore)
  for number in (5, 10, 15):
    assert str(tmp_path / f'ckpt.{number}') in str(error.value)
  assert 'fresh_start' in str(error.value)
  assert checkpoints.load_newest(str(tmp_path / 'none'), restore) is None


def test_killed_write_leaves_previous_checkpoint(tmp_path):
  """The hook SIGKILLs the writer after half of ckpt.2 is on disk."""
  code = ('from bbf_dopamine import checkpoints\n'
          f'checkpoints.save({str(tmp_path)!r}, 1, {{"n": 1}})\n'
          f'checkpoints.save({str(tmp_path)!r}, 2, {{"n": "x" * 10**6}})\n')
  env = dict(os.environ, **{checkpoints.KILL_ENV: '2'})
  result = subprocess.run([sys.executable, '-c', code], env=env, check=False)
  assert result.returncode == -9
  names = set(os.listdir(tmp_path))
  assert {'ckpt.1', 'sentinel_checkpoint_complete.1', 'ckpt.2.tmp'} <= names
  assert 0 < os.path.getsize(tmp_path / 'ckpt.2.tmp') < 10**6
  assert 'sentinel_checkpoint_complete.2' not in names
  restored = []
  assert checkpoints.load_newest(
      str(tmp_path), lambda n, d: restored.append(d))[0] == 1
  assert checkpoints.remove_incomplete(str(tmp_path)) == ['ckpt.2.tmp']


def test_remove_incomplete_keeps_complete_checkpoints(tmp_path):
  _save(tmp_path, 7)
  for name in ('bbf_replay_ckpt.9.npz', 'ckpt.9.tmp', 'notes.txt'):
    (tmp_path / name).write_bytes(b'x')
  # Dopamine's JAX replay buffers write orbax folders named by the number.
  for name in ('7', '9', '9.orbax-checkpoint-tmp-3'):
    (tmp_path / name / 'replay').mkdir(parents=True)
  assert checkpoints.remove_incomplete(str(tmp_path)) == [
      '9', '9.orbax-checkpoint-tmp-3', 'bbf_replay_ckpt.9.npz', 'ckpt.9.tmp']
  assert sorted(os.listdir(tmp_path)) == [
      '7', 'bbf_replay_ckpt.7.npz', 'ckpt.7', 'notes.txt',
      'sentinel_checkpoint_complete.7']
  # A checkpoint's size counts its files and its orbax folder, nothing else.
  (tmp_path / '7' / 'replay' / 'data').write_bytes(b'12345')
  assert checkpoints.size(str(tmp_path), 7) == sum(
      os.path.getsize(tmp_path / n) for n in (
          'bbf_replay_ckpt.7.npz', 'ckpt.7', 'sentinel_checkpoint_complete.7')
  ) + 5
  # Before rewriting checkpoint 7 (after a fallback), all of it goes.
  checkpoints.clear_from(str(tmp_path), 7)
  assert sorted(os.listdir(tmp_path)) == ['notes.txt']


def test_disk_full_during_write_names_the_problem(tmp_path, monkeypatch):
  _save(tmp_path, 1)
  real_open = open

  class FullFile(object):
    def __init__(self, f):
      self._f = f

    def __enter__(self):
      return self

    def __exit__(self, *args):
      self._f.close()

    def write(self, data):
      del data
      raise OSError(errno.ENOSPC, 'No space left on device')

  def fake_open(path, mode='r', *args, **kwargs):
    f = real_open(path, mode, *args, **kwargs)
    return FullFile(f) if str(path).endswith('ckpt.2.tmp') else f

  monkeypatch.setattr('builtins.open', fake_open)
  with pytest.raises(OSError, match='Disk full while writing .*ckpt.2'):
    checkpoints.save(str(tmp_path), 2, {'n': 2})
  monkeypatch.undo()
  assert not (tmp_path / 'ckpt.2.tmp').exists()
  assert checkpoints.complete_numbers(str(tmp_path)) == [1]


def test_check_writable(tmp_path, monkeypatch):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(OSError, match='is not writable'):
    checkpoints.check_writable(str(a_file / 'run'), 0)
  usage = collections.namedtuple('usage', 'total used free')
  monkeypatch.setattr(checkpoints.shutil, 'disk_usage',
                      lambda path: usage(10 * 2**30, 9 * 2**30, 2**30))
  checkpoints.check_writable(str(tmp_path / 'run'), 2**30)
  with pytest.raises(OSError, match='1.00 GiB free but the run needs about '
                     '3.00 GiB'):
    checkpoints.check_writable(str(tmp_path / 'run'), 3 * 2**30)


# The runner's guards --------------------------------------------------------


pytestmark = pytest.mark.usefixtures('clean_gin')  # tests/conftest.py


def _runner(base_dir, *extra):
  gin.parse_config_files_and_bindings([str(GIN_DIR / 'bbf.gin')],
                                      CHEAP + list(extra))
  return run_experiment.create_runner(str(base_dir))


def test_runner_refuses_too_little_disk_before_training(tmp_path,
                                                        monkeypatch):
  usage = collections.namedtuple('usage', 'total used free')
  monkeypatch.setattr(checkpoints.shutil, 'disk_usage',
                      lambda path: usage(2**30, 2**30 - 2**20, 2**20))
  # replay_capacity 1000 frames of 84x84: (2 + 1) checkpoints need ~21 MB.
  with pytest.raises(OSError, match='needs about'):
    _runner(tmp_path / 'run')
  assert not (tmp_path / 'run' / 'checkpoints').exists() or not os.listdir(
      tmp_path / 'run' / 'checkpoints')


def test_runner_rejects_foreign_checkpoint_and_fresh_start_moves_it(
    tmp_path):
  directory = tmp_path / 'run' / 'checkpoints'
  # What Dopamine's own Runner writes: no bbf_runner entry.
  checkpointer.Checkpointer(str(directory)).save_checkpoint(
      0, {'current_iteration': 0, 'logs': {}})
  with pytest.raises(checkpoints.CheckpointError,
                     match='not written by Atari100kRunner'):
    _runner(tmp_path / 'run')
  gin.clear_config()
  runner = _runner(tmp_path / 'run', 'Atari100kRunner.fresh_start = True')
  moved = [n for n in os.listdir(tmp_path / 'run')
           if n.startswith('checkpoints.old-')]
  assert len(moved) == 1
  assert os.listdir(tmp_path / 'run' / moved[0])
  assert runner._total_steps == 0  # pylint: disable=protected-access
  runner.run_experiment()
  assert checkpoints.complete_numbers(str(directory)) == [4]


@pytest.mark.parametrize('binding, match', [
    ('Atari100kRunner.training_steps = 0', 'training_steps'),
    ('Atari100kRunner.checkpoint_every = 0.5', 'checkpoint_every'),
    ('Atari100kRunner.num_eval_episodes = -1', 'num_eval_episodes'),
    ('Atari100kRunner.max_noops = -2', 'max_noops'),
    ("create_runner.schedule = 'atari100k'", 'atari100k'),
])
def test_bad_runner_settings(binding, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    _runner(tmp_path / 'run', binding)
  assert not (tmp_path / 'run' / 'checkpoints').exists()

