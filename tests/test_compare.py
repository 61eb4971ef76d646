# coding=utf-8
"""BBF and DER through Dopamine's train binary, then the comparison report.

The whole user path of the comparison at a tiny budget on real Pong: BBF
(gin_configs/bbf.gin) and DER (gin_configs/baselines/der.gin, Dopamine's
agent) each train 2 iterations of 100 agent steps and evaluate 2 episodes
into `<root>/<agent>/Pong/0/`, then `python -m bbf_dopamine.analyze` writes
the report. Its tables must hold the numbers in the runs' own files
(final_eval.json, Dopamine's logs) and the shipped published scores.
"""

import csv
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from bbf_dopamine import scores
from test_baselines import CHEAP as DER_CHEAP
from test_end_to_end import ROOT
from test_end_to_end import TINY

EVAL_EPISODES = 2
PLOTS = ('aggregate_intervals.png', 'performance_profiles.png',
         'learning_curves.png', 'final_scores.png')
TABLES = ('per_game.csv', 'per_game.md', 'aggregates.csv', 'aggregates.md',
          'probability_of_improvement.csv', 'probability_of_improvement.md',
          'report.md')


def _train(base_dir, gin_file, bindings):
  command = [sys.executable, '-m', 'dopamine.discrete_domains.train',
             f'--base_dir={base_dir}', f'--gin_files={gin_file}']
  command += [f'--gin_bindings={b}' for b in bindings]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  root = tmp_path_factory.mktemp('results')
  protocol = ['Atari100kRunner.num_iterations = 2',
              'Atari100kRunner.training_steps = 100',
              f'Atari100kRunner.num_eval_episodes = {EVAL_EPISODES}',
              'Atari100kRunner.intermediate_eval_episodes = 1',
              'Atari100kRunner.max_steps_per_episode = 50']
  _train(root / 'bbf' / 'Pong' / '0', 'gin_configs/bbf.gin',
         TINY + protocol)
  _train(root / 'der' / 'Pong' / '0', 'gin_configs/baselines/der.gin',
         DER_CHEAP + protocol)
  out = root.parent / 'report'
  result = subprocess.run(
      [sys.executable, '-m', 'bbf_dopamine.analyze', str(root),
       f'--out={out}', '--reps=50'], cwd=ROOT, capture_output=True,
      text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  return root, out


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_report_files(report):
  _, out = report
  for name in PLOTS:
    with open(out / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n', name
    assert os.path.getsize(out / name) > 5000, name
  for name in TABLES:
    assert os.path.getsize(out / name) > 0, name
  text = (out / 'report.md').read_text()
  for name in PLOTS:
    assert name in text


@pytest.mark.parametrize('agent', ['bbf', 'der'])
def test_table_numbers_come_from_the_runs(report, agent):
  root, out = report
  run = root / agent / 'Pong' / '0'
  final = json.loads((run / 'final_eval.json').read_text())
  logs = sorted(run.glob('logs/log_*'), key=lambda p: int(p.name[4:]))
  with open(logs[-1], 'rb') as f:
    last = pickle.load(f)['iteration_1']
  assert final['returns'] == last['eval_episode_returns']
  assert len(final['returns']) == EVAL_EPISODES
  assert final['env_steps'] == 200 == last['env_steps'][0]

  (row,) = [r for r in _rows(out / 'per_game.csv')
            if r['agent'] == agent and r['game'] == 'Pong']
  assert int(row['runs']) == 1
  assert float(row['mean_score']) == pytest.approx(np.mean(final['returns']))
  normalized = (np.mean(final['returns']) + 20.7) / (14.6 + 20.7)
  assert float(row['human_normalized_mean']) == pytest.approx(normalized)
  (aggregate,) = [r for r in _rows(out / 'aggregates.csv')
                  if r['agent'] == agent]
  # One game, one run: every location metric is that run's score.
  for metric in ('mean', 'median', 'iqm'):
    assert float(aggregate[metric]) == pytest.approx(normalized)
  assert float(aggregate['optimality_gap']) == pytest.approx(
      max(0.0, 1 - normalized))


def test_published_scores_beside_the_runs(report):
  _, out = report
  rows = {r['agent']: r for r in _rows(out / 'per_game.csv')}
  for name in ('RR8_BBF', 'RR2_BBF'):
    published = scores.published_bbf(name)['Pong']
    row = rows[f'paper:{name}']
    assert row['game'] == 'Pong'
    assert int(row['runs']) == len(published)
    assert float(row['mean_score']) == pytest.approx(np.mean(published))
  pairs = {(r['agent_x'], r['agent_y']) for r in
           _rows(out / 'probability_of_improvement.csv')}
  assert ('bbf', 'der') in pairs and ('der', 'paper:RR8_BBF') in pairs
