# coding=utf-8
"""scripts/run_tests.py: the README's test runner fails when a file fails."""

import ast
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location(
    'run_tests', ROOT / 'scripts' / 'run_tests.py')
run_tests = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(run_tests)


def _write(path, body):
  path.write_text(body)
  return str(path)


def test_schedule_is_longest_first_with_unknown_files_first():
  durations = {'a.py': 5.0, 'b.py': 50.0, 'c.py': 20.0}
  assert run_tests._schedule(['a.py', 'b.py', 'new.py', 'c.py'],
                             durations) == ['new.py', 'b.py', 'c.py', 'a.py']


def test_exit_status_names_failing_files(tmp_path, capsys):
  good = _write(tmp_path / 'test_good.py',
                'def test_one():\n  assert 1 + 1 == 2\n')
  bad = _write(tmp_path / 'test_bad.py',
               'def test_two():\n  assert 2 + 2 == 5, "arithmetic"\n')
  empty = _write(tmp_path / 'test_empty.py', 'X = 1\n')

  assert run_tests.main([good, '--jobs', '2']) == 0
  assert '1 of 1 files passed' in capsys.readouterr().out

  assert run_tests.main([good, bad, empty, '--jobs', '2']) == 1
  out = capsys.readouterr().out
  assert '1 of 3 files passed' in out
  # The failing file's whole output is printed: its assertion message.
  assert 'arithmetic' in out
  # A file that collects no test (pytest exit 5) is a failure too.
  assert 'test_empty.py: FAILED (exit 5)' in out
  failed_line = [l for l in out.splitlines() if l.startswith(
      'run_tests: failed:')]
  assert failed_line and bad in failed_line[0] and empty in failed_line[0]
  assert good not in failed_line[0]


def test_arguments_after_double_dash_reach_pytest(tmp_path, capsys):
  both = _write(tmp_path / 'test_both.py',
                'def test_kept():\n  pass\n\n'
                'def test_dropped():\n  assert False\n')
  assert run_tests.main([both, '--', '-k', 'kept']) == 0
  assert '1 passed, 1 deselected' in capsys.readouterr().out


def test_missing_file_and_bad_jobs_are_refused(tmp_path, capsys):
  assert run_tests.main([str(tmp_path / 'test_nope.py')]) == 2
  assert 'no such test file' in capsys.readouterr().out
  try:
    run_tests.main(['--jobs', '0'])
  except SystemExit as error:
    assert error.code == 2
  else:
    raise AssertionError('--jobs 0 was accepted')
  assert '--jobs must be at least 1' in capsys.readouterr().err


def test_record_updates_only_the_files_run(tmp_path, monkeypatch, capsys):
  durations = tmp_path / 'durations.json'
  durations.write_text('{"tests/test_other.py": 5.0}\n')
  monkeypatch.setattr(run_tests, 'DURATIONS', durations)
  good = _write(tmp_path / 'test_good.py', 'def test_one():\n  pass\n')
  assert run_tests.main([good, '--record']) == 0
  capsys.readouterr()
  recorded = json.loads(durations.read_text())
  assert recorded['tests/test_other.py'] == 5.0
  assert set(recorded) == {'tests/test_other.py', good}
  assert 0.0 < recorded[good] < 60.0


# A test file that reports the cache settings its process was given.
_CACHE_NAMES = ('JAX_COMPILATION_CACHE_DIR', 'JAX_COMPILATION_CACHE_MAX_SIZE',
                'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')
_REPORT_CACHE = f'''import os

def test_report():
  print('CACHE', [os.environ.get(n) for n in {_CACHE_NAMES!r}])
  assert False  # so that the runner prints this file's whole output
'''


def _reported_cache(capsys):
  out = capsys.readouterr().out
  line = [l for l in out.splitlines() if l.startswith('CACHE ')]
  assert len(line) == 1, out
  return ast.literal_eval(line[0][len('CACHE '):])


def test_files_share_a_fresh_compilation_cache(tmp_path, monkeypatch,
                                               capsys):
  # Under scripts/run_tests.py this process has the suite's cache settings.
  for name in _CACHE_NAMES:
    monkeypatch.delenv(name, raising=False)
  report = _write(tmp_path / 'test_report.py', _REPORT_CACHE)
  assert run_tests.main([report]) == 1
  directory, max_size, min_secs = _reported_cache(capsys)
  # A folder of this run's own temporary tree (kept since the file failed),
  # and a size limit so that JAX locks the cache between processes.
  assert pathlib.Path(directory).name == 'jax-cache'
  assert pathlib.Path(directory).parent.name.startswith('bbf-tests-')
  assert int(max_size) == 8 << 30 and float(min_secs) == 0.5

  # A cache the caller chose is kept; --no_compilation_cache sets none.
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'mine'))
  assert run_tests.main([report]) == 1
  assert _reported_cache(capsys) == [str(tmp_path / 'mine'), None, None]
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert run_tests.main([report, '--no_compilation_cache']) == 1
  assert _reported_cache(capsys) == [None, None, None]
