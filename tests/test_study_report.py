# coding=utf-8
"""scripts/minatar_study_report.py: the ablation table against the paper's."""

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
