# coding=utf-8
"""End-to-end tests of the report command on a hand-written results tree."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bbf_dopamine import aggregate
from bbf_dopamine import analyze
from bbf_dopamine import run_files
from bbf_dopamine import scores

# Raw final-evaluation returns written into each final_eval.json:
# root -> agent -> game directory -> seed -> returns.
FINAL_RETURNS = {
    'root1': {'agent_a': {'Pong': {'0': [-21.0, -19.0], '1': [-15.0, -16.0]},
                          'Breakout': {'0': [2.0, 4.0], '1': [10.0, 12.0]}}},
    # agent_b lives in a second root; 'pong' is spelled in lower case.
    'root2': {'agent_b': {'pong': {'0': [0.0, 1.0], '1': [5.0, 7.0]},
                          'Breakout': {'0': [30.0, 31.0], '1': [20.0, 24.0]}}},
}
# agent_b/pong/2 has logs but no final_eval.json: its final score is the
# eval returns of the last logged iteration.
LOGS_ONLY_RETURNS = [3.0, 6.0]
# Dopamine-Runner logs (no env_steps); config.gin gives training_steps.
LOGS_ONLY_TRAINING_STEPS = 5000


def _write_logs(run_dir, final_eval_returns, with_env_steps=True):
  """Dopamine legacy-logger pickle with two iterations, eval on the last."""
  iterations = {}
  for i in range(2):
    stats = {'train_episode_returns': [-20.0 + i, -18.0 + i],
             'train_average_return': [-19.0 + i]}
    if with_env_steps:
      stats['env_steps'] = [50_000 * (i + 1)]
    if i == 1:
      stats['eval_episode_returns'] = list(final_eval_returns)
      stats['eval_average_return'] = [float(np.mean(final_eval_returns))]
    iterations[f'iteration_{i}'] = stats
  os.makedirs(os.path.join(run_dir, 'logs'))
  with open(os.path.join(run_dir, 'logs', 'log_1'), 'wb') as f:
    pickle.dump(iterations, f)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  base = tmp_path_factory.mktemp('results')
  for root, agents in FINAL_RETURNS.items():
    for agent, games in agents.items():
      for game, seeds in games.items():
        for seed, returns in seeds.items():
          run_dir = base / root / agent / game / seed
          run_dir.mkdir(parents=True)
          (run_dir / 'final_eval.json').write_text(json.dumps({
              'agent': agent, 'game': game, 'seed': int(seed),
              'env_steps': 100_000, 'num_episodes': len(returns),
              'returns': returns, 'mean_return': float(np.mean(returns)),
              'human_normalized_mean': None}))
          _write_logs(str(run_dir), returns)
  logs_only = base / 'root2' / 'agent_b' / 'pong' / '2'
  logs_only.mkdir()
  _write_logs(str(logs_only), LOGS_ONLY_RETURNS, with_env_steps=False)
  (logs_only / 'config.gin').write_text(
      f'Runner.training_steps = {LOGS_ONLY_TRAINING_STEPS}\n')
  empty = base / 'root1' / 'agent_a' / 'Breakout' / '7'
  empty.mkdir()
  return {'base': base, 'logs_only': str(logs_only), 'empty': str(empty)}


@pytest.fixture(scope='module')
def report(tree):
  out = tree['base'] / 'report'
  result = subprocess.run(
      [sys.executable, '-m', 'bbf_dopamine.analyze',
       str(tree['base'] / 'root1'), str(tree['base'] / 'root2'),
       '--out', str(out), '--reps', '50'],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def test_every_output_exists_and_is_well_formed(report):
  for name in ('per_game.csv', 'aggregates.csv',
               'probability_of_improvement.csv'):
    assert len(pd.read_csv(report / name)) > 0, name
  for name in ('per_game.md', 'aggregates.md',
               'probability_of_improvement.md', 'report.md'):
    text = (report / name).read_text()
    assert text.startswith('# ') and '|---|' in text, name
  for name in analyze.PLOTS:
    data = (report / name).read_bytes()
    assert data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) > 5000, name


def test_per_game_numbers_equal_hand_means(report, tree):
  per_game = pd.read_csv(report / 'per_game.csv')
  expected = {}
  for agents in FINAL_RETURNS.values():
    for agent, games in agents.items():
      for game, seeds in games.items():
        expected[agent, scores.canonical_game(game)] = [
            np.mean(r) for r in seeds.values()]
  expected['agent_b', 'Pong'].append(np.mean(LOGS_ONLY_RETURNS))
  for (agent, game), run_means in expected.items():
    row = per_game[(per_game.agent == agent) & (per_game.game == game)]
    assert len(row) == 1, (agent, game)
    row = row.iloc[0]
    assert row.runs == len(run_means)
    assert row.mean_score == pytest.approx(np.mean(run_means))
    assert row.std_score == pytest.approx(np.std(run_means, ddof=1))
    assert row.human_normalized_mean == pytest.approx(
        scores.human_normalized(game, np.mean(run_means)))


def test_published_agents_only_on_user_games(report):
  per_game = pd.read_csv(report / 'per_game.csv')
  for name in ('RR8_BBF', 'RR2_BBF'):
    rows = per_game[per_game.agent == f'paper:{name}']
    assert sorted(rows.game) == ['Breakout', 'Pong']
    published = scores.published_bbf(name)
    for row in rows.itertuples():
      assert row.runs == len(published[row.game])
      assert row.mean_score == pytest.approx(np.mean(published[row.game]))
  header = (report / 'per_game.md').read_text().split('\n')[4]
  assert 'paper:RR8_BBF' in header and 'paper:RR2_BBF' in header
  aggregates = pd.read_csv(report / 'aggregates.csv')
  assert list(aggregates.agent) == ['agent_a', 'agent_b', 'paper:RR8_BBF',
                                    'paper:RR2_BBF']
  assert set(aggregates.num_games) == {2}
  # agent_b: 3 runs on Pong, 2 on Breakout -> first 2 of each.
  assert aggregates.set_index('agent').runs_per_game['agent_b'] == 2
  poi = pd.read_csv(report / 'probability_of_improvement.csv')
  assert len(poi) == 4 * 3


def test_report_lists_fallbacks_and_skipped_runs(report, tree):
  text = (report / 'report.md').read_text()
  assert (f"{tree['logs_only']}: no usable final_eval.json; final score = "
          'eval returns of logged iteration 1') in text
  assert f"WARNING: skipped {tree['empty']}" in text
  assert (f"{tree['logs_only']}: logs have no env_steps; curve x = "
          f'(iteration + 1) * {LOGS_ONLY_TRAINING_STEPS}') in text
  assert ('agent_b: runs per game range from 2 to 3; aggregates use the '
          'first 2 runs') in text
  assert 'restricted to the 2 games with user runs' in text
  for name in analyze.PLOTS:
    assert f'({name})' in text


def test_missing_game_and_common_games(tree, tmp_path):
  """agent_c has only Pong: an error naming it, or a note with the flag."""
  root3 = tmp_path / 'root3'
  run_dir = root3 / 'agent_c' / 'Pong' / '0'
  run_dir.mkdir(parents=True)
  (run_dir / 'final_eval.json').write_text(json.dumps({'returns': [1.0]}))
  roots = [str(tree['base'] / 'root1'), str(root3)]
  with pytest.raises(ValueError, match=r"'agent_c' has no runs on Breakout"):
    analyze.build_report(roots, str(tmp_path / 'out'), published=(), reps=20)
  result = analyze.build_report(roots, str(tmp_path / 'out'),
                                published=('RR8_BBF',), reps=20,
                                common_games=True)
  assert set(result['aggregates'].num_games) == {1}
  assert any('dropped Breakout' in n and 'agent_c' in n
             for n in result['notes'])
  # The per-game table still shows every game that was run.
  assert len(result['per_game'][result['per_game'].agent == 'agent_a']) == 2
  assert all(os.path.getsize(f) > 0 for f in result['files'])


def test_learning_curves_read_from_logs(tree):
  notes = []
  run = run_files.load_run('agent_b', 'Pong', tree['logs_only'], notes)
  x, y = run.curves['train']
  np.testing.assert_array_equal(x, [5000.0, 10000.0])
  np.testing.assert_array_equal(y, [-19.0, -18.0])
  assert run.final_returns == LOGS_ONLY_RETURNS
  assert run.final_steps == 10000.0
  # One eval point against two train points: the train curve is plotted.
  assert run.curve_kind == 'train'
  assert run_files.load_run('agent_a', 'Breakout', tree['empty'], notes) is None


def test_bad_files_fall_back_with_notes(tmp_path):
  """Corrupt final_eval.json -> logs; truncated newest log -> older log."""
  run_dir = tmp_path / 'agent' / 'Pong' / '0'
  _write_logs(str(run_dir), [4.0, 8.0])
  (run_dir / 'final_eval.json').write_text('{"returns": [1.0, ')  # Cut off.
  # Newest log cut off mid-write, as by a killed run.
  (run_dir / 'logs' / 'log_2').write_bytes(
      (run_dir / 'logs' / 'log_1').read_bytes()[:20])
  notes = []
  run = run_files.load_run('agent', 'Pong', str(run_dir), notes)
  assert run.final_returns == [4.0, 8.0]
  assert run.source == 'logs (iteration 1)'
  joined = '\n'.join(notes)
  assert 'final_eval.json is unreadable' in joined
  assert 'log_2 is unreadable' in joined and 'used log_1' in joined


def test_eval_curve_when_every_iteration_evaluates(tmp_path):
  run_dir = tmp_path / 'Pong' / '0'
  (run_dir / 'logs').mkdir(parents=True)
  logs = {f'iteration_{i}': {
      'env_steps': np.array([1000 * (i + 1)]),  # Arrays work like lists.
      'train_episode_returns': [0.0],
      'eval_episode_returns': np.array([float(i), float(i) + 2.0])}
          for i in range(3)}
  with open(run_dir / 'logs' / 'log_2', 'wb') as f:
    pickle.dump(logs, f)
  notes = []
  run = run_files.load_run('agent', 'Pong', str(run_dir), notes)
  assert run.curve_kind == 'eval'
  x, y = run.curves['eval']
  np.testing.assert_array_equal(x, [1000.0, 2000.0, 3000.0])
  np.testing.assert_array_equal(y, [1.0, 2.0, 3.0])
  assert run.final_returns == [2.0, 4.0] and run.final_steps == 3000.0


def test_markdown_table_marks_missing_values():
  table = pd.DataFrame({'agent': ['a'], 'std': [float('nan')], 'x': [1.23456]})
  assert aggregate.markdown_table(table).splitlines() == [
      '| agent | std | x |', '|---|---|---|', '| a | n/a | 1.235 |']
