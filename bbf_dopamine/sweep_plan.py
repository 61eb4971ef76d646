# coding=utf-8
"""A sweep's plan: which runs, where they go, and the command of each.

Parsing of --games and --seeds, the seed and game selectors read from a gin
file (with its includes), each run directory's status (new, resume, done),
the --dry_run listing and the SLURM job array. Executing the plan is
sweep.py's (with sweep_backends.py); none of this starts a process.
"""

import dataclasses
import math
import os
import re
import shlex
import sys
from typing import List, Optional, Sequence, Tuple, Union

from bbf_dopamine import checkpoints
from bbf_dopamine import scores
from bbf_dopamine import sweep_backends as backends

TRAIN_MODULE = 'dopamine.discrete_domains.train'
ALL_GAMES = 'atari100k'  # --games value for the 26 Atari 100k games.
ALL_MINATAR = 'minatar'  # --games value for MinAtar's five games.
REPORT_DIR = 'report'  # <root>/report: the comparison report, not a config.
# Game selector (gin configurable) -> domain.
_DOMAINS = {'create_atari_environment': 'atari',
            'create_minatar_environment': 'minatar'}
# `Selector.seed = ...` / `Selector.game_name = ...` at the start of a line.
_SEED_RE = re.compile(r'^\s*([\w./]+)\.seed\s*=', re.MULTILINE)
_GAME_RE = re.compile(r'^\s*([\w./]+)\.game_name\s*=', re.MULTILINE)
_INCLUDE_RE = re.compile(r'^\s*include\s+[\'"]([^\'"]+)[\'"]', re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Run:
  """One planned run: what it is, where it goes, the command that runs it."""
  config: str  # The gin file's stem.
  gin_file: str  # Absolute path.
  game: str  # Canonical game id: 'Pong' or 'minatar-breakout'.
  seed: int
  run_dir: str
  bindings: Tuple[str, ...]  # --gin_bindings, the sweep's own last.
  command: Tuple[str, ...]
  status: str  # At planning time: 'new', 'resume' or 'done'.

  @property
  def log(self) -> str:
    return os.path.join(self.run_dir, backends.LOG_FILE)


def parse_seeds(spec: Union[str, int, Sequence[int]]) -> List[int]:
  """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' and '0-2,7' work too."""
  if isinstance(spec, int):
    spec = str(spec)
  if not isinstance(spec, str):
    spec = ','.join(str(s) for s in spec)
  seeds = []
  for item in spec.split(','):
    match = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', item)
    if not match:
      raise ValueError(f'Bad seed {item.strip()!r} in --seeds {spec!r}: give '
                       'non-negative integers and ranges, e.g. 0-4 or 0,2,5.')
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if last < first:
      raise ValueError(f'Empty seed range {item.strip()!r} in --seeds '
                       f'{spec!r}: write it as {last}-{first}.')
    seeds.extend(range(first, last + 1))
  repeated = sorted({s for s in seeds if seeds.count(s) > 1})
  if repeated:
    raise ValueError(f'Seeds {repeated} appear twice in --seeds {spec!r}.')
  return seeds


def parse_games(spec: Union[str, Sequence[str]],
                domain: str = 'atari') -> List[str]:
  """Canonical ids of the games of `spec` in `domain`.

  Args:
    spec: 'Pong,Breakout' (any spelling) or 'atari100k' for Atari;
      'breakout,asterix' (or 'minatar-breakout') or 'minatar' for MinAtar.
    domain: 'atari' or 'minatar', the domain of the sweep's gin files.

  Returns:
    Atari: camel-case names ('Pong'); MinAtar: 'minatar-<game>' ids.
  """
  names = spec.split(',') if isinstance(spec, str) else list(spec)
  names = [n.strip() for n in names if n.strip()]
  if domain == 'minatar':
    every, known = ALL_MINATAR, scores.MINATAR_GAMES
    everything = [scores.MINATAR_PREFIX + g for g in known]
    def valid(n):
      try:
        scores.minatar_game(n)
        return True
      except ValueError:
        return False
    canonical = scores.minatar_game
  else:
    every, known = ALL_GAMES, scores.ATARI_100K_GAMES
    everything, valid = list(known), scores.is_atari_100k_game
    canonical = scores.canonical_game
  if [n.lower() for n in names] == [every]:
    return everything
  unknown = [n for n in names if not valid(n)]
  if unknown or not names:
    raise ValueError(
        f'Unknown {"MinAtar" if domain == "minatar" else "Atari 100k"} '
        f'game(s) {", ".join(map(repr, unknown)) or "(none given)"}; '
        f'--games takes {every!r} or names among: {", ".join(known)}.')
  games = [canonical(n) for n in names]
  repeated = sorted({g for g in games if games.count(g) > 1})
  if repeated:
    raise ValueError(f'Games {repeated} appear twice in --games.')
  return games


def _gin_text(path: str, seen=()) -> str:
  """The gin file's text with its `include`d files (which bind too)."""
  if path in seen:
    return ''
  with open(path) as f:
    text = f.read()
  for included in _INCLUDE_RE.findall(text):
    for candidate in (os.path.join(os.path.dirname(path), included), included):
      if os.path.isfile(candidate):
        text += '\n' + _gin_text(os.path.abspath(candidate), seen + (path,))
        break
  return text


def selectors(gin_file: str) -> Tuple[List[str], List[str], str]:
  """The (seed, game) selectors a gin file binds, and its domain.

  Returns:
    (seed selectors, e.g. ['BBFAgent'], game selectors, e.g.
    ['atari_lib.create_atari_environment'], 'atari' or 'minatar').
  """
  if not os.path.isfile(gin_file):
    raise ValueError(f'Gin file {gin_file!r} does not exist.')
  text = re.sub(r'#.*', '', _gin_text(os.path.abspath(gin_file)))
  seed = list(dict.fromkeys(_SEED_RE.findall(text)))
  game = list(dict.fromkeys(_GAME_RE.findall(text)))
  if not seed:
    raise ValueError(
        f'{gin_file} binds no seed (no `<Agent>.seed = ...` line), so its runs '
        'would not differ by seed; add e.g. `BBFAgent.seed = 0` to it.')
  if not game:
    raise ValueError(
        f'{gin_file} binds no game (no `<...>.game_name = ...` line), so the '
        'sweep cannot choose it; add e.g. '
        "`atari_lib.create_atari_environment.game_name = 'Pong'`.")
  domains = {_DOMAINS.get(g.rsplit('.', 1)[-1]) for g in game}
  if None in domains or len(domains) > 1:
    # --games are validated per domain and the report normalises per
    # domain; an unknown environment factory would get neither right.
    raise ValueError(
        f'{gin_file} chooses its game with {", ".join(game)}.game_name; '
        'sweeps run Atari configs (create_atari_environment) or MinAtar '
        'configs (create_minatar_environment).')
  return seed, game, domains.pop()


def run_status(run_dir: str) -> str:
  """'done' (final_eval.json), 'resume' (a complete checkpoint) or 'new'."""
  if os.path.isfile(os.path.join(run_dir, backends.FINAL_EVAL_FILE)):
    return 'done'
  if checkpoints.complete_numbers(os.path.join(run_dir, 'checkpoints')):
    return 'resume'
  return 'new'


def _split(values: Union[str, Sequence[str]]) -> List[str]:
  values = [values] if isinstance(values, str) else list(values)
  return [v.strip() for value in values for v in value.split(',') if v.strip()]


def plan_runs(gin_files: Union[str, Sequence[str]],
              games: Union[str, Sequence[str]],
              seeds: Union[str, int, Sequence[int]], root: str,
              gin_bindings: Sequence[str] = (),
              python: Optional[str] = None) -> List[Run]:
  """Every run of configs x games x seeds, checked before anything runs.

  Args:
    gin_files: paths, or one comma-separated string of paths.
    games: names (any spelling), a comma-separated string, or 'atari100k'.
    seeds: as parse_seeds takes them.
    root: the results root.
    gin_bindings: bindings added to every run (not the seed or the game).
    python: the interpreter of the commands (default: this one).

  Returns:
    The runs, configs outermost and seeds innermost.

  Raises:
    ValueError: an unknown game, a bad seed range, a gin file that is
      missing or binds no seed or game, two configs with one name, or a
      binding in gin_bindings that sets the seed or the game.
  """
  files = _split(gin_files)
  if isinstance(gin_bindings, str):
    gin_bindings = [gin_bindings]
  if not files:
    raise ValueError('Give at least one gin file (--gin_files).')
  seeds = parse_seeds(seeds)
  domains = {f: selectors(f)[2] for f in files}
  if len(set(domains.values())) > 1:
    raise ValueError(
        'One sweep runs one domain; these gin files mix Atari and MinAtar: ' +
        ', '.join(f'{f} ({d})' for f, d in domains.items()) + '.')
  domain = set(domains.values()).pop()
  games = parse_games(games, domain)
  for binding in gin_bindings:
    if _SEED_RE.match(binding) or _GAME_RE.match(binding):
      raise ValueError(f'--gin_bindings {binding!r}: the sweep sets the seed '
                       'and the game of every run; use --seeds / --games.')
  names = [os.path.splitext(os.path.basename(f))[0] for f in files]
  for name in names:
    if names.count(name) > 1 or name == REPORT_DIR:
      raise ValueError(f'Config name {name!r} (a gin file stem) is used twice '
                       f'or is reserved ({REPORT_DIR!r}); rename the file.')
  root = os.path.abspath(root)
  python = python or sys.executable
  runs = []
  for name, gin_file in zip(names, files):
    seed_selectors, game_selectors, _ = selectors(gin_file)
    gin_file = os.path.abspath(gin_file)
    for game in games:
      for seed in seeds:
        run_dir = os.path.join(root, name, game, str(seed))
        # No spaces, double quotes: the printed commands need less quoting.
        env_game = (scores.minatar_env_name(game) if domain == 'minatar'
                    else game)
        own = [f'{s}.game_name="{env_game}"' for s in game_selectors]
        own += [f'{s}.seed={seed}' for s in seed_selectors]
        bindings = tuple(gin_bindings) + tuple(own)
        command = [python, '-m', TRAIN_MODULE, '--base_dir', run_dir,
                   '--gin_files', gin_file]
        for binding in bindings:
          command += ['--gin_bindings', binding]
        runs.append(Run(name, gin_file, game, seed, run_dir, bindings,
                        tuple(command), run_status(run_dir)))
  return runs


def format_plan(runs: Sequence[Run]) -> str:
  """The --dry_run listing: each run's status and command, then the counts."""
  lines = []
  for run in runs:
    lines.append(f'{run.status:6} {run.config} {run.game} seed {run.seed}: '
                 f'{run.run_dir}')
    if run.status != 'done':
      lines.append(f'         {shlex.join(run.command)}')
  counts = {s: sum(r.status == s for r in runs) for s in ('new', 'resume',
                                                          'done')}
  lines.append(f'{len(runs)} runs: ' +
               ', '.join(f'{n} {s}' for s, n in counts.items()))
  return '\n'.join(lines)


def slurm_script(runs: Sequence[Run], cpus_per_run: float = 1,
                 gpus_per_run: float = 0, parallel: Optional[int] = None,
                 cwd: Optional[str] = None) -> str:
  """A SLURM job array with one run (not yet done) per array index."""
  todo = [r for r in runs if r.status != 'done']
  if not todo:
    return '# Every run of this sweep is done; nothing to submit.\n'
  root = os.path.dirname(os.path.dirname(os.path.dirname(todo[0].run_dir)))
  limit = f'%{parallel}' if parallel else ''
  lines = ['#!/bin/bash',
           f'# {len(todo)} runs of bbf_dopamine.sweep ({len(runs) - len(todo)}'
           ' already done). Submit: sbatch THIS_FILE',
           '#SBATCH --job-name=bbf-sweep',
           f'#SBATCH --array=0-{len(todo) - 1}{limit}',
           f'#SBATCH --cpus-per-task={max(1, math.ceil(cpus_per_run))}',
           f'#SBATCH --output={root}/slurm-%A_%a.out']
  if gpus_per_run:
    lines.append(f'#SBATCH --gres=gpu:{max(1, math.ceil(gpus_per_run))}')
  lines += ['set -euo pipefail', f'cd {shlex.quote(cwd or os.getcwd())}',
            'case "$SLURM_ARRAY_TASK_ID" in']
  for i, run in enumerate(todo):
    log = shlex.quote(run.log)
    lines.append(f'  {i})  # {run.config} {run.game} seed {run.seed} '
                 f'({run.status})')
    lines.append(f'    mkdir -p {shlex.quote(run.run_dir)}')
    lines.append(f'    {shlex.join(run.command)} >> {log} 2>&1 ;;')
  lines += ['  *) echo "no run for index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
            'esac', '']
  return '\n'.join(lines)
