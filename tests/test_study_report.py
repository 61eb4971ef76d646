# coding=utf-8
"""scripts/minatar_study_report.py: the ablation table against the paper's, and
the five-game report."""

import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

from bbf_dopamine import aggregate
from bbf_dopamine import scores

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       'scripts'))
import minatar_study_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_published_iqm_is_rliables_on_the_shipped_scores():
  table = minatar_study_report.published_iqms('RR8', reps=50, seed=0)
  assert set(table.index) == set(minatar_study_report.ABLATIONS.values())
  # The paper's headline: BBF at RR8 has IQM 1.03 over the 26 games.
  assert table.loc['BBF', 'iqm'] == pytest.approx(1.03, abs=0.01)
  # Independent check of one ablation's point estimate: scipy's 25% trimmed
  # mean over all (run, game) scores of the truncated matrix.
  published = scores.published_bbf('RR8_BBF-Resets')
  matrix = aggregate.score_matrices({'x': {
      g: list(scores.human_normalized(g, v)) for g, v in published.items()}
  }).scores['x']  # (runs, games)
  values = np.sort(matrix.ravel())
  cut = int(np.floor(0.25 * len(values)))
  assert table.loc['BBF-Resets', 'iqm'] == pytest.approx(
      values[cut:len(values) - cut].mean())


def test_ablation_changes_and_ranks_by_hand():
  iqm = {'bbf': 5.0, 'bbf_no_resets': 6.0, 'bbf_no_spr': 4.0,
         'bbf_no_annealing': 3.0, 'bbf_no_wd': 5.5, 'bbf_n10': 2.0,
         'bbf_gamma099': 4.5}
  minatar = pd.DataFrame([{'agent': a, 'iqm': v, 'iqm_low': v - 1,
                           'iqm_high': v + 1} for a, v in iqm.items()]
                         ).set_index('agent')
  df = minatar_study_report.ablation_table(minatar, reps=20, seed=0)
  df = df.set_index('config')
  for config, value in iqm.items():
    assert df.loc[config, 'minatar_change'] == pytest.approx(value - 5.0)
  # Largest drop first; BBF itself is not ranked.
  assert df['minatar_rank'].to_dict() == {
      'bbf': 0, 'bbf_n10': 1, 'bbf_no_annealing': 2, 'bbf_no_spr': 3,
      'bbf_gamma099': 4, 'bbf_no_wd': 5, 'bbf_no_resets': 6}
  markdown = minatar_study_report.ablation_markdown(df.reset_index())
  assert '| BBF+n=10 | 2.000 [1.000, 3.000] | -3.000 (1) |' in markdown


def test_games_report_normalises_each_game_by_its_own_random_score(tmp_path):
  # Two agents on two MinAtar games, two seeds each, final scores only (as
  # the Breakout runs' small files are).
  returns = {'a': {'breakout': [4.0, 6.0], 'asterix': [2.0, 3.0]},
             'b': {'breakout': [1.0, 0.5], 'asterix': [0.5, 1.5]}}
  runs = tmp_path / 'runs'
  for agent, games in returns.items():
    for game, values in games.items():
      for seed, value in enumerate(values):
        run_dir = runs / agent / f'minatar-{game}' / str(seed)
        run_dir.mkdir(parents=True)
        (run_dir / 'final_eval.json').write_text(json.dumps({
            'agent': agent, 'game': f'minatar-{game}', 'seed': seed,
            'env_steps': 10_000, 'num_episodes': 1, 'returns': [value],
            'mean_return': value, 'human_normalized_mean': None}))
  out = tmp_path / 'out'
  assert minatar_study_report.main(['--games_runs', str(runs), '--out',
                                    str(out), '--reps', '20']) == 0
  table = pd.read_csv(out / 'games' / 'report' / 'aggregates.csv')
  table = table.set_index('agent')
  # Random play on MinAtar 1.0.15 (bbf_dopamine/data/minatar_random.csv).
  random = {'breakout': (0.4950, 0.7330), 'asterix': (0.4865, 0.8522)}
  for agent, games in returns.items():
    normalised = np.sort([(v - random[g][0]) / random[g][1]
                          for g, values in games.items() for v in values])
    # 4 scores: the 25%-trimmed mean keeps the middle two; the mean all.
    assert table.loc[agent, 'iqm'] == pytest.approx(normalised[1:3].mean())
    assert table.loc[agent, 'mean'] == pytest.approx(normalised.mean())
  copied = sorted(p.relative_to(out / 'games' / 'runs').as_posix()
                  for p in (out / 'games' / 'runs').rglob('*.json'))
  assert copied == sorted(f'{a}/minatar-{g}/{s}/final_eval.json'
                          for a in returns for g in returns[a]
                          for s in range(2))
  assert not (out / 'ablations.md').exists()  # only the games' report
