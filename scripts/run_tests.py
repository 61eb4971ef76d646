"""Runs the test suite: one pytest process per test file, `--jobs` at a time.

Why not one pytest process: XLA:CPU segfaulted while compiling after about
300 of the ~490 tests in a single process, whose memory maps grew with every
compiled program toward the kernel's limit (vm.max_map_count 65,530; 23,000
after 185 tests). A process per file keeps each one small. Why two at a
time: a file often waits (on train-binary subprocesses, on single-threaded
XLA compiles) while a core is free. Measured on the 2-core CI machine
(2026-12-06): the whole suite in 3,160 s of wall-clock for 6,254 s of file
time, against about 3,400 s in one process before the split.

All files share one JAX persistent compilation cache, a fresh folder for each
suite run (unless JAX_COMPILATION_CACHE_DIR is set already, or
--no_compilation_cache): the 24 Atari and 14 MinAtar gin files mostly compile
the same programs at the tests' tiny sizes, and the train-binary tests start
the same run several times. Measured two files at a time (2026-12-06):
test_gin_configs 301 -> 116 s, test_minatar_gin_configs 362 -> 160 s; the
whole suite (fresh clone, with smaller smoke-test batches) 1,741 s of
wall-clock for 3,481 s of file time. test_learning.py (1,267 s) then runs
beside all the others. A cache hit loads the executable XLA compiled, so
results are bit-identical (test_determinism compares a cold run with resumed
warm ones).

Files run longest first, by the durations in tests/durations.json (files not
listed there are taken as long), so that the last file to start is a short
one. Each file's output is printed when it ends (in full if it failed, else
its summary line); the exit status is 1 if any file failed.

  python scripts/run_tests.py                 # whole suite, 2 at a time
  python scripts/run_tests.py --jobs 1 tests/test_losses.py -- -k huber
  python scripts/run_tests.py --record        # also rewrite durations.json
  python scripts/run_tests.py --no_compilation_cache  # every file compiles
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DURATIONS = ROOT / 'tests' / 'durations.json'
CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
# Programs that compile faster than this are not worth a file read.
CACHE_MIN_COMPILE_SECS = '0.5'
# A size limit makes JAX take its file lock around cache reads and writes
# (jax._src.lru_cache; without one it takes none), which two pytest processes
# writing the same entry at once need.
CACHE_MAX_BYTES = str(8 << 30)


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('files', nargs='*',
                      help='test files (default: tests/test_*.py)')
  parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                      help='pytest processes at once (default: %(default)s)')
  parser.add_argument('--record', action='store_true',
                      help=f'update {DURATIONS} with the measured durations')
  parser.add_argument('--no_compilation_cache', action='store_true',
                      help='no shared JAX compilation cache: every file '
                      'compiles its programs itself')
  if '--' in argv:  # arguments after `--` go to every pytest process
    split = argv.index('--')
    args = parser.parse_args(argv[:split])
    args.pytest_args = argv[split + 1:]
  else:
    args = parser.parse_args(argv)
    args.pytest_args = []
  if args.jobs < 1:
    parser.error(f'--jobs must be at least 1, got {args.jobs}')
  return args


def _schedule(files, durations):
  """Longest first; unknown files (no recorded duration) before all."""
  return sorted(files, key=lambda f: -durations.get(f, float('inf')))


def _environment(tmp_root, use_cache):
  """The test processes' environment: ours, plus the shared JAX cache."""
  env = dict(os.environ)
  if use_cache and CACHE_ENV not in env:
    env[CACHE_ENV] = str(tmp_root / 'jax-cache')
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = CACHE_MIN_COMPILE_SECS
    env['JAX_COMPILATION_CACHE_MAX_SIZE'] = CACHE_MAX_BYTES
  return env


def _run_file(name, basetemp, pytest_args, env):
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       f'--basetemp={basetemp}', name, *pytest_args],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      check=False, env=env)
  return proc.returncode, proc.stdout, time.monotonic() - start


def _summary_line(output):
  lines = [line for line in output.strip().splitlines() if line.strip()]
  return lines[-1] if lines else '(no output)'


def main(argv):
  args = _parse(argv)
  files = args.files or sorted(
      str(p.relative_to(ROOT)) for p in (ROOT / 'tests').glob('test_*.py'))
  missing = [f for f in files if not (ROOT / f).is_file()]
  if missing:
    print(f'run_tests: no such test file(s): {", ".join(missing)}')
    return 2
  durations = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
  order = _schedule(files, durations)
  tmp_root = pathlib.Path(tempfile.mkdtemp(prefix='bbf-tests-'))
  env = _environment(tmp_root, not args.no_compilation_cache)
  cache = env.get(CACHE_ENV, 'none')
  print(f'run_tests: {len(order)} files, {args.jobs} at a time, JAX '
        f'compilation cache: {cache}', flush=True)
  start = time.monotonic()
  measured, failed = {}, []
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = {
        pool.submit(_run_file, name, tmp_root / pathlib.Path(name).stem,
                    args.pytest_args, env): name for name in order}
    for done, future in enumerate(
        concurrent.futures.as_completed(futures), start=1):
      name = futures[future]
      code, output, seconds = future.result()
      measured[name] = round(seconds, 1)
      status = 'ok' if code == 0 else f'FAILED (exit {code})'
      print(f'[{done}/{len(order)}] {name}: {status} in {seconds:.0f} s: '
            f'{_summary_line(output)}', flush=True)
      if code != 0:
        failed.append(name)
        print(output, flush=True)
  wall = time.monotonic() - start
  print(f'run_tests: {len(order) - len(failed)} of {len(order)} files passed '
        f'in {wall:.0f} s wall-clock ({sum(measured.values()):.0f} s of '
        'file time)', flush=True)
  if args.record:  # files not run this time keep their recorded duration
    merged = {**durations, **measured}
    DURATIONS.write_text(json.dumps(
        dict(sorted(merged.items(), key=lambda kv: -kv[1])), indent=1) + '\n')
  if failed:
    print('run_tests: failed: ' + ', '.join(failed) +
          f' (their pytest temporary files are kept in {tmp_root})')
    return 1
  shutil.rmtree(tmp_root, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
