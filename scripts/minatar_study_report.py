# coding=utf-8
r"""Builds the committed MinAtar study report from the study's runs.

  python scripts/minatar_study_report.py --runs results/minatar/runs \
      --out results/minatar
  python scripts/minatar_study_report.py \
      --variants_runs VARIANT_RUNS --out results/minatar
  python scripts/minatar_study_report.py \
      --games_runs GAMES_RUNS --out results/minatar

Writes, under --out:
  * report/: the ordinary comparison report of the runs
    (`python -m bbf_dopamine.analyze`): per-game table, IQM / mean / median /
    optimality gap with 95% stratified-bootstrap intervals, probability of
    improvement, learning curves, final scores and the plasticity
    diagnostics (plasticity.png / .csv);
  * ablations.md / ablations.csv: each BBF ablation's IQM and its change
    from BBF on MinAtar beside the same ablation's change in the paper's
    Atari 100k results (the official per-seed scores shipped in
    bbf_dopamine/data/published/, replay ratio 8 and 2), with ranks;
  * resets_plasticity.png: dormant fraction, srank, churn and parameter norm
    of BBF with and without resets (and ReDo, when run) on one figure;
  * runs/<config>/<game>/<seed>/: the small files of every run
    (final_eval.json, config.gin, run_info.json) copied from --runs, so the
    numbers can be re-derived without the checkpoints.
With --variants_runs (BBF's successors' runs; BBF's own may be its small
files from runs/, which give its final scores but no curves), the same
comparison report, with the variants' learning and plasticity curves, goes
to variants/report/ and their small files to variants/runs/.
With --games_runs (BBF, DQN and Rainbow on every MinAtar game; Breakout's
runs may be the small files of runs/), the same report goes to
games/report/ and the small files to games/runs/.
"""

import argparse
import os
import shutil
import sys

from absl import logging
import numpy as np
import pandas as pd

from bbf_dopamine import aggregate
from bbf_dopamine import analyze
from bbf_dopamine import plasticity_report
from bbf_dopamine import scores

# MinAtar config (gin file stem) -> the paper's name of the ablation.
ABLATIONS = {
    'bbf': 'BBF',
    'bbf_no_resets': 'BBF-Resets',
    'bbf_no_spr': 'BBF-SPR',
    'bbf_no_annealing': 'BBF-Annealing',
    'bbf_no_wd': 'BBF-WD',
    'bbf_n10': 'BBF+n=10',
    'bbf_gamma099': 'BBF+gamma=0.99',
}
KEPT_FILES = ('final_eval.json', 'config.gin', 'run_info.json')
# The figure of the README: what resets (and their alternatives) do.
RESET_FIGURE = 'resets_plasticity.png'
RESET_AGENTS = ('bbf', 'bbf_no_resets', 'bbf_redo', 'bbf_redo_no_resets')
RESET_TAGS = plasticity_report.PLOTTED[:4]


def published_iqms(prefix: str, reps: int, seed: int) -> pd.DataFrame:
  """IQM [95% CI] of the paper's BBF and ablations over the 26 games."""
  per_game = {}
  for name in ABLATIONS.values():
    published = scores.published_bbf(f'{prefix}_{name}')
    per_game[name] = {g: list(np.atleast_1d(scores.human_normalized(g, v)))
                      for g, v in published.items()}
  matrices = aggregate.score_matrices(per_game)
  return aggregate.aggregate_table(matrices.scores, reps=reps,
                                   seed=seed).set_index('agent')


def ablation_table(minatar: pd.DataFrame, reps: int, seed: int):
  """Rows: ablations; MinAtar IQM and change from BBF beside Atari's."""
  atari = {p: published_iqms(p, reps, seed) for p in ('RR8', 'RR2')}
  rows = []
  for config, name in ABLATIONS.items():
    if config not in minatar.index:
      continue
    row = {'ablation': name, 'config': config}
    for label, table, key in (('minatar', minatar, config),
                              ('atari_rr8', atari['RR8'], name),
                              ('atari_rr2', atari['RR2'], name)):
      base = table.loc['bbf' if label == 'minatar' else 'BBF', 'iqm']
      row[f'{label}_iqm'] = table.loc[key, 'iqm']
      row[f'{label}_low'] = table.loc[key, 'iqm_low']
      row[f'{label}_high'] = table.loc[key, 'iqm_high']
      row[f'{label}_change'] = table.loc[key, 'iqm'] - base
    rows.append(row)
  df = pd.DataFrame(rows)
  ablated = df['config'] != 'bbf'
  for label in ('minatar', 'atari_rr8', 'atari_rr2'):
    # Rank among the ablations; 1: the one that hurts most. BBF: 0.
    df[f'{label}_rank'] = 0
    df.loc[ablated, f'{label}_rank'] = df.loc[ablated, f'{label}_change'].rank(
        method='min').astype(int)
  return df


def ablation_markdown(df: pd.DataFrame) -> str:
  cell = lambda r, l: (f'{r[f"{l}_iqm"]:.3f} [{r[f"{l}_low"]:.3f}, '
                       f'{r[f"{l}_high"]:.3f}]')
  change = lambda r, l: (f'{r[f"{l}_change"]:+.3f} ({r[f"{l}_rank"]})'
                         if r[f'{l}_rank'] else '')
  lines = ['| ablation | MinAtar IQM [95% CI] | change (rank) | '
           'Atari RR8 IQM [95% CI] | change (rank) | Atari RR2 IQM | '
           'change (rank) |', '|---|---|---|---|---|---|---|']
  for r in df.to_dict('records'):
    lines.append(f'| {r["ablation"]} | {cell(r, "minatar")} | '
                 f'{change(r, "minatar")} | {cell(r, "atari_rr8")} | '
                 f'{change(r, "atari_rr8")} | {r["atari_rr2_iqm"]:.3f} | '
                 f'{change(r, "atari_rr2")} |')
  return '\n'.join(lines) + '\n'


def plot_resets(runs: str, out: str) -> None:
  data = {}
  for agent in RESET_AGENTS:
    agent_dir = os.path.join(runs, agent)
    if not os.path.isdir(agent_dir):
      continue
    for game in sorted(os.listdir(agent_dir)):
      for seed in sorted(os.listdir(os.path.join(agent_dir, game))):
        series = plasticity_report.read_run(
            os.path.join(agent_dir, game, seed))
        if series:
          data.setdefault((agent, game), {})[seed] = series
  colors = analyze._colors(list(RESET_AGENTS))  # pylint: disable=protected-access
  plasticity_report.plot(data, colors, os.path.join(out, RESET_FIGURE),
                         RESET_TAGS)


def copy_small_files(runs: str, out: str) -> int:
  copied = 0
  for dirpath, _, filenames in os.walk(runs):
    if 'checkpoints' in dirpath.split(os.sep):
      continue
    for name in filenames:
      if name in KEPT_FILES:
        target = os.path.join(out, os.path.relpath(dirpath, runs))
        os.makedirs(target, exist_ok=True)
        shutil.copy2(os.path.join(dirpath, name), target)
        copied += 1
  return copied


def ablation_report(runs: str, out: str, reps: int, seed: int) -> None:
  result = analyze.build_report([runs], os.path.join(out, 'report'),
                                reps=reps, seed=seed)
  minatar = result['aggregates'].set_index('agent')
  df = ablation_table(minatar, reps, seed)
  df.to_csv(os.path.join(out, 'ablations.csv'), index=False)
  text = ('IQM of the final score with 95% stratified-bootstrap intervals '
          f'({reps} samples, seed {seed}). MinAtar: random-'
          'normalised, this study; Atari: human-normalised, the paper\'s '
          'official per-seed results (26 games, 5 to 10 seeds each). '
          'Change: IQM minus BBF\'s IQM in the same column; rank among the '
          'six ablations, 1 = the largest drop.\n\n' + ablation_markdown(df))
  with open(os.path.join(out, 'ablations.md'), 'w') as f:
    f.write('# BBF ablations: MinAtar (this study) vs the paper\'s Atari 100k'
            '\n\n' + text)
  _print(result, os.path.join(out, 'report'))
  print(text)


def side_report(runs: str, out: str, reps: int, seed: int) -> None:
  """The comparison report of `runs` in out/report, small files in out/runs."""
  result = analyze.build_report([runs], os.path.join(out, 'report'),
                                reps=reps, seed=seed)
  _print(result, os.path.join(out, 'report'))
  copied = copy_small_files(runs, os.path.join(out, 'runs'))
  print(f'{copied} run files copied')


def _print(result, report_dir):
  print(result['aggregates'][['agent', 'iqm', 'iqm_low', 'iqm_high',
                               'mean']].to_string(index=False))
  for note in result['notes']:
    print('note:', note)
  print(f'report: {os.path.join(report_dir, "report.md")}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', help='the ablation study\'s runs')
  parser.add_argument('--variants_runs', help='the variants\' runs')
  parser.add_argument('--games_runs', help='the five games\' runs')
  parser.add_argument('--out', required=True)
  parser.add_argument('--reps', type=int, default=2000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if not (args.runs or args.variants_runs or args.games_runs):
    parser.error('give --runs, --variants_runs, --games_runs or several')
  logging.set_verbosity(logging.WARNING)  # rliable logs every bootstrap.
  if args.runs:
    ablation_report(args.runs, args.out, args.reps, args.seed)
    copied = copy_small_files(args.runs, os.path.join(args.out, 'runs'))
    print(f'{copied} run files copied')
  for runs, subdir in ((args.variants_runs, 'variants'),
                       (args.games_runs, 'games')):
    if runs:
      side_report(runs, os.path.join(args.out, subdir), args.reps, args.seed)
  if args.runs:
    plot_resets(args.runs, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
