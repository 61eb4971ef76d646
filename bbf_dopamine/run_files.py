# coding=utf-8
"""Reads one results run directory: final_eval.json, Dopamine's log pickles.

A run directory (`<root>/<agent>/<Game>/<seed>/`) holds our runner's
`final_eval.json` (the final evaluation's episode returns), Dopamine's
`logs/log_<K>` pickles (every iteration's statistics, the learning curves)
and `config.gin`. Each reader tolerates what a killed or foreign run leaves
behind (a truncated newest log, no env_steps, no final_eval.json) and says
what it fell back to in `notes`, which the report lists.

The logs are Python pickles, which can run code when loaded: only read
results you trust.
"""

import dataclasses
import json
import math
import os
import pickle
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bbf_dopamine import scores

ATARI_100K_STEPS = 100_000


@dataclasses.dataclass
class Run:
  """One run directory, read."""
  agent: str
  game: str  # Canonical name.
  seed: str  # The directory name.
  path: str
  final_returns: Optional[List[float]]  # Final evaluation episode returns.
  source: str  # Where final_returns came from.
  final_steps: Optional[float] = None  # Env steps at the final evaluation.
  # 'eval' / 'train' -> (x, y): env steps and mean episode return, each of
  # shape (num_points,), over the logged iterations that had episodes.
  curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(
      default_factory=dict)
  curve_kind: str = ''  # The curve to plot: 'eval', 'train' or '' (none).

  @property
  def score(self) -> float:
    return float(np.mean(self.final_returns))


def _training_steps_from_gin(run_dir: str) -> Optional[int]:
  """`Runner.training_steps` (or `Atari100kRunner...`) from config.gin."""
  path = os.path.join(run_dir, 'config.gin')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    match = re.search(r'^\s*(?:[\w.]+\.)?\w*Runner\.training_steps\s*=\s*'
                      r'(\d[\d_]*)\s*$', f.read(), flags=re.MULTILINE)
  return int(match.group(1).replace('_', '')) if match else None


def _load_logs(run_dir: str, notes: List[str]) -> Optional[dict]:
  """The newest readable `logs/log_<K>` pickle (it holds every iteration)."""
  log_dir = os.path.join(run_dir, 'logs')
  if not os.path.isdir(log_dir):
    return None
  numbered = sorted((int(m.group(1)), name) for name in os.listdir(log_dir)
                    if (m := re.fullmatch(r'log_(\d+)', name)))
  for k, (_, name) in enumerate(reversed(numbered)):
    try:
      with open(os.path.join(log_dir, name), 'rb') as f:
        data = pickle.load(f)
      if not isinstance(data, dict):
        raise TypeError(f'a {type(data).__name__}, not a dict')
    except Exception as e:  # pylint: disable=broad-except
      # A run killed while writing leaves a truncated newest log; the one
      # before it is still complete.
      notes.append(f'{log_dir}/{name} is unreadable ({e!r}); '
                   'trying an older log.')
      continue
    if k:
      notes.append(f'{run_dir}: used {name}, not the newest log.')
    return data
  return None


def _episode_mean(stats: dict, phase: str) -> Optional[float]:
  """Mean `phase` ('eval' / 'train') episode return of one iteration, if any.

  Only the episode lists count: Dopamine's Runner and ours log an average
  return of 0.0 for an iteration in which no episode ended.
  """
  returns = _values(stats, f'{phase}_episode_returns')
  return float(np.mean(returns)) if returns else None


def _values(stats: dict, key: str) -> List[float]:
  """stats[key] as a list of floats ([] if absent; lists or arrays)."""
  return [float(v) for v in np.ravel(stats.get(key, []))]


def _read_final_eval(run: Run, notes: List[str]) -> None:
  """Fills run.final_returns / final_steps from final_eval.json, if usable."""
  path = os.path.join(run.path, 'final_eval.json')
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      final = json.load(f)
    returns = [float(r) for r in final.get('returns') or []]
    if not returns and final.get('mean_return') is not None:
      returns = [float(final['mean_return'])]
    if not returns or not all(map(math.isfinite, returns)):
      raise ValueError('no finite returns')
    steps = final.get('env_steps')
    steps = None if steps is None else float(steps)
  except Exception as e:  # pylint: disable=broad-except
    notes.append(f'{path} is unreadable ({e!r}).')
    return
  run.final_returns, run.source, run.final_steps = (
      returns, 'final_eval.json', steps)
  if (steps is not None and steps < ATARI_100K_STEPS and
      scores.domain(run.game) == 'atari'):
    notes.append(f'{run.path}: final evaluation after only {steps:g} env '
                 f'steps (Atari 100k is {ATARI_100K_STEPS}).')


def _read_logs(run: Run, logs: dict, notes: List[str]) -> None:
  """Learning curves from the logs; the final score too if still missing."""
  iterations = sorted(int(m.group(1)) for key in logs
                      if (m := re.fullmatch(r'iteration_(\d+)', str(key))))
  stats = [logs[f'iteration_{i}'] for i in iterations]
  training_steps = _training_steps_from_gin(run.path)
  # x = env steps; Dopamine's stock Runner logs none, so fall back.
  xs = [_values(s, 'env_steps')[-1] if _values(s, 'env_steps') else
        float((i + 1) * training_steps) if training_steps else float(i)
        for i, s in zip(iterations, stats)]
  if stats and not _values(stats[0], 'env_steps'):
    notes.append(f'{run.path}: logs have no env_steps; curve x = ' + (
        f'(iteration + 1) * {training_steps} (training_steps from '
        'config.gin).' if training_steps else
        'iteration index (no training_steps in config.gin).'))
  points = {kind: [(x, y) for x, s in zip(xs, stats)
                   if (y := _episode_mean(s, kind)) is not None]
            for kind in ('eval', 'train')}
  run.curves = {k: tuple(np.array(c) for c in zip(*p))
                for k, p in points.items() if p}
  # Plot eval returns if most iterations have them: our runner by default
  # evaluates only after the last iteration, and that one point would hide
  # the whole training curve.
  order = (('eval', 'train') if len(points['eval']) >= max(
      2, len(points['train']) / 2) else ('train', 'eval'))
  run.curve_kind = next((k for k in order if points[k]), '')
  with_eval = [(i, x, s) for i, x, s in zip(iterations, xs, stats)
               if (r := _values(s, 'eval_episode_returns'))
               and all(map(math.isfinite, r))]
  if run.final_returns is None and with_eval:
    i, x, s = with_eval[-1]
    run.final_returns = _values(s, 'eval_episode_returns')
    run.source, run.final_steps = f'logs (iteration {i})', x
    notes.append(f'{run.path}: no usable final_eval.json; final score = '
                 f'eval returns of logged iteration {i} (x = {x:g}).')


def load_run(agent: str, game: str, run_dir: str,
             notes: List[str]) -> Optional[Run]:
  """Reads one run directory; None (with a note) if it has nothing usable."""
  run = Run(agent, game, os.path.basename(run_dir), run_dir, None, '')
  _read_final_eval(run, notes)
  logs = _load_logs(run_dir, notes)
  if logs:
    try:
      _read_logs(run, logs, notes)
    except Exception as e:  # pylint: disable=broad-except
      notes.append(f'{run_dir}: logs have an unexpected layout ({e!r}).')
  if run.final_returns is None:
    # Without a final score the run can still show its learning curve.
    notes.append(f'WARNING: skipped {run_dir}: no usable final_eval.json and '
                 'no evaluation episodes in logs/' +
                 ('; only its learning curve is plotted.'
                  if run.curve_kind else '.'))
    return run if run.curve_kind else None
  return run


def collect_runs(roots: Sequence[str], notes: List[str]) -> List[Run]:
  """Every `<root>/<agent>/<Game>/<seed>/` run under `roots`."""
  runs, seen = [], {}
  for root in roots:
    if not os.path.isdir(root):
      raise ValueError(f'Results root {root!r} is not a directory.')
    subdirs = lambda d: sorted(e for e in os.listdir(d) if not e.startswith(
        '.') and os.path.isdir(os.path.join(d, e)))
    for agent in subdirs(root):
      for game_dir in subdirs(os.path.join(root, agent)):
        path = os.path.join(root, agent, game_dir)
        try:
          game = scores.canonical_any(game_dir)
        except ValueError:
          notes.append(f'WARNING: skipped {path}: {game_dir!r} is neither one '
                       'of the 26 Atari 100k games nor a MinAtar game '
                       '(minatar-<game>): no reference scores.')
          continue
        for seed in subdirs(path):
          run = load_run(agent, game, os.path.join(path, seed), notes)
          if run and (agent, game, seed) in seen:
            notes.append(f'{agent}/{game}: seed {seed} is in two roots '
                         f'({seen[agent, game, seed]}, {run.path}); both '
                         'runs are used.')
          if run:
            seen[agent, game, seed] = run.path
            runs.append(run)
  return runs
