# coding=utf-8
r"""Sweeps: many configs x games x seeds, locally or on Ray, resumable.

  python -m bbf_dopamine.sweep \
      --gin_files gin_configs/bbf.gin,gin_configs/bbf_no_spr.gin \
      --games Pong,Breakout --seeds 0-4 --root results/ \
      [--gin_bindings B ...] [--parallel N] [--runs_per_gpu K] \
      [--ray local|auto|HOST:PORT|ray://HOST:PORT] [--cpus_per_run 1] \
      [--gpus_per_run G] [--dry_run] [--slurm] [--no_report] \
      [--report_only] [--report_reps 2000]

Every run is `python -m dopamine.discrete_domains.train` on one gin file with
two more bindings, the game and the seed, into `<root>/<config>/<Game>/
<seed>/` (`<config>`: the gin file's name without `.gin`), which is the
layout `bbf_dopamine.analyze` reads.

Atari configs (`create_atari_environment.game_name`) take Atari 100k games
(`--games Pong,Breakout` or `atari100k`); MinAtar configs
(`create_minatar_environment.game_name`, gin_configs/minatar/) take MinAtar
games (`--games breakout,asterix` or `minatar` for all five), whose run
directories are named `minatar-<game>` so that MinAtar Breakout and Atari
Breakout never share a directory or a row of the report. One sweep runs one
domain. The selectors of those two bindings are
read from the gin file (`BBFAgent.seed`, `JaxDQNAgent.seed`, ...), so every
config of this repository, BBF's and the baselines', sweeps the same way.

A run directory with `final_eval.json` is done and skipped; one with a
complete checkpoint is resumed by the runner itself; every attempt appends
the run's output to `<run>/sweep.log`, whose lock keeps two sweeps over one
root from running a run twice. A failed run does not stop the others but
makes the exit code 1. At the end the comparison report of the whole root is
written to `<root>/report/`. Where and how runs execute: sweep_backends.py.
"""

import argparse
import dataclasses
import math
import os
import re
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

from bbf_dopamine import checkpoints
from bbf_dopamine import scores
from bbf_dopamine import sweep_backends as backends

TRAIN_MODULE = 'dopamine.discrete_domains.train'
ALL_GAMES = 'atari100k'  # --games value for the 26 Atari 100k games.
ALL_MINATAR = 'minatar'  # --games value for MinAtar's five games.
# Game selector (gin configurable) -> domain.
_DOMAINS = {'create_atari_environment': 'atari',
            'create_minatar_environment': 'minatar'}
REPORT_DIR = 'report'
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


def build_report(root: str, reps: int = 2000, stream=None) -> str:
  """analyze.build_report over the whole root into root/report; its path."""
  # Imported here: pandas, matplotlib and rliable cost seconds to import.
  from absl import logging  # pylint: disable=g-import-not-at-top
  from bbf_dopamine import analyze  # pylint: disable=g-import-not-at-top
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # rliable logs every bootstrap.
  try:
    out = os.path.join(root, REPORT_DIR)
    result = analyze.build_report([root], out, reps=reps)
  finally:
    logging.set_verbosity(verbosity)
  print(result['aggregates'].to_string(index=False), file=stream)
  print(f'Report: {os.path.join(out, "report.md")}', file=stream)
  return out


def _outcome(run: Run, result: backends.Result) -> str:
  if result.interrupted:
    return 'interrupted'
  if result.returncode == 0 and result.has_final_eval:
    return 'resumed' if run.status == 'resume' else 'done'
  return 'failed'


def _record(run: Run, outcome: str, result: Optional[backends.Result]):
  error = result.error if result else None
  if outcome == 'failed' and result.returncode == 0:
    # The sweep counts a run as done by its final_eval.json only.
    error = ('exit code 0 but no final_eval.json (is '
             'Atari100kRunner.num_eval_episodes 0?)')
  return {'config': run.config, 'game': run.game, 'seed': run.seed,
          'run_dir': run.run_dir, 'status': run.status, 'outcome': outcome,
          'log': run.log,
          'returncode': result.returncode if result else None,
          'wall_s': result.wall_s if result else 0.0,
          'executor': result.executor if result else None,
          'error': error,
          'mean_return': (result.mean_return if result else
                          backends.read_mean_return(run.run_dir))}


def _line(record: dict, index: int, total: int) -> str:
  mean = record['mean_return']
  took = ('(already done)' if record['outcome'] == 'skipped' else
          f'in {record["wall_s"]:.0f} s')
  text = (f'[{index}/{total}] {record["config"]} {record["game"]} seed '
          f'{record["seed"]}: {record["outcome"]} {took}, final mean return '
          f'{"-" if mean is None else f"{mean:g}"}')
  if record['outcome'] in ('failed', 'interrupted'):
    text += (f' ({record["error"] or "exit code " + str(record["returncode"])}'
             f'; log {record["log"]})')
  return text


def _summarize(records: List[dict], num_runs: int, interrupted: Optional[int],
               wall_s: float, stream) -> Dict:
  """The summary dict of run_sweep (without the report), and its lines."""
  outcomes = ('done', 'resumed', 'skipped', 'failed', 'interrupted')
  counts = {o: sum(r['outcome'] == o for r in records) for o in outcomes}
  failed_logs = [r['log'] for r in records if r['outcome'] == 'failed']
  stopped = (f', {counts["interrupted"]} interrupted, '
             f'{num_runs - len(records)} not started' if interrupted else '')
  print(f'Sweep of {num_runs} runs in {wall_s:.0f} s: {counts["done"]} done, '
        f'{counts["resumed"]} resumed, {counts["skipped"]} skipped (already '
        f'done), {counts["failed"]} failed{stopped}.', file=stream)
  for log in failed_logs:
    print(f'  failed: {log}', file=stream)
  if interrupted:
    exit_code = 128 + interrupted  # As the shell reports a killed process.
  else:
    exit_code = int(bool(failed_logs))
  return {'runs': records, 'counts': counts, 'failed_logs': failed_logs,
          'report': None, 'report_error': None, 'exit_code': exit_code}


def run_sweep(gin_files, games, seeds, root: str,
              gin_bindings: Sequence[str] = (),
              parallel: Optional[int] = None, runs_per_gpu: int = 1,
              ray: Optional[str] = None, cpus_per_run: float = 1,
              gpus_per_run: float = 0, report: bool = True,
              report_reps: int = 2000, stream=None) -> Dict:
  """Plans, runs what is not done, prints progress, builds the report.

  Args:
    gin_files, games, seeds, root, gin_bindings: as plan_runs.
    parallel: local runs at once (default: GPUs x runs_per_gpu, else half the
      CPU cores).
    runs_per_gpu: local runs sharing one GPU.
    ray: None (local), 'local', 'auto' or a Ray cluster address.
    cpus_per_run, gpus_per_run: resources of each Ray task.
    report: build root/report at the end.
    report_reps: bootstrap samples of the report's intervals.
    stream: where progress lines go (default sys.stdout).

  Returns:
    {'runs': one dict per run (config, game, seed, run_dir, status, outcome,
    log, returncode, wall_s, executor, error, mean_return), 'counts': runs per
    outcome (done, resumed, skipped, failed, interrupted), 'failed_logs',
    'report': its directory or None, 'report_error', 'exit_code': 0, 1 (a run
    or the report failed) or 128 + signal (interrupted)}.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  stream = stream or sys.stdout
  runs = plan_runs(gin_files, games, seeds, root, gin_bindings)
  records, todo = [], [r for r in runs if r.status != 'done']
  resume = sum(r.status == 'resume' for r in todo)
  print(f'{len(runs)} runs: {len(todo) - resume} new, {resume} to resume, '
        f'{len(runs) - len(todo)} done.', file=stream)
  for run in runs:
    if run.status == 'done':
      records.append(_record(run, 'skipped', None))
      print(_line(records[-1], len(records), len(runs)), file=stream)
  start, interrupted = time.time(), None
  if todo and ray:
    print(f'Running them as Ray tasks ({ray}).', file=stream)
  elif todo:
    gpus = backends.detect_gpus()
    parallel = parallel or backends.default_parallel(len(gpus), runs_per_gpu)
    envs = backends.device_envs(parallel, gpus, runs_per_gpu)
    print(f'Running {parallel} at once{f" on GPUs {gpus}" if gpus else ""}.',
          file=stream)
  stream.flush()
  bar = tqdm(total=len(todo), unit='run', file=sys.stderr, disable=not todo,
             desc='sweep')

  def on_result(run, result):
    records.append(_record(run, _outcome(run, result), result))
    tqdm.write(_line(records[-1], len(records), len(runs)), file=stream)
    bar.update(1)

  try:
    if todo and ray:
      backends.run_ray(todo, ray, cpus_per_run, gpus_per_run, on_result)
    elif todo:
      backends.run_local(todo, parallel, envs, on_result)
  except backends.Interrupted as e:
    interrupted = e.signum
  finally:
    bar.close()
  summary = _summarize(records, len(runs), interrupted, time.time() - start,
                       stream)
  if report and not interrupted:
    try:
      summary['report'] = build_report(os.path.abspath(root), report_reps,
                                       stream)
    except ValueError as e:
      summary['report_error'] = str(e)
      summary['exit_code'] = 1
      print(f'Report not built: {e}\n(python -m bbf_dopamine.analyze '
            f'{root} --out {os.path.join(root, REPORT_DIR)} --common_games '
            'aggregates over the games all agents share.)', file=stream)
  return summary


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m bbf_dopamine.sweep', description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--gin_files', action='append', default=[],
                 help='Gin files, comma-separated or repeated; one config '
                 'each, named by the file stem.')
  p.add_argument('--games', help=f'Comma-separated games, {ALL_GAMES!r} '
                 f'(Atari configs) or {ALL_MINATAR!r} (MinAtar configs).')
  p.add_argument('--seeds', help='E.g. 0-4, 0,2,5 or 0-2,7.')
  p.add_argument('--root', required=True, help='Results root.')
  p.add_argument('--gin_bindings', action='append', default=[],
                 help='A binding for every run (repeatable).')
  p.add_argument('--parallel', type=int, help='Local runs at once.')
  p.add_argument('--runs_per_gpu', type=int, default=1)
  p.add_argument('--ray', metavar='ADDRESS', help="Run as Ray tasks: 'local' "
                 "(start Ray here), 'auto' or a cluster address.")
  p.add_argument('--cpus_per_run', type=float, default=1)
  p.add_argument('--gpus_per_run', type=float, default=0)
  p.add_argument('--dry_run', action='store_true',
                 help='Print the runs, their status and commands; run nothing.')
  p.add_argument('--slurm', action='store_true',
                 help='Print a SLURM job-array script instead of running.')
  p.add_argument('--no_report', action='store_true')
  p.add_argument('--report_only', action='store_true',
                 help='Only build <root>/report from the runs there.')
  p.add_argument('--report_reps', type=int, default=2000,
                 help='Bootstrap samples of the report.')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit code."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.parallel is not None and args.parallel < 1:
    parser.error('--parallel must be >= 1.')
  if args.runs_per_gpu < 1:
    parser.error('--runs_per_gpu must be >= 1.')
  try:
    if args.report_only:
      build_report(os.path.abspath(args.root), args.report_reps)
      return 0
    if not (args.gin_files and args.games and args.seeds):
      parser.error('--gin_files, --games and --seeds are required.')
    if args.dry_run or args.slurm:
      runs = plan_runs(args.gin_files, args.games, args.seeds, args.root,
                       args.gin_bindings)
      print(slurm_script(runs, args.cpus_per_run, args.gpus_per_run,
                         args.parallel) if args.slurm else format_plan(runs))
      return 0
    summary = run_sweep(
        args.gin_files, args.games, args.seeds, args.root, args.gin_bindings,
        parallel=args.parallel, runs_per_gpu=args.runs_per_gpu, ray=args.ray,
        cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
        report=not args.no_report, report_reps=args.report_reps)
  except (ValueError, ImportError, ConnectionError) as e:
    # Bad arguments, no Ray, no Ray cluster at --ray: nothing ran.
    print(f'error: {e}', file=sys.stderr)
    return 2
  return summary['exit_code']


if __name__ == '__main__':
  sys.exit(main())
