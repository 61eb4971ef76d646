# coding=utf-8
"""Same seed, same run; another seed, another run; killed runs resume exactly.

Dopamine's train binary on real Pong with bbf.gin's Atari 100k runner (sticky
actions on, so the seeded ALE matters), tiny network, 2 iterations of 100
agent steps, a checkpoint every 30 agent steps (so most land inside an
episode and inside an iteration).
  * Run A trains straight through.
  * Run B is the same command, killed three ways and resumed each time:
    SIGKILLed by the fault-injection hook half-way through writing checkpoint
    90 (the previous one, 60, must be used), then SIGKILLed from outside as
    soon as checkpoint 150 is complete, then run to the end. It must end with
    bit-identical parameters, optimiser state, counters, logged returns and
    evaluation returns.
  * Run C differs only in BBFAgent.seed and must differ.
Then A's directory is damaged: a truncated newest checkpoint makes the run
fall back to the previous one (loudly) and recompute the same result; with
every checkpoint damaged the run refuses to start and names the files.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from bbf_dopamine import checkpoints
from test_end_to_end import load_checkpoint
from test_end_to_end import RELOADED
from test_end_to_end import ROOT
from test_end_to_end import TINY

END = 200  # 2 iterations x 100 agent steps: the last checkpoint's number
SENTINEL = os.path.join('checkpoints', 'sentinel_checkpoint_complete.{}')


def _command(base_dir, seed, extra=()):
  bindings = TINY + ['Atari100kRunner.num_iterations = 2',
                     'Atari100kRunner.checkpoint_every = 30',
                     f'BBFAgent.seed = {seed}',
                     'atari_lib.create_atari_environment.sticky_actions = True']
  return ([sys.executable, '-m', 'dopamine.discrete_domains.train',
           f'--base_dir={base_dir}', '--gin_files=gin_configs/bbf.gin'] +
          [f'--gin_bindings={b}' for b in bindings + list(extra)])


def _run(base_dir, seed, env=None, expect_rc=0, extra=()):
  result = subprocess.run(_command(base_dir, seed, extra), cwd=ROOT, text=True,
                          capture_output=True, timeout=900, check=False,
                          env=env)
  assert result.returncode == expect_rc, result.stderr[-3000:]
  return result


def _run_killed_after_checkpoint(base_dir, seed, number):
  process = subprocess.Popen(_command(base_dir, seed), cwd=ROOT,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  sentinel = os.path.join(base_dir, SENTINEL.format(number))
  deadline = time.time() + 600
  while not os.path.exists(sentinel):
    assert process.poll() is None, f'run ended before checkpoint {number}'
    assert time.time() < deadline
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(base_dir, SENTINEL.format(END)))


def _final_state(base_dir):
  bundle = load_checkpoint(base_dir, END)
  leaves = jax.tree_util.tree_leaves(bundle['train_state'])
  counters = {k: bundle[k] for k in ('training_steps', 'gradient_steps',
                                     'num_resets')}
  logs = [{k: bundle['logs'][f'iteration_{i}'][k]
           for k in ('train_episode_returns', 'eval_episode_returns')}
          for i in (0, 1)]
  with open(os.path.join(base_dir, 'final_eval.json')) as f:
    final = json.load(f)['returns']
  return leaves, counters, logs, final


def _assert_same(a, b):
  leaves_a, counters_a, logs_a, final_a = a
  leaves_b, counters_b, logs_b, final_b = b
  assert counters_a == counters_b
  assert counters_a['gradient_steps'] > 0
  assert logs_a == logs_b
  assert final_a == final_b
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def test_seeded_runs_repeat_and_resume_exactly(tmp_path):
  straight, killed, other = (str(tmp_path / name)
                             for name in ('straight', 'killed', 'other'))
  _run(straight, seed=3)

  # B1: dies while writing checkpoint 90.
  env = dict(os.environ, **{checkpoints.KILL_ENV: '90'})
  _run(killed, seed=3, env=env, expect_rc=-signal.SIGKILL)
  names = set(os.listdir(os.path.join(killed, 'checkpoints')))
  assert 'ckpt.90.tmp' in names and 'sentinel_checkpoint_complete.90' not in names
  assert 'sentinel_checkpoint_complete.60' in names
  # B2: resumes from 60, is killed once checkpoint 150 is complete.
  _run_killed_after_checkpoint(killed, seed=3, number=150)
  names = set(os.listdir(os.path.join(killed, 'checkpoints')))
  assert 'ckpt.90.tmp' not in names  # cleaned up on resume
  # B3: resumes from the newest complete checkpoint and finishes.
  resumed = _run(killed, seed=3)
  assert RELOADED.format('') in resumed.stderr
  _run(other, seed=4)

  _assert_same(_final_state(straight), _final_state(killed))
  leaves_a, _, _, _ = _final_state(straight)
  leaves_c, _, _, _ = _final_state(other)
  assert any(not np.array_equal(a, c) for a, c in zip(leaves_a, leaves_c))
  with open(os.path.join(straight, 'config.gin')) as f:
    assert 'BBFAgent.seed = 3' in f.read()
  with open(os.path.join(straight, 'run_info.json')) as f:
    assert json.load(f)['seed'] == 3

  # A truncated newest checkpoint: fall back to the previous one (180),
  # loudly, and recompute the same end state.
  directory = os.path.join(straight, 'checkpoints')
  assert checkpoints.complete_numbers(directory) == [END, 180]
  reference = _final_state(straight)
  path = os.path.join(directory, f'ckpt.{END}')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 3])
  fallback = _run(straight, seed=3)
  assert 'CHECKPOINT FALLBACK' in fallback.stderr
  assert path in fallback.stderr
  assert RELOADED.format(180) in fallback.stderr
  _assert_same(reference, _final_state(straight))

  # Every checkpoint unreadable: a clear error naming the files, no training.
  for number in checkpoints.complete_numbers(directory):
    with open(os.path.join(directory, f'ckpt.{number}'), 'wb') as f:
      f.write(b'not a pickle')
  before = sorted(os.listdir(directory))
  failed = _run(straight, seed=3, expect_rc=1)
  assert 'CheckpointError' in failed.stderr
  for number in (180, END):
    assert os.path.join(directory, f'ckpt.{number}') in failed.stderr
  assert 'fresh_start' in failed.stderr
  assert sorted(os.listdir(directory)) == before
