# coding=utf-8
"""Crash-safe experiment checkpoints that never restart a run silently.

Files keep Dopamine's names (`ckpt.N` plus `sentinel_checkpoint_complete.N`
in `base_dir/checkpoints`), so Dopamine's own `Checkpointer` and
`get_latest_checkpoint_number` still read them. What differs from Dopamine's
`Checkpointer`:

  * `ckpt.N` is written to `ckpt.N.tmp`, flushed to disk and renamed, and the
    sentinel is written only after that: a process killed mid-write leaves
    the previous checkpoint as the newest complete one.
  * Loading walks from the newest complete checkpoint back to older ones and
    reports every unreadable file; the caller decides what is fatal.
  * Old checkpoints are removed only after a newer one is complete, including
    agent files named `*.N.*` (the replay buffer).

Checkpoint numbers are agent steps here, not iterations: a run checkpoints
inside long iterations too.
"""

import errno
import os
import pickle
import re
import shutil
import signal

from absl import logging

CHECKPOINT_PREFIX = 'ckpt'
SENTINEL_PREFIX = 'sentinel_checkpoint_complete'
# Fault injection for tests: BBF_DOPAMINE_KILL_DURING_CHECKPOINT=N makes the
# process SIGKILL itself half-way through writing checkpoint N.
KILL_ENV = 'BBF_DOPAMINE_KILL_DURING_CHECKPOINT'


class CheckpointError(RuntimeError):
  """No usable checkpoint where one is expected."""


def _path(directory, prefix, number):
  return os.path.join(directory, f'{prefix}.{number}')


def complete_numbers(directory):
  """Numbers with a sentinel, newest first."""
  if not os.path.isdir(directory):
    return []
  pattern = re.compile(re.escape(SENTINEL_PREFIX) + r'\.(\d+)$')
  numbers = [int(m.group(1)) for m in map(pattern.match, os.listdir(directory))
             if m]
  return sorted(numbers, reverse=True)


def _write_atomically(path, payload):
  """Writes bytes to `path` through `path.tmp`, fsync and rename."""
  tmp = path + '.tmp'
  try:
    with open(tmp, 'wb') as f:
      half = len(payload) // 2
      f.write(payload[:half])
      if os.environ.get(KILL_ENV) == os.path.basename(path).split('.')[-1]:
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
      f.write(payload[half:])
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as error:
    if os.path.exists(tmp):
      os.remove(tmp)
    if error.errno == errno.ENOSPC:
      raise OSError(errno.ENOSPC, f'Disk full while writing {path}; the '
                    'previous checkpoint is intact. Free space and rerun the '
                    'same command to resume from it.') from error
    raise


def save(directory, number, data, keep=2):
  """Writes checkpoint `number`, then prunes all but the newest `keep`."""
  os.makedirs(directory, exist_ok=True)
  payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
  _write_atomically(_path(directory, CHECKPOINT_PREFIX, number), payload)
  _write_atomically(_path(directory, SENTINEL_PREFIX, number), b'done')
  for stale in complete_numbers(directory)[keep:]:
    remove(directory, stale)


def _number_of(name):
  """Checkpoint number in a file name (`ckpt.N`, `x.N.npz`) or folder `N`.

  Dopamine's JAX replay buffers save through orbax into a folder named by
  the bare number.
  """
  if name.isdigit():
    return int(name)
  match = (re.match(r'(\d+)\.', name) or  # orbax's `N.orbax-checkpoint-tmp-*`
           re.search(r'\.(\d+)(\.|$)', name))
  return int(match.group(1)) if match else None


def _delete(directory, name):
  path = os.path.join(directory, name)
  if os.path.isdir(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


def size(directory, number):
  """Bytes on disk of every file and folder of checkpoint `number`."""
  total = 0
  for name in os.listdir(directory):
    if _number_of(name) != number:
      continue
    path = os.path.join(directory, name)
    if os.path.isdir(path):
      total += sum(os.path.getsize(os.path.join(root, f))
                   for root, _, files in os.walk(path) for f in files)
    else:
      total += os.path.getsize(path)
  return total


def remove(directory, number):
  """Deletes every file of checkpoint `number` (sentinel first)."""
  os.remove(_path(directory, SENTINEL_PREFIX, number))
  for name in os.listdir(directory):
    if _number_of(name) == number:
      _delete(directory, name)


def clear_from(directory, number):
  """Deletes every checkpoint file numbered `number` or later.

  Called before writing checkpoint `number`: after a fallback from a damaged
  newer checkpoint its files are stale, and some writers (orbax) refuse to
  overwrite a step that exists, which would pair new state with old replay.
  """
  for name in sorted(os.listdir(directory)):
    found = _number_of(name)
    if found is not None and found >= number:
      _delete(directory, name)


def remove_incomplete(directory):
  """Deletes files of checkpoints that never got their sentinel.

  They are what a process killed while checkpointing leaves behind (the
  agent's replay file is written before `ckpt.N`).
  """
  if not os.path.isdir(directory):
    return []
  complete = set(complete_numbers(directory))
  removed = []
  for name in sorted(os.listdir(directory)):
    number = _number_of(name)
    if number is not None and number not in complete:
      _delete(directory, name)
      removed.append(name)
  if removed:
    logging.warning('Removed files of incomplete checkpoints: %s',
                    ', '.join(removed))
  return removed


def load_newest(directory, restore):
  """Restores the newest checkpoint that `restore(number, data)` accepts.

  Args:
    directory: the checkpoint directory.
    restore: callable(number, data) that raises if the checkpoint is unusable
      (foreign, truncated, wrong shapes, missing companion files).

  Returns:
    (number, data) of the restored checkpoint, or None when there is none.

  Raises:
    CheckpointError: checkpoints exist but none can be restored; the message
      names every file and why it failed.
  """
  failures = []
  for number in complete_numbers(directory):
    path = _path(directory, CHECKPOINT_PREFIX, number)
    try:
      with open(path, 'rb') as f:
        data = pickle.load(f)
      if not isinstance(data, dict):
        raise ValueError(f'holds a {type(data).__name__}, not a checkpoint')
      restore(number, data)
    except Exception as error:  # pylint: disable=broad-except
      failures.append(f'  {path}: {type(error).__name__}: {error}')
      continue
    if failures:
      logging.error(
          '\n%s\nCHECKPOINT FALLBACK: resumed from %s because newer '
          'checkpoints are unreadable:\n%s\n%s', '!' * 72, path,
          '\n'.join(failures), '!' * 72)
    return number, data
  if failures:
    raise CheckpointError(
        f'No checkpoint in {directory} can be restored, so this run will '
        'not silently start over:\n' + '\n'.join(failures) +
        '\nFix or remove these files, or bind Atari100kRunner.fresh_start = '
        'True to move the old run aside and start from scratch.')
  return None


def check_writable(base_dir, required_bytes):
  """Fails before training when base_dir cannot hold the run's checkpoints.

  Args:
    base_dir: the run directory (created if missing).
    required_bytes: free space needed for the checkpoints kept at once.

  Raises:
    OSError: base_dir is not writable or lacks the space, with the numbers.
  """
  try:
    os.makedirs(base_dir, exist_ok=True)
    probe = os.path.join(base_dir, '.bbf_write_probe')
    with open(probe, 'wb') as f:
      f.write(b'ok')
    os.remove(probe)
  except OSError as error:
    raise OSError(error.errno, f'base_dir {base_dir} is not writable: '
                  f'{error.strerror}. Choose another --base_dir.') from error
  free = shutil.disk_usage(base_dir).free
  if free < required_bytes:
    raise OSError(
        errno.ENOSPC,
        f'base_dir {base_dir} has {free / 2**30:.2f} GiB free but the run '
        f'needs about {required_bytes / 2**30:.2f} GiB for its checkpoints '
        '(replay buffer and networks, times the checkpoints kept plus one '
        'being written). Free space, choose another --base_dir or lower '
        'Atari100kRunner.keep_checkpoints.')
