# coding=utf-8
"""Tests of bbf_dopamine/aggregate.py against hand-computed numbers."""

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from bbf_dopamine import aggregate

REPS = 200  # Enough for interval checks; the report uses 2000.

# (num_runs=2, num_games=4). Sorted values: -0.3 0.0 0.1 0.4 | 0.5 1.2 2.0 3.0.
HAND = np.array([[0.1, 0.5, 2.0, -0.3],
                 [0.4, 1.2, 0.0, 3.0]])
# 25% trimmed mean: drop the 2 lowest and 2 highest of 8 -> (0.1 + 0.4 +
# 0.5 + 1.2) / 4.
HAND_IQM = 0.55
# Per-game means 0.25, 0.85, 1.0, 1.35.
HAND_MEAN = 0.8625
HAND_MEDIAN = 0.925
# min(x, 1) sums to 3.7 over 8 values: 1 - 3.7 / 8.
HAND_GAP = 0.5375


def _row(table, agent):
  return table[table['agent'] == agent].iloc[0]


def test_point_estimates_by_hand():
  table = aggregate.aggregate_table({'a': HAND}, reps=REPS)
  row = _row(table, 'a')
  assert row['iqm'] == pytest.approx(HAND_IQM)
  assert row['mean'] == pytest.approx(HAND_MEAN)
  assert row['median'] == pytest.approx(HAND_MEDIAN)
  assert row['optimality_gap'] == pytest.approx(HAND_GAP)
  assert (row['num_games'], row['runs_per_game']) == (4, 2)


def test_mean_median_equal_numpy():
  matrix = np.random.RandomState(3).normal(1.0, 1.0, (7, 26))
  point, _ = aggregate.interval_estimates({'a': matrix}, reps=REPS)
  assert point['a'].shape == (4,)
  assert point['a'][0] == pytest.approx(np.mean(matrix.mean(axis=0)))
  assert point['a'][1] == pytest.approx(np.median(matrix.mean(axis=0)))
  assert point['a'][3] == pytest.approx(1 - np.mean(np.minimum(matrix, 1)))


def test_interval_contains_point_and_shrinks_with_more_runs():
  rng = np.random.RandomState(0)
  game_means = rng.uniform(0.0, 2.0, 26)
  few = rng.normal(game_means, 0.5, (5, 26))  # (runs, games)
  many = rng.normal(game_means, 0.5, (100, 26))
  point, interval = aggregate.interval_estimates({'few': few, 'many': many},
                                                 reps=REPS)
  for agent in ('few', 'many'):
    assert interval[agent].shape == (2, 4)
    low, high = interval[agent]
    assert np.all(low <= point[agent]) and np.all(point[agent] <= high)
  width = lambda agent: interval[agent][1] - interval[agent][0]  # (4,)
  assert np.all(width('many') < 0.6 * width('few'))


def test_bootstrap_is_seeded_and_leaves_global_rng_alone():
  matrix = np.random.RandomState(1).normal(1.0, 1.0, (5, 10))
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  _, first = aggregate.interval_estimates({'a': matrix}, reps=REPS, seed=7)
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  _, again = aggregate.interval_estimates(
      {'b': matrix + 1, 'a': matrix}, reps=REPS, seed=7)
  # Same seed: identical, whichever other agents are in the report.
  np.testing.assert_array_equal(first['a'], again['a'])
  _, other = aggregate.interval_estimates({'a': matrix}, reps=REPS, seed=8)
  assert not np.array_equal(first['a'], other['a'])


def test_fast_probability_of_improvement_equals_rliable():
  rng = np.random.RandomState(0)
  x = rng.randint(0, 4, (6, 5)).astype(float)  # Many ties.
  y = rng.randint(0, 4, (9, 5)).astype(float)
  y[:, 0] = np.arange(9)
  x_same = x.copy()
  for a, b in ((x, y), (y, x), (x, x_same)):
    assert aggregate._probability_of_improvement(a, b) == pytest.approx(
        rly_metrics.probability_of_improvement(a, b), abs=1e-12)


def test_probability_of_improvement_dominating_and_identical():
  rng = np.random.RandomState(0)
  base = rng.normal(0.0, 1.0, (5, 8))
  poi = aggregate.probability_of_improvement(
      {'better': base + 10.0, 'base': base, 'copy': base.copy()}, reps=REPS)
  assert len(poi) == 6  # Every ordered pair of 3 agents.
  pick = lambda x, y: poi[(poi.agent_x == x) & (poi.agent_y == y)].iloc[0]
  better = pick('better', 'base')
  assert (better.probability, better.low, better.high) == (1.0, 1.0, 1.0)
  assert pick('base', 'better').probability == 0.0
  same = pick('base', 'copy')
  assert same.probability == 0.5
  assert same.low <= 0.5 <= same.high


def test_missing_game_raises_naming_agent_and_game():
  per_game = {'full': {'Pong': [0.1, 0.2], 'Breakout': [1.0, 2.0]},
              'partial': {'Pong': [0.3, 0.4], 'Breakout': []}}
  with pytest.raises(ValueError) as error:
    aggregate.score_matrices(per_game)
  assert "'partial'" in str(error.value) and 'Breakout' in str(error.value)
  assert 'common_games' in str(error.value)


def test_common_games_drops_and_notes():
  per_game = {'full': {'Pong': [0.1, 0.2], 'Breakout': [1.0, 2.0]},
              'partial': {'Pong': [0.3, 0.4]}}
  result = aggregate.score_matrices(per_game, common_games=True)
  assert result.games == ('Pong',)
  np.testing.assert_array_equal(result.scores['full'], [[0.1], [0.2]])
  assert len(result.notes) == 1
  note = result.notes[0]
  assert 'dropped Breakout' in note and 'missing for partial' in note


def test_no_common_game_raises():
  with pytest.raises(ValueError, match='No game is common'):
    aggregate.score_matrices({'a': {'Pong': [1.0]}, 'b': {'Alien': [1.0]}},
                             common_games=True)


def test_unequal_run_counts_use_first_n_with_note():
  per_game = {'a': {'Pong': [1.0, 2.0, 3.0], 'Alien': [4.0, 5.0]},
              'b': {'Pong': [6.0], 'Alien': [7.0]}}
  result = aggregate.score_matrices(per_game)
  assert result.games == ('Pong', 'Alien')
  np.testing.assert_array_equal(result.scores['a'], [[1.0, 4.0], [2.0, 5.0]])
  np.testing.assert_array_equal(result.scores['b'], [[6.0, 7.0]])
  assert result.notes == (
      'a: runs per game range from 2 to 3; aggregates use the first 2 runs '
      'of every game (rliable needs as many runs on every game).',
      'b: one run per game, so its intervals show no run-to-run variation.')


def test_non_finite_score_raises():
  with pytest.raises(ValueError, match=r"'a'.*Alien"):
    aggregate.score_matrices({'a': {'Pong': [1.0], 'Alien': [float('nan')]}})


def test_performance_profiles_are_score_distributions():
  matrix = np.array([[0.0, 0.6, 1.5], [0.2, 2.0, 0.8]])  # (2 runs, 3 games)
  taus, profiles, intervals = aggregate.performance_profiles(
      {'a': matrix}, taus=[0.0, 0.5, 1.0, 3.0], reps=REPS)
  # Fraction of the 6 run-game scores strictly above each tau.
  np.testing.assert_allclose(profiles['a'], [5 / 6, 4 / 6, 2 / 6, 0.0])
  assert intervals['a'].shape == (2, 4)
  assert np.all(intervals['a'][0] <= profiles['a'] + 1e-12)
  assert np.all(profiles['a'] <= intervals['a'][1] + 1e-12)
  default = aggregate.default_taus({'a': matrix})
  assert default[0] == 0.0 and default[-1] >= 1.0
  assert np.all(np.diff(default) > 0)
