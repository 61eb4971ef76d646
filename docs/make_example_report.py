# coding=utf-8
"""Draws docs/example_aggregate_intervals.png for the README.

The report's interval plot over all 26 Atari 100k games, from data shipped in
the package only (no runs needed): the official BBF results at replay ratio 8
and 2, two of the paper's ablations, and the SPR and DrQ(eps) runs published
with rliable.

  python docs/make_example_report.py
"""

import os

import numpy as np

from bbf_dopamine import aggregate
from bbf_dopamine import analyze
from bbf_dopamine import scores

AGENTS = ('RR8_BBF', 'RR2_BBF', 'RR8_BBF-Resets', 'RR8_BBF-SPR', 'SPR',
          'DrQ_eps')


def main():
  per_game = {
      name: {g: list(np.atleast_1d(scores.human_normalized(g, v)))
             for g, v in scores.reference_agent_scores(name).items()}
      for name in AGENTS}
  matrices = aggregate.score_matrices(per_game)
  table = aggregate.aggregate_table(matrices.scores, reps=2000, seed=0)
  figure = aggregate.plot_intervals(table, analyze._colors(list(AGENTS)))  # pylint: disable=protected-access
  path = os.path.join(os.path.dirname(__file__),
                      'example_aggregate_intervals.png')
  analyze._save(figure, path)  # pylint: disable=protected-access
  for note in matrices.notes:
    print('note:', note)
  print(table.to_string())
  print('wrote', path)


if __name__ == '__main__':
  main()
