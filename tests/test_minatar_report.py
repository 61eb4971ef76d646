# coding=utf-8
"""The report on MinAtar runs: random normalisation and plasticity curves.

Runs are hand-written (final_eval.json, and TensorBoard event files written
with tf.summary as the agent writes them), so every number is known.
"""

import csv
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from bbf_dopamine import analyze
from bbf_dopamine import plasticity_report
from bbf_dopamine import scores

# agent -> seed -> final-evaluation returns, on MinAtar breakout.
RETURNS = {'bbf': {'0': [10.0, 12.0], '1': [6.0, 8.0], '2': [9.0, 9.0]},
           'bbf_no_resets': {'0': [3.0, 5.0], '1': [2.0, 2.0],
                             '2': [4.0, 6.0]}}
# Dormant fraction logged by bbf seed s at gradient steps 0, 100, 200 (+ s
# / 100), with a reset at 200: measured before (first) and after (second).
DORMANT = {'0': [0.1, 0.3, 0.5, 0.2], '1': [0.2, 0.4, 0.6, 0.1],
           '2': [0.3, 0.2, 0.4, 0.0]}
STEPS = [0, 100, 200, 200]


def _write_events(run_dir, values, reset):
  writer = tf.summary.create_file_writer(
      os.path.join(run_dir, 'metrics', 'tensorboard'))
  with writer.as_default():
    for step, value in zip(STEPS, values):
      tf.summary.scalar('Plasticity/DormantFraction/all', value, step=step)
      tf.summary.scalar('Agent/Loss', 1.0, step=step)  # Not Plasticity/.
    if reset:
      tf.summary.scalar('Plasticity/Reset', 1.0, step=200)
  writer.close()


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  base = tmp_path_factory.mktemp('minatar')
  for agent, seeds in RETURNS.items():
    for seed, returns in seeds.items():
      run_dir = base / agent / 'minatar-breakout' / seed
      run_dir.mkdir(parents=True)
      (run_dir / 'final_eval.json').write_text(json.dumps({
          'agent': agent, 'game': 'breakout', 'domain': 'minatar',
          'seed': int(seed), 'env_steps': 10_000, 'returns': returns,
          'mean_return': float(np.mean(returns)),
          'human_normalized_mean': None}))
      if agent == 'bbf':
        _write_events(str(run_dir), DORMANT[seed], reset=True)
  return base


def test_random_normalisation_by_hand():
  with open(os.path.join(os.path.dirname(scores.__file__), 'data',
                         'minatar_random.csv')) as f:
    rows = {r['game']: r for r in csv.DictReader(f)}
  assert set(rows) == set(scores.MINATAR_GAMES)
  mean, std = float(rows['breakout']['mean']), float(rows['breakout']['std'])
  assert 0 < mean < 1 and 0 < std < 2  # Random breakout: under 1 point.
  assert scores.random_normalized('minatar-breakout', 10.0) == pytest.approx(
      (10.0 - mean) / std)
  assert scores.normalized('minatar-breakout', mean) == 0.0
  np.testing.assert_allclose(
      scores.normalized('MinAtar-Breakout', [mean, mean + std]), [0.0, 1.0])
  # Atari names keep the human normalisation.
  assert scores.normalized('Breakout', 1.7) == pytest.approx(0.0)
  assert scores.domain('Breakout') == 'atari'
  assert scores.domain('minatar-space_invaders') == 'minatar'
  assert scores.minatar_game('Space Invaders') == 'minatar-space_invaders'
  with pytest.raises(ValueError, match="Unknown game 'minatar-pong'"):
    scores.domain('minatar-pong')


def test_read_run_keeps_both_measurements_of_a_reset(root):
  series = plasticity_report.read_run(str(root / 'bbf' / 'minatar-breakout'
                                          / '0'))
  assert set(series) == {'Plasticity/DormantFraction/all', 'Plasticity/Reset'}
  dormant = series['Plasticity/DormantFraction/all']
  assert dormant == pytest.approx({(0, 0): 0.1, (100, 0): 0.3, (200, 0): 0.5,
                                   (200, 1): 0.2})
  assert plasticity_report.reset_steps([series]) == [200]
  assert plasticity_report.read_run(str(root / 'nowhere')) == {}


def test_mean_curve_against_numpy(root):
  runs = [plasticity_report.read_run(str(root / 'bbf' / 'minatar-breakout' /
                                         s))['Plasticity/DormantFraction/all']
          for s in sorted(DORMANT)]
  x, mean, std, count = plasticity_report.mean_curve(runs)
  values = np.array([DORMANT[s] for s in sorted(DORMANT)])  # (seeds, points)
  np.testing.assert_array_equal(x, STEPS)
  np.testing.assert_allclose(mean, values.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, values.std(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(count, [3, 3, 3, 3])


def test_minatar_report(root, tmp_path):
  out = tmp_path / 'report'
  result = analyze.build_report([str(root)], str(out), reps=200)
  per_game = result['per_game'].set_index('agent')
  assert list(per_game['game']) == ['minatar-breakout'] * 2
  assert 'human_normalized_mean' not in per_game
  for agent, seeds in RETURNS.items():
    mean = np.mean([np.mean(r) for r in seeds.values()])
    assert per_game.loc[agent, 'mean_score'] == pytest.approx(mean)
    assert per_game.loc[agent, 'random_normalized_mean'] == pytest.approx(
        scores.random_normalized('minatar-breakout', mean))
  # The default published Atari agents are dropped, with a note.
  assert set(result['aggregates']['agent']) == set(RETURNS)
  assert any('not shown for MinAtar' in n for n in result['notes'])
  # IQM of the 3 runs' random-normalised scores.
  iqm = result['aggregates'].set_index('agent').loc['bbf', 'iqm']
  seed_scores = sorted(scores.random_normalized('minatar-breakout',
                                                np.mean(r))
                       for r in RETURNS['bbf'].values())
  assert iqm == pytest.approx(_iqm(seed_scores))
  text = (out / 'report.md').read_text()
  assert text.startswith('# MinAtar comparison report')
  assert 'random-normalised score (score - random mean) / random std' in text
  assert '## Plasticity diagnostics' in text
  # End-of-training dormant fraction: mean over seeds of the last 3 points.
  last3 = [np.mean(v[-3:]) for v in DORMANT.values()]
  assert f'| bbf | minatar-breakout | {np.mean(last3):.3g} ± ' in text
  assert (out / 'plasticity.png').stat().st_size > 10_000
  with open(out / 'plasticity.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 * (len(STEPS) + 1)  # dormant points + reset marks
  assert {r['agent'] for r in rows} == {'bbf'}


def _iqm(values):
  """Interquartile mean as rliable computes it (scipy trim_mean 0.25)."""
  values = np.sort(values)
  cut = int(math.floor(0.25 * len(values)))
  return float(np.mean(values[cut:len(values) - cut]))


def test_one_report_one_domain(root, tmp_path):
  atari = tmp_path / 'atari' / 'dqn' / 'Breakout' / '0'
  atari.mkdir(parents=True)
  (atari / 'final_eval.json').write_text(json.dumps({'returns': [1.0]}))
  with pytest.raises(ValueError, match='mix Atari 100k and MinAtar'):
    analyze.build_report([str(root), str(tmp_path / 'atari')],
                         str(tmp_path / 'out'), reps=50)
