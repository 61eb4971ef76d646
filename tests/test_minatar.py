# coding=utf-8
"""BBF on MinAtar, the CPU-scale testbed: environment, smoke run, exact resume.

  * The wrapper: each game's 10x10xC shape, uint8 frames, seeding that
    reproduces a game (Dopamine's wrapper never seeds MinAtar), errors.
  * gin_configs/minatar/bbf.gin through Dopamine's train binary for a few
    hundred agent steps: the agent trains on 10x10x4 frames, evaluation and
    final_eval.json (raw returns, no human normalisation) are written.
  * A run stopped after an iteration, with its episode in flight, resumes
    to the same parameters as a run straight through (the environment is
    checkpointed by pickling it), with and without ReDo and pruning; every
    binding of the gin file is used.
"""

import json
import os
import subprocess
import sys

from dopamine.discrete_domains import run_experiment
import gin
import jax
import numpy as np
import pytest

from bbf_dopamine import minatar_env
from test_end_to_end import load_checkpoint
from test_end_to_end import ROOT
from test_end_to_end import tensorboard_tags
from test_gin_configs import file_bindings
from test_gin_configs import unused_bindings

GIN = ROOT / 'gin_configs' / 'minatar' / 'bbf.gin'
CHANNELS = {'asterix': 4, 'breakout': 4, 'freeway': 7, 'seaquest': 10,
            'space_invaders': 6}
TINY = ['BBFNetwork.hidden_dim = 32', 'BBFNetwork.width_scale = 0.5',
        'BBFAgent.min_replay_history = 100', 'BBFAgent.replay_capacity = 1000',
        'BBFAgent.log_every = 10', 'Atari100kRunner.num_eval_episodes = 2',
        'Atari100kRunner.intermediate_eval_episodes = 0',
        'Atari100kRunner.max_steps_per_episode = 100',
        # Plasticity diagnostics every 50 gradient steps on 32 probe states.
        'BBFAgent.diagnostics_every = 50',
        'BBFAgent.diagnostics_batch_size = 32']


def _play(env, seed, steps=300):
  env.seed(seed)
  actions = np.random.default_rng(0).integers(0, 6, steps)
  trace, observation = [], env.reset()
  for action in actions:
    observation, reward, terminal, _ = env.step(action)
    trace.append((observation.copy(), reward))
    if terminal:
      observation = env.reset()
  return trace


@pytest.mark.parametrize('game', sorted(CHANNELS))
def test_wrapper_shapes_and_pixels(game):
  env = minatar_env.create_minatar_environment(game)
  observation = env.reset()
  assert observation.shape == env.observation_shape == (10, 10, CHANNELS[game])
  assert observation.dtype == np.uint8
  assert set(np.unique(observation)) <= {0, 255} and observation.max() == 255
  assert env.action_space.n == 6
  raw = minatar_env.create_minatar_environment(game, pixel_scale=1).reset()
  assert set(np.unique(raw)) <= {0, 1}


def test_seeding_reproduces_games():
  make = lambda: minatar_env.create_minatar_environment('space_invaders')
  first, again, other = _play(make(), 3), _play(make(), 3), _play(make(), 4)
  for (obs_a, r_a), (obs_b, r_b) in zip(first, again):
    np.testing.assert_array_equal(obs_a, obs_b)
    assert r_a == r_b
  assert any(not np.array_equal(a[0], c[0]) for a, c in zip(first, other))


def test_unknown_game():
  with pytest.raises(ValueError, match="'pong'.*breakout"):
    minatar_env.create_minatar_environment('pong')


def train_minatar(base_dir, gin_file, bindings, timeout=900):
  """Dopamine's train binary on a MinAtar gin file with TINY + `bindings`;
  asserts it exits cleanly and returns final_eval.json (also used by the
  variants' smoke tests: test_moe, test_redo, test_pruning)."""
  command = [sys.executable, '-m', 'dopamine.discrete_domains.train',
             f'--base_dir={base_dir}', f'--gin_files={gin_file}']
  command += [f'--gin_bindings={b}' for b in TINY + list(bindings)]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  with open(os.path.join(base_dir, 'final_eval.json')) as f:
    return json.load(f)


def test_bbf_trains_through_the_train_binary(tmp_path):
  final = train_minatar(tmp_path, GIN, ['Atari100kRunner.num_iterations = 1',
                                        'Atari100kRunner.training_steps = 300'])
  assert final['game'] == 'breakout' and final['domain'] == 'minatar'
  assert final['human_normalized_mean'] is None
  assert len(final['returns']) == 2 and final['env_steps'] == 300
  bundle = load_checkpoint(str(tmp_path), 300)
  assert bundle['state'].shape == (10, 10, 4, 1)  # (h, w, C, stack)
  # Gradient steps from agent step 101 on, 2 per agent step.
  assert bundle['gradient_steps'] >= 2 * (300 - 101)
  tags = tensorboard_tags(str(tmp_path))
  for tag in ('Agent/Loss', 'Agent/SPRLoss', 'Eval/AverageReturns',
              'Plasticity/DormantFraction/all', 'Plasticity/SRank/penultimate',
              'Plasticity/PolicyChurn', 'Plasticity/ParamNorm/encoder',
              'Plasticity/GradNorm/encoder', 'Plasticity/QMean',
              'Plasticity/Overestimation'):
    assert tag in tags, (tag, sorted(tags))
  # The probe batch is kept in the checkpoint (for churn after a resume).
  assert bundle['plasticity']['probe_states'].shape == (32, 10, 10, 4, 1)


# ReDo and pruning across the split at agent step 130: recyclings every 50
# gradient steps (training from step 61, 2 per step), pruning to 50% from
# agent step 52 to 208 every 20 gradient steps.
REDO_AND_PRUNING = ['BBFAgent.redo_every = 50',
                    'BBFAgent.target_sparsity = 0.5',
                    'BBFAgent.pruning_total_steps = 260',
                    'BBFAgent.pruning_frequency = 20']


def _runner(base_dir, iterations, extra=()):
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(GIN)], list(extra) + TINY + [
      f'Atari100kRunner.num_iterations = {iterations}',
      'Atari100kRunner.training_steps = 130',
      # As many as the final evaluation, so that the first half of the
      # split run (whose iteration 0 is its last) evaluates the same way.
      'Atari100kRunner.intermediate_eval_episodes = 2',
      'BBFAgent.min_replay_history = 60'])
  return run_experiment.create_runner(str(base_dir))


@pytest.mark.parametrize('extra', [(), REDO_AND_PRUNING],
                         ids=['bbf', 'redo_and_pruning'])
def test_resume_mid_episode_is_exact(extra, tmp_path, clean_gin):  # pylint: disable=unused-argument
  written = set(file_bindings(GIN))  # (clears gin: before the runner)
  straight = _runner(tmp_path / 'straight', 2, extra)
  straight.run_experiment()
  # Every binding of the MinAtar gin file was used by the run.
  assert unused_bindings(written, straight) == set()
  first = _runner(tmp_path / 'split', 1, extra)
  first.run_experiment()
  # The episode in flight at step 130 was saved with the environment.
  bundle = load_checkpoint(str(tmp_path / 'split'), 130)
  assert bundle['bbf_runner']['environment'] is not None
  second = _runner(tmp_path / 'split', 2, extra)
  assert second._resumed_from == 130  # pylint: disable=protected-access
  second.run_experiment()
  a = load_checkpoint(str(tmp_path / 'straight'), 260)
  b = load_checkpoint(str(tmp_path / 'split'), 260)
  drop = lambda logs: {i: {k: v for k, v in stats.items()
                           if k != 'train_average_steps_per_second'}
                       for i, stats in logs.items()}
  assert drop(a['logs']) == drop(b['logs'])
  for x, y in zip(jax.tree_util.tree_leaves(a['train_state']),
                  jax.tree_util.tree_leaves(b['train_state'])):
    np.testing.assert_array_equal(x, y)
  assert os.path.exists(tmp_path / 'split' / 'final_eval.json')
  if extra:  # the variants really ran on both sides of the split
    assert a['train_state'].masks is not None
    assert a['pruning']['applied'] == 0.5
    assert a['redo'] == b['redo']
