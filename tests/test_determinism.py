# coding=utf-8
"""Same seed, same run; another seed, another run; a killed run resumes exactly.

Dopamine's train binary on real Pong (sticky actions on, so the seeded ALE
matters), tiny network. Run A trains 2 iterations straight through. Run B is
the same command, killed with SIGKILL as soon as checkpoint 0 is complete,
then started again on its base_dir: it must resume at iteration 1 and end
with bit-identical parameters, optimiser state, counters and logged returns.
Run C differs only in BBFAgent.seed and must differ.
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from test_end_to_end import load_checkpoint
from test_end_to_end import RELOADED
from test_end_to_end import ROOT
from test_end_to_end import TINY

SENTINEL = os.path.join('checkpoints', 'sentinel_checkpoint_complete.{}')


def _command(base_dir, seed):
  bindings = TINY + ['Runner.num_iterations = 2', f'BBFAgent.seed = {seed}',
                     'atari_lib.create_atari_environment.sticky_actions = True']
  return ([sys.executable, '-m', 'dopamine.discrete_domains.train',
           f'--base_dir={base_dir}', '--gin_files=gin_configs/bbf.gin'] +
          [f'--gin_bindings={b}' for b in bindings])


def _run(base_dir, seed):
  result = subprocess.run(_command(base_dir, seed), cwd=ROOT, text=True,
                          capture_output=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _run_killed_after_checkpoint_0(base_dir, seed):
  process = subprocess.Popen(_command(base_dir, seed), cwd=ROOT,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  sentinel = os.path.join(base_dir, SENTINEL.format(0))
  deadline = time.time() + 600
  while not os.path.exists(sentinel):
    assert process.poll() is None, 'run ended before checkpoint 0'
    assert time.time() < deadline
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(base_dir, SENTINEL.format(1)))


def _final_state(base_dir):
  bundle = load_checkpoint(base_dir, 1)
  leaves = jax.tree_util.tree_leaves(bundle['train_state'])
  counters = {k: bundle[k] for k in ('training_steps', 'gradient_steps',
                                     'num_resets')}
  returns = [bundle['logs'][f'iteration_{i}']['train_episode_returns']
             for i in (0, 1)]
  return leaves, counters, returns


def test_seeded_runs_repeat_and_resume_exactly(tmp_path):
  straight, killed, other = (str(tmp_path / name)
                             for name in ('straight', 'killed', 'other'))
  _run(straight, seed=3)
  _run_killed_after_checkpoint_0(killed, seed=3)
  resumed = _run(killed, seed=3)
  assert RELOADED in resumed.stderr + resumed.stdout
  _run(other, seed=4)

  leaves_a, counters_a, returns_a = _final_state(straight)
  leaves_b, counters_b, returns_b = _final_state(killed)
  leaves_c, _, _ = _final_state(other)
  assert counters_a == counters_b
  assert counters_a['gradient_steps'] > 0
  assert returns_a == returns_b
  assert len(leaves_a) == len(leaves_b)
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, c) for a, c in zip(leaves_a, leaves_c))
  with open(os.path.join(straight, 'config.gin')) as f:
    assert 'BBFAgent.seed = 3' in f.read()
