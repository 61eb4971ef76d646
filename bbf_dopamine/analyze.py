# coding=utf-8
r"""Comparison report for Atari 100k or MinAtar results: tables, plots.

  python -m bbf_dopamine.analyze runs/ more_runs/ --out report/ \
      [--published RR8_BBF,RR2_BBF] [--reps 2000] [--common_games] [--seed 0]

Each positional argument is a results root laid out `<root>/<agent>/<Game>/
<seed>/` (roots merge; an agent found in several roots is one agent), where
<Game> is an Atari 100k game (scores human-normalised) or a MinAtar game
`minatar-<game>` (scores random-normalised, see scores.py); one report covers
one domain. A run
directory holds our runner's `final_eval.json` and Dopamine's `logs/log_<K>`
pickles. The published BBF scores (`scores.published_names()`) or peer scores
(`scores.peer_names()`) named by --published join as agents `paper:<name>`,
restricted to the games the user ran.

Writes per_game.{csv,md}, aggregates.{csv,md},
probability_of_improvement.{csv,md}, report.md and four PNG plots, plus the
plasticity diagnostics (plasticity.{csv,png}, plasticity_report.py) of the
runs that logged them. Every run
that is skipped or read from a fallback is listed in report.md.

The logs are Python pickles, which can run code when loaded: only analyse
results you trust.
"""

import math
import os
import sys
from typing import Dict, List, Sequence

from absl import app
from absl import flags
from absl import logging
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from bbf_dopamine import aggregate
from bbf_dopamine import plasticity_report
from bbf_dopamine import run_files
from bbf_dopamine import scores

PAPER_PREFIX = 'paper:'
PLOTS = ('aggregate_intervals.png', 'performance_profiles.png',
         'learning_curves.png', 'final_scores.png')


def _per_game_row(agent: str, game: str, values: Sequence[float],
                  source: str) -> dict:
  values = np.asarray(values, np.float64)  # (num_runs,)
  mean = float(np.mean(values))
  # Sample std across seeds; undefined (blank / n/a) for one run.
  std = float(np.std(values, ddof=1)) if len(values) > 1 else float('nan')
  column = ('random' if scores.domain(game) == 'minatar' else
            'human') + '_normalized_mean'
  return {'agent': agent, 'game': game, 'runs': len(values),
          'mean_score': mean, 'std_score': std,
          column: scores.normalized(game, mean), 'source': source}


def _wide_per_game(per_game: pd.DataFrame, agents: Sequence[str]) -> str:
  """Game rows, agent columns: 'mean ± std (normalised) [runs]'."""
  table = {}
  for row in per_game.to_dict('records'):
    std = '' if math.isnan(row['std_score']) else f' ± {row["std_score"]:.1f}'
    normalized = next(v for k, v in row.items()
                      if k.endswith('_normalized_mean'))
    table.setdefault(row['game'], {})[row['agent']] = (
        f'{row["mean_score"]:.1f}{std} ({normalized:.3f}) [{row["runs"]}]')
  wide = pd.DataFrame([{'game': g, **{a: cells.get(a, '') for a in agents}}
                       for g, cells in table.items()])
  return aggregate.markdown_table(wide)


def _colors(agents: Sequence[str]) -> Dict[str, tuple]:
  """One fixed colour per agent, shared by every plot."""
  cmap = colormaps['tab10' if len(agents) <= 10 else 'tab20']
  return {a: cmap(i % cmap.N) for i, a in enumerate(agents)}


def _save(fig: Figure, path: str) -> None:
  # Figure (not pyplot) renders PNGs with Agg: no display, no global state.
  fig.savefig(path, dpi=90, bbox_inches='tight')


def _game_grid(num_games: int, width: float = 3.2, height: float = 2.4):
  ncols = min(4, num_games)
  nrows = math.ceil(num_games / ncols)
  fig = Figure(figsize=(width * ncols, height * nrows), layout='constrained')
  axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
  for ax in axes[num_games:]:
    ax.set_visible(False)
  return fig, axes


def plot_learning_curves(runs: Sequence[run_files.Run], games: Sequence[str],
                         agents: Sequence[str], paper_means, colors,
                         path: str) -> None:
  """Per game: mean over seeds of each agent's curve, band = ± 1 std."""
  fig, axes = _game_grid(len(games))
  for ax, game in zip(axes, games):
    kinds = set()
    for agent in agents:
      mine = [r for r in runs if (r.agent, r.game) == (agent, game)]
      curves = [r for r in mine if r.curve_kind]
      # Eval returns if every seed prefers them, else train returns for all.
      kind = 'eval' if all(r.curve_kind == 'eval' for r in curves) else 'train'
      by_x: Dict[float, List[float]] = {}
      for r in curves:
        for x, y in zip(*r.curves.get(kind, ((), ()))):
          by_x.setdefault(float(x), []).append(float(y))
      for x in {r.final_steps for r in mine if r.final_steps}:
        finals = [r.score for r in mine
                  if r.final_returns and r.final_steps == x]
        ax.errorbar(x, np.mean(finals), yerr=np.std(finals), fmt='o',
                    color=colors[agent], ms=4, capsize=2)  # Final evals.
      if not by_x:
        continue
      xs = np.array(sorted(by_x))  # (num_points,)
      mean = np.array([np.mean(by_x[x]) for x in xs])
      std = np.array([np.std(by_x[x]) for x in xs])
      ax.plot(xs, mean, color=colors[agent])
      kinds.add(kind)
      ax.fill_between(xs, mean - std, mean + std, color=colors[agent],
                      alpha=0.2)
    for name, means in paper_means.items():
      if game in means:
        ax.axhline(means[game], color=colors[name], ls='--', lw=1)
    ax.set_title(game)
    ax.set_ylabel('/'.join(sorted(kinds)) + ' return', fontsize='small')
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(EngFormatter())  # 20 k, not 20000.
    if not ax.has_data():
      ax.text(0.5, 0.5, 'no logged returns', ha='center',
              transform=ax.transAxes)
  # One legend for the figure: games differ in which agents they show.
  handles = [Line2D([], [], color=colors[a], label=a) for a in agents]
  handles += [Line2D([], [], color=colors[a], ls='--', label=f'{a} (final)')
              for a in paper_means]
  fig.legend(handles=handles, loc='outside upper center',
             ncol=min(4, len(handles)), fontsize='small')
  fig.supxlabel('env steps; line: mean over seeds ± 1 std of the eval (else '
                'train) return; dot: final evaluation', fontsize='small')
  _save(fig, path)


def plot_final_scores(per_game_values, games, agents, colors,
                      path: str) -> None:
  """Per game: a bar at each agent's mean, a dot per seed."""
  fig, axes = _game_grid(len(games), width=0.4 * len(agents) + 1.6)
  jitter = np.random.RandomState(0)  # Fixed: the same picture every time.
  for ax, game in zip(axes, games):
    for i, agent in enumerate(agents):
      values = per_game_values.get(agent, {}).get(game)
      if not values:
        continue
      ax.bar(i, np.mean(values), color=colors[agent], alpha=0.5)
      ax.scatter(i + jitter.uniform(-0.25, 0.25, len(values)), values,
                 s=8, color=colors[agent], edgecolors='k', linewidths=0.3)
    ax.set_xticks([])
    ax.set_title(game)
  fig.legend(handles=[Patch(color=colors[a], label=a) for a in agents],
             loc='outside upper center', ncol=min(4, len(agents)),
             fontsize='small')
  fig.supylabel('final score (raw return); bar: mean, dot: one seed')
  _save(fig, path)


def _write_tables(out_dir, per_game, table, poi, agents, reps, seed,
                  score_name='human-normalised'):
  """Writes the CSV and markdown tables; returns {name: markdown body}."""
  per_game.to_csv(os.path.join(out_dir, 'per_game.csv'), index=False)
  table.to_csv(os.path.join(out_dir, 'aggregates.csv'), index=False)
  poi.to_csv(os.path.join(out_dir, 'probability_of_improvement.csv'),
             index=False)
  bodies = {
      'per_game': (
          f'Cell: mean raw score ± std across seeds ({score_name} mean) '
          '[runs]. `paper:` columns are the published scores, shown only '
          'for the games with user runs.\n\n' +
          _wide_per_game(per_game, agents)),
      'aggregates': (
          f'95% stratified-bootstrap intervals ({reps} samples, seed '
          f'{seed}); optimality gap: lower is better.\n\n' +
          aggregate.aggregates_markdown(table)),
      'probability_of_improvement': (
          'P(X > Y): the probability that a run of X beats a run of Y on a '
          'random game (ties count one half), with its 95% interval.\n\n' +
          aggregate.probability_markdown(poi)),
  }
  titles = {'per_game': 'Per-game final scores',
            'aggregates': f'Aggregate {score_name} scores',
            'probability_of_improvement': 'Probability of improvement'}
  for name, body in bodies.items():
    with open(os.path.join(out_dir, f'{name}.md'), 'w') as f:
      f.write(f'# {titles[name]}\n\n{body}')
  return bodies


def build_report(roots: Sequence[str], out_dir: str,
                 published: Sequence[str] = ('RR8_BBF', 'RR2_BBF'),
                 reps: int = 2000, seed: int = 0,
                 common_games: bool = False) -> dict:
  """Reads every run under `roots` and writes the report into `out_dir`.

  Args:
    roots: results roots laid out `<root>/<agent>/<Game>/<seed>/`.
    out_dir: created if needed.
    published: published BBF or peer score names to add as `paper:<name>`.
    reps: bootstrap samples for every interval.
    seed: fixes every bootstrap sample.
    common_games: aggregate over the games all agents share instead of
      raising when an agent lacks a game.

  Returns:
    {'per_game', 'aggregates', 'probability_of_improvement'}: DataFrames;
    'notes': list of str; 'files': paths written.

  Raises:
    ValueError: a root is not a directory; no usable run; an unknown
      published name; agents cover different games and not `common_games`.
  """
  notes: List[str] = []
  runs = run_files.collect_runs(roots, notes)
  scored = [r for r in runs if r.final_returns is not None]
  if not scored:
    raise ValueError(f'No usable run under {", ".join(roots)}.\n' +
                     '\n'.join(notes))
  references = {PAPER_PREFIX + n: scores.reference_agent_scores(n)
                for n in (p.removeprefix(PAPER_PREFIX) for p in published)}
  user_agents = sorted({r.agent for r in scored})
  agents = user_agents + list(references)
  order = {g: i for i, g in enumerate(scores.ATARI_100K_GAMES)}
  games = sorted({r.game for r in scored}, key=lambda g: (order.get(g, 0), g))
  domains = sorted({scores.domain(g) for g in games})
  if len(domains) > 1:
    raise ValueError('One report covers one domain; these runs mix Atari '
                     f'100k and MinAtar games: {", ".join(games)}.')
  domain = domains[0]
  score_name = scores.normalization_name(domain)
  if domain == 'minatar' and references:
    notes.append(f'Published scores ({", ".join(references)}) are Atari '
                 '100k scores; not shown for MinAtar games.')
    references = {}
    agents = list(user_agents)

  # agent -> game -> raw final scores, one per run (or published seed).
  raw: Dict[str, Dict[str, List[float]]] = {}
  for r in scored:
    raw.setdefault(r.agent, {}).setdefault(r.game, []).append(r.score)
  for name, per_game in references.items():
    raw[name] = {g: per_game[g] for g in games}
  if references:
    notes.append(
        f'Published agents ({", ".join(references)}) are restricted to the '
        f'{len(games)} games with user runs: {", ".join(games)}.')
  per_game = pd.DataFrame([
      _per_game_row(a, g, raw[a][g], 'paper' if a in references else 'runs')
      for a in agents for g in games if raw[a].get(g)])
  matrices = aggregate.score_matrices(
      {a: {g: list(np.atleast_1d(scores.normalized(g, v)))
           for g, v in raw[a].items()} for a in agents},
      common_games=common_games)
  notes += matrices.notes
  table = aggregate.aggregate_table(matrices.scores, reps=reps, seed=seed)
  poi = aggregate.probability_of_improvement(matrices.scores, reps=reps,
                                             seed=seed)

  os.makedirs(out_dir, exist_ok=True)
  out = lambda name: os.path.join(out_dir, name)
  md = _write_tables(out_dir, per_game, table, poi, agents, reps, seed,
                     score_name)
  colors = _colors(agents)
  label = score_name.capitalize() + ' score'
  _save(aggregate.plot_intervals(table, colors, label), out(PLOTS[0]))
  _save(aggregate.plot_profiles(matrices.scores, colors, reps=reps,
                                seed=seed, score_name=label), out(PLOTS[1]))
  paper_means = {a: {g: float(np.mean(v)) for g, v in raw[a].items()}
                 for a in references}
  plot_learning_curves(runs, games, user_agents, paper_means, colors,
                       out(PLOTS[2]))
  plot_final_scores(raw, games, agents, colors, out(PLOTS[3]))
  plasticity_md, plasticity_files = plasticity_report.build_section(
      [(r.agent, r.game, r.seed, r.path) for r in runs], colors, out_dir)

  sources = [f'| {a} | {g} | {len(rs)} | '
             f'{", ".join(sorted({r.source for r in rs}))} |'
             for a in user_agents for g in games
             if (rs := [r for r in scored if (r.agent, r.game) == (a, g)])]
  report = '\n'.join([
      f'# {"MinAtar" if domain == "minatar" else "Atari 100k"} comparison '
      'report', '',
      f'Results roots: {", ".join(f"`{r}`" for r in roots)}. '
      f'Published scores: {", ".join(references) or "none"}.', '',
      f'Normalisation: {scores.NORMALIZATION_TEXT[domain]}', '',
      '## Notes', '', *([f'- {n}' for n in notes] or ['- none']), '',
      '## Runs', '', '| agent | game | runs | final score from |',
      '|---|---|---|---|', *sources, '',
      '## Aggregates', '', md['aggregates'],
      '![aggregate intervals](aggregate_intervals.png)', '',
      '![performance profiles](performance_profiles.png)', '',
      '## Probability of improvement', '', md['probability_of_improvement'],
      '## Per game', '', md['per_game'],
      '![final scores](final_scores.png)', '',
      '![learning curves](learning_curves.png)', '',
      'Tables: [per_game.csv](per_game.csv), [aggregates.csv]'
      '(aggregates.csv), [probability_of_improvement.csv]'
      '(probability_of_improvement.csv).', '', *plasticity_md])
  with open(out('report.md'), 'w') as f:
    f.write(report)
  files = [out(f'{name}.{ext}') for name in md for ext in ('csv', 'md')]
  files += [out(p) for p in PLOTS] + plasticity_files + [out('report.md')]
  return {'per_game': per_game, 'aggregates': table,
          'probability_of_improvement': poi, 'notes': notes, 'files': files}


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module next
  # to other absl programs cannot clash over flag names such as --seed.
  flags.DEFINE_string('out', None, 'Report directory (created if needed).')
  flags.DEFINE_list('published', ['RR8_BBF', 'RR2_BBF'],
                    'Published BBF score files (scores.published_names()) or '
                    'peers (SPR, DrQ_eps, EfficientZero, IRIS) to compare '
                    'with, as agents paper:<name>; empty for none.')
  flags.DEFINE_integer('reps', 2000, 'Bootstrap samples per interval.')
  flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap samples.')
  flags.DEFINE_bool('common_games', False,
                    'Aggregate over the games every agent has, listing the '
                    'dropped ones, instead of failing.')
  flags.mark_flag_as_required('out')


def main(argv: Sequence[str]) -> None:
  if not FLAGS['verbosity'].present:
    # rliable logs a line per bootstrap; keep the console to the results.
    logging.set_verbosity(logging.WARNING)
  roots = argv[1:]
  if not roots:
    raise app.UsageError('Give at least one results directory.')
  try:
    result = build_report(roots, FLAGS.out, published=FLAGS.published,
                          reps=FLAGS.reps, seed=FLAGS.seed,
                          common_games=FLAGS.common_games)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(result['aggregates'].to_string(index=False))
  for note in result['notes']:
    print('note:', note)
  print('report:', os.path.join(FLAGS.out, 'report.md'))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
