# coding=utf-8
"""Aggregate metrics over Atari games with stratified-bootstrap intervals.

Thin wrappers over rliable 1.2.0 (Agarwal et al., NeurIPS 2021, "Deep RL at
the Edge of the Statistical Precipice"): mean, median, interquartile mean
(IQM) and optimality gap of human-normalised scores, the probability of
improvement between two agents, and performance profiles (score
distributions), each with 95% stratified-bootstrap confidence intervals.

Also the report's views of these numbers: an rliable-style interval plot, a
performance-profile plot and markdown tables.

Input everywhere is `{agent: scores}` with `scores` of shape
(num_runs, num_games), the same games in the same column order for every
agent; `score_matrices` builds that from ragged per-game lists and records,
as notes, every run or game it had to leave out.

Two things about rliable 1.2.0 shape this module:
  * Its bootstrap draws indices from NumPy's *global* generator
    (`StratifiedBootstrap.update_indices` calls `np.random.choice`), so the
    `random_state` it accepts does not make the intervals reproducible (and
    makes `arch` warn that the argument is deprecated). Reproducibility here
    comes from seeding the global generator around each call and restoring it
    afterwards, with one seed per agent (or pair) derived from `seed` and the
    agent's name, so an agent's intervals do not depend on which other agents
    share the report.
  * `rliable.metrics.probability_of_improvement` runs one scipy Mann-Whitney
    test per game per bootstrap sample (about 7 ms a sample for 26 games:
    minutes for a report with 2000 samples and a dozen pairs).
    `_probability_of_improvement` computes the same statistic, the
    Mann-Whitney U / (n_x n_y) = P(X > Y) + P(X = Y) / 2, with one broadcast
    comparison; `tests/test_aggregate.py` checks the two agree.
"""

import contextlib
import dataclasses
import zlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from matplotlib.figure import Figure
import numpy as np
import pandas as pd
from rliable import library as rly_library
from rliable import metrics as rly_metrics
from rliable import plot_utils

# Column order of every (.., 4) metric array below.
METRIC_NAMES: Tuple[str, ...] = ('Mean', 'Median', 'IQM', 'Optimality Gap')
# Column-name stems of `aggregate_table`, one per metric.
METRIC_KEYS: Tuple[str, ...] = ('mean', 'median', 'iqm', 'optimality_gap')
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class ScoreMatrices:
  """Rectangular score matrices ready for rliable.

  Attributes:
    scores: agent -> array (num_runs, num_games); num_runs may differ between
      agents, the games (columns) may not.
    games: the column order, shared by all agents.
    notes: human-readable notes on every truncation or dropped game.
  """
  scores: Dict[str, np.ndarray]
  games: Tuple[str, ...]
  notes: Tuple[str, ...]


def score_matrices(per_game: Mapping[str, Mapping[str, Sequence[float]]],
                   common_games: bool = False) -> ScoreMatrices:
  """Builds one (num_runs, num_games) matrix per agent from ragged lists.

  rliable needs a rectangular matrix per agent, so an agent whose games have
  different numbers of runs contributes the first N runs of every game, N
  being its smallest count (a note says so).

  Args:
    per_game: agent -> game -> scores of that agent's runs on that game
      (normally human-normalised final scores, one per run).
    common_games: if an agent lacks a game that another agent has, keep only
      the games every agent has (and note the dropped ones) instead of
      raising.

  Returns:
    A `ScoreMatrices`; games are in first-seen order.

  Raises:
    ValueError: no agents; an agent misses games (naming the agent and the
      games) and `common_games` is False; no game is common to all agents;
      a score is not finite (naming agent and game).
  """
  if not per_game:
    raise ValueError('No agents to aggregate.')
  notes: List[str] = []
  # A game with an empty list counts as missing: it has no run to use.
  present = {agent: [g for g, s in games.items() if len(s)]
             for agent, games in per_game.items()}
  all_games: List[str] = []
  for games in present.values():
    all_games += [g for g in games if g not in all_games]
  missing = {agent: [g for g in all_games if g not in games]
             for agent, games in present.items()}
  missing = {agent: games for agent, games in missing.items() if games}
  if missing and not common_games:
    detail = '; '.join(f'agent {a!r} has no runs on {", ".join(g)}'
                       for a, g in missing.items())
    raise ValueError(
        f'Not every agent has every game: {detail}. Run the missing games, '
        'or restrict the comparison to the games all agents share '
        '(common_games=True / --common_games).')
  games = tuple(g for g in all_games
                if not any(g in m for m in missing.values()))
  if missing:
    if not games:
      raise ValueError('No game is common to all agents: ' + '; '.join(
          f'{a!r} misses {", ".join(g)}' for a, g in missing.items()))
    dropped = [g for g in all_games if g not in games]
    notes.append(
        f'Aggregates use only the {len(games)} games common to all agents; '
        f'dropped {", ".join(dropped)} (' + '; '.join(
            f'missing for {a}: {", ".join(g)}' for a, g in missing.items())
        + ').')

  matrices = {}
  for agent, agent_games in per_game.items():
    counts = {g: len(agent_games[g]) for g in games}
    n = min(counts.values())
    if max(counts.values()) > n:
      notes.append(
          f'{agent}: runs per game range from {n} to '
          f'{max(counts.values())}; aggregates use the first {n} runs of '
          'every game (rliable needs as many runs on every game).')
    if n == 1:
      notes.append(f'{agent}: one run per game, so its intervals show no '
                   'run-to-run variation.')
    matrix = np.array([[float(s) for s in agent_games[g][:n]] for g in games],
                      dtype=np.float64).T  # (num_runs, num_games)
    bad = [g for g, column in zip(games, matrix.T)
           if not np.all(np.isfinite(column))]
    if bad:
      raise ValueError(f'Agent {agent!r} has non-finite scores on '
                       f'{", ".join(bad)}.')
    matrices[agent] = matrix
  return ScoreMatrices(scores=matrices, games=games, notes=tuple(notes))


def _seed_for(seed: int, key: str) -> int:
  """A 32-bit seed for one agent or pair, fixed by (seed, key)."""
  sequence = np.random.SeedSequence([seed, zlib.crc32(key.encode())])
  return int(sequence.generate_state(1)[0])


@contextlib.contextmanager
def _seeded_global_rng(seed: int):
  """Seeds NumPy's global generator (which rliable 1.2.0 draws from)."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    # Leave the caller's global stream as it was.
    np.random.set_state(state)


def _all_metrics(scores: np.ndarray) -> np.ndarray:
  """(num_runs, num_games) -> (4,): mean, median, IQM, optimality gap."""
  return np.array([
      rly_metrics.aggregate_mean(scores),
      rly_metrics.aggregate_median(scores),
      rly_metrics.aggregate_iqm(scores),
      rly_metrics.aggregate_optimality_gap(scores, gamma=1),
  ])


def interval_estimates(
    scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """Point estimates and 95% bootstrap intervals of the four metrics.

  Args:
    scores: agent -> array (num_runs, num_games) of normalised scores.
    reps: bootstrap samples.
    seed: fixes the bootstrap samples.

  Returns:
    (point, interval): point[agent] has shape (4,), interval[agent] shape
    (2, 4) (row 0 lower, row 1 upper bounds), metrics in `METRIC_NAMES`
    order. Optimality gap uses gamma = 1 (lower is better).
  """
  point, interval = {}, {}
  for agent, matrix in scores.items():
    with _seeded_global_rng(_seed_for(seed, agent)):
      p, i = rly_library.get_interval_estimates(
          {agent: np.asarray(matrix, np.float64)}, _all_metrics, reps=reps,
          confidence_interval_size=CONFIDENCE)
    point[agent], interval[agent] = p[agent], i[agent]
  return point, interval


def aggregate_table(scores: Mapping[str, np.ndarray], reps: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
  """One row per agent: each metric with its [low, high] 95% interval.

  Columns: agent, then for k in METRIC_KEYS: k, k_low, k_high; then
  num_games and runs_per_game (the matrix shape used).
  """
  point, interval = interval_estimates(scores, reps=reps, seed=seed)
  rows = []
  for agent, matrix in scores.items():
    row = {'agent': agent}
    for j, key in enumerate(METRIC_KEYS):
      row[key] = point[agent][j]
      row[f'{key}_low'] = interval[agent][0, j]
      row[f'{key}_high'] = interval[agent][1, j]
    row['num_games'] = matrix.shape[1]
    row['runs_per_game'] = matrix.shape[0]
    rows.append(row)
  return pd.DataFrame(rows)


def _probability_of_improvement(scores_x: np.ndarray,
                                scores_y: np.ndarray) -> float:
  """P(X > Y) + P(X = Y) / 2 per game, averaged over games.

  Equals `rliable.metrics.probability_of_improvement` (Mann-Whitney U over
  n_x n_y, ties counted one half; identical columns give exactly 0.5 in both).

  Args:
    scores_x: (num_runs_x, num_games).
    scores_y: (num_runs_y, num_games).
  """
  x = scores_x[:, None, :]  # (num_runs_x, 1, num_games)
  y = scores_y[None, :, :]  # (1, num_runs_y, num_games)
  wins = (x > y) + 0.5 * (x == y)  # (num_runs_x, num_runs_y, num_games)
  return float(np.mean(np.mean(wins, axis=(0, 1))))


def probability_of_improvement(
    scores: Mapping[str, np.ndarray],
    pairs: Optional[Sequence[Tuple[str, str]]] = None, reps: int = 2000,
    seed: int = 0) -> pd.DataFrame:
  """P(X > Y) with a 95% interval for ordered pairs of agents.

  The two agents' runs are resampled independently, per game (rliable's
  `StratifiedIndependentBootstrap`), so they may have different run counts.

  Args:
    scores: agent -> array (num_runs, num_games), same games for all.
    pairs: ordered (x, y) pairs; default every ordered pair of distinct
      agents.
    reps: bootstrap samples.
    seed: fixes the bootstrap samples.

  Returns:
    DataFrame with columns agent_x, agent_y, probability, low, high.
  """
  if pairs is None:
    pairs = [(x, y) for x in scores for y in scores if x != y]
  rows = []
  for x, y in pairs:
    key = f'{x} > {y}'
    with _seeded_global_rng(_seed_for(seed, key)):
      point, interval = rly_library.get_interval_estimates(
          {key: [np.asarray(scores[x], np.float64),
                 np.asarray(scores[y], np.float64)]},
          _probability_of_improvement, reps=reps,
          confidence_interval_size=CONFIDENCE)
    low, high = np.ravel(interval[key])
    rows.append({'agent_x': x, 'agent_y': y,
                 'probability': float(point[key]),
                 'low': float(low), 'high': float(high)})
  return pd.DataFrame(rows,
                      columns=['agent_x', 'agent_y', 'probability', 'low',
                               'high'])


def default_taus(scores: Mapping[str, np.ndarray],
                 num: int = 81) -> np.ndarray:
  """Thresholds from 0 to a round number above 95% of all scores, shape (num,).

  Normalised Atari scores have a long right tail (a few games reach 10+
  human), so the axis stops where the profiles have mostly fallen.
  """
  pooled = np.concatenate([np.ravel(m) for m in scores.values()])
  top = max(1.0, float(np.ceil(np.percentile(pooled, 95))))
  return np.linspace(0.0, top, num)


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: Optional[np.ndarray] = None,
    reps: int = 2000, seed: int = 0
) -> Tuple[np.ndarray, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """Score distributions: the fraction of runs scoring above each tau.

  Args:
    scores: agent -> array (num_runs, num_games).
    taus: thresholds, shape (num_taus,); default `default_taus(scores)`.
    reps: bootstrap samples.
    seed: fixes the bootstrap samples.

  Returns:
    (taus, profiles, intervals): profiles[agent] has shape (num_taus,),
    intervals[agent] shape (2, num_taus).
  """
  taus = default_taus(scores) if taus is None else np.asarray(taus)
  profiles, intervals = {}, {}
  for agent, matrix in scores.items():
    with _seeded_global_rng(_seed_for(seed, 'profile:' + agent)):
      p, i = rly_library.create_performance_profile(
          {agent: np.asarray(matrix, np.float64)}, taus, reps=reps,
          confidence_interval_size=CONFIDENCE)
    profiles[agent], intervals[agent] = p[agent], i[agent]
  return taus, profiles, intervals


def plot_intervals(table: pd.DataFrame, colors: Mapping[str, tuple],
                   score_name: str = 'Human-normalised score') -> Figure:
  """rliable-style interval plot of `aggregate_table(...)`.

  One panel per metric, one bar per agent spanning its 95% interval, a tick
  at the point estimate. Drawn on a pyplot-free `Figure` (rliable's own
  `plot_interval_estimates` creates its figure through pyplot).
  """
  agents = list(table['agent'])
  fig = Figure(figsize=(3.4 * 4, 0.6 * len(agents) + 1.2),
               layout='constrained')
  for ax, name, key in zip(fig.subplots(1, 4), METRIC_NAMES, METRIC_KEYS):
    for y, row in enumerate(table.itertuples(index=False)):
      low, high = getattr(row, f'{key}_low'), getattr(row, f'{key}_high')
      ax.barh(y, high - low, left=low, height=0.6, alpha=0.75,
              color=colors[row.agent])
      ax.vlines(getattr(row, key), y - 0.3, y + 0.3, color='k', alpha=0.6)
    ax.set_yticks(range(len(agents)))
    ax.set_yticklabels(agents if key == 'mean' else [''] * len(agents))
    ax.invert_yaxis()  # First agent on top, in table order.
    ax.margins(x=0.08)
    ax.set_title(name)
    ax.grid(True, axis='x', alpha=0.25)
    for side in ('top', 'right', 'left'):
      ax.spines[side].set_visible(False)
  fig.supxlabel(f'{score_name} (95% stratified-bootstrap CI)')
  return fig


def plot_profiles(scores: Mapping[str, np.ndarray],
                  colors: Mapping[str, tuple], reps: int = 2000,
                  seed: int = 0,
                  score_name: str = 'Human-normalised score') -> Figure:
  """Performance profiles with 95% bands, via rliable's plotting helper."""
  taus, profiles, intervals = performance_profiles(scores, reps=reps,
                                                   seed=seed)
  fig = Figure(figsize=(7, 4.5), layout='constrained')
  plot_utils.plot_performance_profiles(
      profiles, taus, performance_profile_cis=intervals, ax=fig.subplots(),
      colors=colors, legend=True, legendsize='medium',
      xlabel=score_name + r' ($\tau$)',
      ylabel=r'Fraction of runs with score $> \tau$')
  return fig


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
  """A GitHub markdown table (pandas' to_markdown needs `tabulate`)."""
  def cell(v):
    if isinstance(v, (float, np.floating)):
      return 'n/a' if np.isnan(v) else f'{v:.{digits}f}'
    return str(v)
  lines = ['| ' + ' | '.join(map(str, df.columns)) + ' |',
           '|' + '---|' * len(df.columns)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |'
            for row in df.itertuples(index=False)]
  return '\n'.join(lines) + '\n'


def _with_interval(point: float, low: float, high: float) -> str:
  return f'{point:.3f} [{low:.3f}, {high:.3f}]'


def aggregates_markdown(table: pd.DataFrame) -> str:
  """`aggregate_table(...)` as markdown, one 'point [low, high]' per metric."""
  return markdown_table(pd.DataFrame({
      'agent': table['agent'],
      **{name: [_with_interval(*v) for v in zip(
          table[key], table[f'{key}_low'], table[f'{key}_high'])]
         for name, key in zip(METRIC_NAMES, METRIC_KEYS)},
      'games': table['num_games'], 'runs/game': table['runs_per_game']}))


def probability_markdown(poi: pd.DataFrame) -> str:
  """`probability_of_improvement(...)` as markdown."""
  return markdown_table(pd.DataFrame({
      'X': poi['agent_x'], 'Y': poi['agent_y'],
      'P(X > Y)': [_with_interval(*v) for v in zip(
          poi['probability'], poi['low'], poi['high'])]}))
