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
written to `<root>/report/`. The plan (games, seeds, run directories and
commands): sweep_plan.py; where and how runs execute: sweep_backends.py.
"""

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

from bbf_dopamine import sweep_backends as backends
from bbf_dopamine import sweep_plan as plan


def build_report(root: str, reps: int = 2000, stream=None) -> str:
  """analyze.build_report over the whole root into root/report; its path."""
  # Imported here: pandas, matplotlib and rliable cost seconds to import.
  from absl import logging  # pylint: disable=g-import-not-at-top
  from bbf_dopamine import analyze  # pylint: disable=g-import-not-at-top
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # rliable logs every bootstrap.
  try:
    out = os.path.join(root, plan.REPORT_DIR)
    result = analyze.build_report([root], out, reps=reps)
  finally:
    logging.set_verbosity(verbosity)
  print(result['aggregates'].to_string(index=False), file=stream)
  print(f'Report: {os.path.join(out, "report.md")}', file=stream)
  return out


def _outcome(run: plan.Run, result: backends.Result) -> str:
  if result.interrupted:
    return 'interrupted'
  if result.returncode == 0 and result.has_final_eval:
    return 'resumed' if run.status == 'resume' else 'done'
  return 'failed'


def _record(run: plan.Run, outcome: str, result: Optional[backends.Result]):
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
    gin_files, games, seeds, root, gin_bindings: as plan.plan_runs.
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
  runs = plan.plan_runs(gin_files, games, seeds, root, gin_bindings)
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
      out = os.path.join(root, plan.REPORT_DIR)
      print(f'Report not built: {e}\n(python -m bbf_dopamine.analyze '
            f'{root} --out {out} --common_games '
            'aggregates over the games all agents share.)', file=stream)
  return summary


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m bbf_dopamine.sweep', description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--gin_files', action='append', default=[],
                 help='Gin files, comma-separated or repeated; one config '
                 'each, named by the file stem.')
  p.add_argument('--games', help='Comma-separated games, '
                 f'{plan.ALL_GAMES!r} (Atari configs) or {plan.ALL_MINATAR!r} '
                 '(MinAtar configs).')
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
      runs = plan.plan_runs(args.gin_files, args.games, args.seeds,
                            args.root, args.gin_bindings)
      print(plan.slurm_script(runs, args.cpus_per_run, args.gpus_per_run,
                              args.parallel)
            if args.slurm else plan.format_plan(runs))
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
