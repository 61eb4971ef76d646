# coding=utf-8
"""Plasticity curves of a results root: dormancy, srank, churn and resets.

The agent logs its diagnostics (`plasticity.py`) as TensorBoard scalars under
`Plasticity/` in each run's `metrics/tensorboard/`, on the gradient-step axis,
with one measurement right before and one right after every reset at the
same step and `Plasticity/Reset` marking the reset. This module reads them
back (every event file of a run, so a resumed run keeps its history: the
pickle collector starts a new file after a resume) and draws, per diagnostic,
each agent's mean over seeds with a band of +/- 1 std, and a dotted vertical
line at each reset. The before / after pair of a reset step is kept as two
points in logged order, so a reset shows as a vertical jump.
"""

import csv
import math
import os
from typing import Dict, List, Mapping, Sequence, Tuple

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter
from matplotlib.ticker import MaxNLocator
import numpy as np

from bbf_dopamine import diagnostics

PREFIX = 'Plasticity/'
RESET_TAG = 'Plasticity/Reset'
# Plotted, in this order, when logged: (tag, axis label).
PLOTTED = (
    ('Plasticity/DormantFraction/all',
     f'dormant fraction (tau = {diagnostics.DEFAULT_TAU:g})'),
    ('Plasticity/SRank/penultimate', 'srank of penultimate features'),
    ('Plasticity/PolicyChurn', 'policy churn'),
    ('Plasticity/ParamNorm/total', 'parameter norm'),
    ('Plasticity/FeatureNorm', 'feature norm'),
    ('Plasticity/QMean', 'mean Q on probe states'),
    ('Plasticity/Overestimation', 'Q - discounted MC return'),
    ('Plasticity/GradNorm/total', 'gradient norm'),
)

# (step, occurrence at that step) -> value; a run's series of one tag.
Series = Dict[Tuple[int, int], float]


def read_run(run_dir: str, prefix: str = PREFIX) -> Dict[str, Series]:
  """{tag: series} of the `prefix` scalars in run_dir/metrics/tensorboard.

  Returns {} if the run has no TensorBoard events.
  """
  log_dir = os.path.join(run_dir, 'metrics', 'tensorboard')
  if not os.path.isdir(log_dir) or not os.listdir(log_dir):
    return {}
  # Imported here: it pulls in TensorFlow when installed (seconds).
  from tensorboard.backend.event_processing import event_accumulator as ea  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  accumulator = ea.EventAccumulator(
      log_dir, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
  accumulator.Reload()
  tags = accumulator.Tags()
  series: Dict[str, Series] = {}
  # TF2 summaries are tensors; TF1-style ones scalars.
  for kind, events_of, value_of in (
      ('tensors', accumulator.Tensors,
       lambda e: float(tensor_util.make_ndarray(e.tensor_proto))),
      ('scalars', accumulator.Scalars, lambda e: float(e.value))):
    for tag in tags.get(kind, []):
      if not tag.startswith(prefix):
        continue
      points = series.setdefault(tag, {})
      for event in events_of(tag):  # In logged order.
        occurrence = sum(1 for s, _ in points if s == event.step)
        points[(int(event.step), occurrence)] = value_of(event)
  return series


def mean_curve(runs: Sequence[Series]) -> Tuple[np.ndarray, ...]:
  """(x, mean, std, count) over runs at each (step, occurrence) they share.

  x is the step, shape (num_points,); a reset step appears twice (before,
  after).
  """
  keys = sorted(set().union(*[set(r) for r in runs]))
  x, mean, std, count = [], [], [], []
  for key in keys:
    values = [r[key] for r in runs if key in r and math.isfinite(r[key])]
    if not values:
      continue
    x.append(key[0])
    mean.append(np.mean(values))
    std.append(np.std(values))
    count.append(len(values))
  return tuple(np.asarray(a, np.float64) for a in (x, mean, std, count))


def reset_steps(runs: Sequence[Mapping[str, Series]]) -> List[int]:
  """Gradient steps at which any of the runs reset."""
  return sorted({s for r in runs for s, _ in r.get(RESET_TAG, {})})


def write_csv(data: Mapping[str, Mapping[str, Mapping[str, Series]]],
              path: str) -> None:
  """Long table: agent, game, seed, tag, step, occurrence, value."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['agent', 'game', 'seed', 'tag', 'gradient_step',
                     'occurrence', 'value'])
    for key in sorted(data):
      agent, game = key
      for seed in sorted(data[key]):
        for tag in sorted(data[key][seed]):
          for (step, occ), value in sorted(data[key][seed][tag].items()):
            writer.writerow([agent, game, seed, tag, step, occ,
                             f'{value:.6g}'])


def plot(data: Mapping[Tuple[str, str], Mapping[str, Mapping[str, Series]]],
         colors: Mapping[str, tuple], path: str,
         tags: Sequence[Tuple[str, str]] = PLOTTED) -> List[str]:
  """One panel per (game, diagnostic): each agent's mean over seeds.

  Args:
    data: (agent, game) -> seed -> tag -> series.
    colors: agent -> colour.
    path: the PNG written.
    tags: (tag, label) pairs, plotted where some run logged them.

  Returns:
    The tags plotted.
  """
  games = sorted({g for _, g in data})
  present = [(t, l) for t, l in tags
             if any(t in s for seeds in data.values() for s in seeds.values())]
  if not present:
    return []
  ncols = min(4, len(present))
  nrows = math.ceil(len(present) / ncols) * len(games)
  fig = Figure(figsize=(3.4 * ncols, 2.5 * nrows), layout='constrained')
  axes = fig.subplots(nrows, ncols, squeeze=False)
  agents = sorted({a for a, _ in data})
  rows_per_game = math.ceil(len(present) / ncols)
  for g, game in enumerate(games):
    panels = axes[g * rows_per_game:(g + 1) * rows_per_game].ravel()
    for ax in panels[len(present):]:
      ax.set_visible(False)
    for ax, (tag, label) in zip(panels, present):
      for agent in agents:
        seeds = data.get((agent, game), {})
        runs = [s[tag] for s in seeds.values() if tag in s]
        if not runs:
          continue
        x, mean, std, _ = mean_curve(runs)
        ax.plot(x, mean, color=colors[agent], lw=1)
        ax.fill_between(x, mean - std, mean + std, color=colors[agent],
                        alpha=0.15, lw=0)
        for step in reset_steps(list(seeds.values())):
          ax.axvline(step, color=colors[agent], ls=':', lw=0.8, alpha=0.7)
      ax.set_title(f'{game}: {label}', fontsize='small')
      ax.xaxis.set_major_locator(MaxNLocator(4))
      ax.xaxis.set_major_formatter(EngFormatter())
  handles = [Line2D([], [], color=colors[a], label=a) for a in agents]
  handles.append(Line2D([], [], color='gray', ls=':', label='reset'))
  fig.legend(handles=handles, loc='outside upper center',
             ncol=min(5, len(handles)), fontsize='small')
  fig.supxlabel('gradient steps; line: mean over seeds, band: +/- 1 std; '
                'at a reset the measurements before and after it are both '
                'drawn', fontsize='small')
  fig.savefig(path, dpi=90, bbox_inches='tight')
  return [t for t, _ in present]


def summary_rows(data, tag: str, window: int = 3) -> List[dict]:
  """Per (agent, game): the mean over seeds of `tag`'s last `window` points.

  The last measurements are the state the network ends in, which is what the
  comparison with and without resets is about.
  """
  rows = []
  for (agent, game), seeds in sorted(data.items()):
    finals = [np.mean([v for _, v in sorted(s[tag].items())[-window:]])
              for s in seeds.values() if s.get(tag)]
    if finals:
      rows.append({'agent': agent, 'game': game, 'tag': tag,
                   'final_mean': float(np.mean(finals)),
                   'final_std': float(np.std(finals)), 'runs': len(finals)})
  return rows


# Summarised in report.md: the end-of-training value of each.
SUMMARISED = ('Plasticity/DormantFraction/all', 'Plasticity/SRank/penultimate',
              'Plasticity/PolicyChurn', 'Plasticity/ParamNorm/total')
PNG, CSV = 'plasticity.png', 'plasticity.csv'


def build_section(runs: Sequence[Tuple[str, str, str, str]],
                  colors: Mapping[str, tuple],
                  out_dir: str) -> Tuple[List[str], List[str]]:
  """Reads the runs' diagnostics; writes PNG and CSV; report.md lines.

  Args:
    runs: (agent, game, seed, run directory) of every run.
    colors: agent -> colour (the report's).
    out_dir: where plasticity.png and plasticity.csv go.

  Returns:
    (markdown lines, files written); ([], []) if no run logged diagnostics.
  """
  data = {}
  for agent, game, seed, path in runs:
    series = read_run(path)
    if series:
      data.setdefault((agent, game), {})[seed] = series
  if not data:
    return [], []
  png, csv_path = os.path.join(out_dir, PNG), os.path.join(out_dir, CSV)
  write_csv(data, csv_path)
  plotted = plot(data, colors, png)
  lines = ['## Plasticity diagnostics', '',
           'Logged by the BBF agents (`Plasticity/` TensorBoard tags; '
           'Dopamine\'s agents log none) on a fixed probe batch from replay, '
           'on the gradient-step axis. End of training: mean over seeds of '
           'the last 3 measurements of each run (± std over seeds).', '',
           '| agent | game | ' + ' | '.join(
               t[len(PREFIX):] for t in SUMMARISED) + ' | resets |',
           '|---|---|' + '---|' * (len(SUMMARISED) + 1)]
  for (agent, game), seeds in sorted(data.items()):
    cells = []
    for tag in SUMMARISED:
      row = summary_rows({(agent, game): seeds}, tag)
      cells.append(f'{row[0]["final_mean"]:.3g} ± {row[0]["final_std"]:.2g}'
                   if row else '')
    resets = len(reset_steps(list(seeds.values())))
    lines.append(f'| {agent} | {game} | {" | ".join(cells)} | {resets} |')
  lines += ['', f'![plasticity diagnostics]({PNG})', '',
            f'Every measurement: [{CSV}]({CSV}) ({len(plotted)} diagnostics '
            'plotted).', '']
  return lines, [png, csv_path]
