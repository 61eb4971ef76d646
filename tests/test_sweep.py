# coding=utf-8
"""`python -m bbf_dopamine.sweep`: planning, backends, kill and resume, Ray.

Unit tests check the pure parts (seed and game parsing, the plan, run status,
GPU slots, the dry-run listing, the SLURM script) and the sweep's bookkeeping
with a fake train module that answers in milliseconds. The integration tests
run real BBF runs through Dopamine's train binary: tiny copies of bbf.gin and
bbf_no_spr.gin (test_end_to_end's TINY network, 2 iterations of 30 agent
steps, a checkpoint every 10). Their replay never reaches min_replay_history,
so no gradient step is compiled: the runs cost JAX start-up and agent creation
(about 13 s of CPU, 6 s with the JAX compilation cache the runs share) and are
still whole runs that checkpoint, resume and write final_eval.json;
test_end_to_end covers learning.

  * 2 configs x 2 games x 2 seeds, 2 at once: the sweep's process group is
    killed once a run has finished and another has a checkpoint, and the
    same command run again skips, resumes and completes the rest, then the
    report covers the 8 runs;
  * SIGTERM to the sweep alone terminates its runs;
  * 1 config x 1 game x 2 seeds as tasks of a Ray instance the test starts.
About 80 s on 2 CPU cores (one CPU-minute).
"""

import fcntl
import glob
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from bbf_dopamine import checkpoints
from bbf_dopamine import scores
from bbf_dopamine import sweep
from bbf_dopamine import sweep_backends
from bbf_dopamine import sweep_plan
import test_end_to_end
from test_run_tests import run_tests

ROOT = test_end_to_end.ROOT
BBF_GIN = str(ROOT / 'gin_configs' / 'bbf.gin')
DER_GIN = str(ROOT / 'gin_configs' / 'baselines' / 'der.gin')
GAME_KEY = 'atari_lib.create_atari_environment.game_name'
TINY_RUN = [
    'Atari100kRunner.training_steps = 30',
    'Atari100kRunner.num_iterations = 2',
    'Atari100kRunner.num_eval_episodes = 1',
    'Atari100kRunner.intermediate_eval_episodes = 0',
    'Atari100kRunner.max_steps_per_episode = 20',
    'Atari100kRunner.checkpoint_every = 10',
    # Above the 60 agent steps of a run: no gradient step (see docstring).
    'BBFAgent.min_replay_history = 100',
]
TIMEOUT_S = 600


@pytest.fixture(scope='module')
def run_env(tmp_path_factory):
  """The environment of the sweeps: one JAX compilation cache for all runs.

  The runs of a game compile the same programs; with the cache only the first
  one pays (a run then costs about 6 s of CPU instead of 13 s). Under
  scripts/run_tests.py that is the suite's shared cache, else one of this
  module's own. Either way with a size limit, so that JAX locks the cache:
  the sweeps run two processes at once.
  """
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR',
                 str(tmp_path_factory.mktemp('jax')))
  env.update({'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
              'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
              'JAX_COMPILATION_CACHE_MAX_SIZE': run_tests.CACHE_MAX_BYTES})
  return env


def tiny_gin(directory, config):
  """gin_configs/<config>.gin with TINY and TINY_RUN appended."""
  path = os.path.join(directory, f'{config}.gin')
  with open(ROOT / 'gin_configs' / f'{config}.gin') as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text + '\n' + '\n'.join(test_end_to_end.TINY + TINY_RUN) + '\n')
  return path


def sweep_command(gin_files, games, seeds, root, *flags):
  return [sys.executable, '-m', 'bbf_dopamine.sweep', '--gin_files',
          ','.join(gin_files), '--games', games, '--seeds', seeds, '--root',
          str(root), *flags]


def attempts(run_dir):
  """The header lines of the attempts in run_dir/sweep.log."""
  path = os.path.join(run_dir, sweep_backends.LOG_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [l for l in f if l.startswith('=== sweep attempt')]


def children(pid):
  """Pids of the live children of pid (Linux /proc; per forking thread)."""
  found = []
  for path in glob.glob(f'/proc/{pid}/task/*/children'):
    try:
      with open(path) as f:
        found += [int(p) for p in f.read().split()]
    except FileNotFoundError:
      pass
  return found


def alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


# Parsing and planning ------------------------------------------------------


def test_parse_seeds():
  assert sweep_plan.parse_seeds('0-4') == [0, 1, 2, 3, 4]
  assert sweep_plan.parse_seeds('0,2,5') == [0, 2, 5]
  assert sweep_plan.parse_seeds(' 0-2, 7 ') == [0, 1, 2, 7]
  assert sweep_plan.parse_seeds('3') == sweep_plan.parse_seeds(3) == [3]
  assert sweep_plan.parse_seeds([1, 4]) == [1, 4]
  for bad, message in (('4-0', 'Empty seed range'), ('', 'Bad seed'),
                       ('-1', 'Bad seed'), ('a', 'Bad seed'),
                       ('0-', 'Bad seed'), ('1.5', 'Bad seed'),
                       ('0-2,2', 'twice')):
    with pytest.raises(ValueError, match=message):
      sweep_plan.parse_seeds(bad)


def test_parse_games():
  assert sweep_plan.parse_games('pong, ms_pacman,ALE/Breakout-v5') == [
      'Pong', 'MsPacman', 'Breakout']
  assert sweep_plan.parse_games('atari100k') == list(scores.ATARI_100K_GAMES)
  with pytest.raises(ValueError, match="Unknown Atari 100k game.*'Tetris'.*Alien"):
    sweep_plan.parse_games('Pong,Tetris')
  with pytest.raises(ValueError, match='twice'):
    sweep_plan.parse_games('Pong,pong')
  with pytest.raises(ValueError, match='none given'):
    sweep_plan.parse_games(' , ')


def test_plan_expands_configs_games_seeds(tmp_path):
  runs = sweep_plan.plan_runs(
      [BBF_GIN, DER_GIN], 'Pong,Breakout', '3-4', tmp_path,
      gin_bindings=['BBFNetwork.width_scale=1'])
  assert len(runs) == 8
  assert [(r.config, r.game, r.seed) for r in runs] == [
      (c, g, s) for c in ('bbf', 'der') for g in ('Pong', 'Breakout')
      for s in (3, 4)]
  for run in runs:
    assert run.run_dir == os.path.join(tmp_path, run.config, run.game,
                                       str(run.seed))
    selector = 'BBFAgent' if run.config == 'bbf' else 'Atari100kRainbowAgent'
    assert run.bindings == ('BBFNetwork.width_scale=1',
                            f'{GAME_KEY}="{run.game}"',
                            f'{selector}.seed={run.seed}')
    gin_file = BBF_GIN if run.config == 'bbf' else DER_GIN
    expected = [sys.executable, '-m', 'dopamine.discrete_domains.train',
                '--base_dir', run.run_dir, '--gin_files', gin_file]
    for binding in run.bindings:
      expected += ['--gin_bindings', binding]
    assert list(run.command) == expected
    assert run.status == 'new' and run.log == os.path.join(run.run_dir,
                                                           'sweep.log')
  # The sweep's bindings are valid gin for the configs they were read from.
  import gin  # pylint: disable=g-import-not-at-top
  gin.parse_config(runs[0].bindings[1:], skip_unknown=True)
  assert not os.listdir(tmp_path)  # Planning creates nothing.


def test_every_shipped_config_has_seed_and_game_selectors():
  for directory, domain, selector in (
      ('gin_configs', 'atari', 'atari_lib.create_atari_environment'),
      ('gin_configs/baselines', 'atari', 'atari_lib.create_atari_environment'),
      ('gin_configs/minatar', 'minatar', 'create_minatar_environment')):
    names = [n for n in os.listdir(ROOT / directory) if n.endswith('.gin')]
    assert names, directory
    for name in names:
      seed, game, found = sweep_plan.selectors(str(ROOT / directory / name))
      assert seed and game == [selector] and found == domain, name


def test_config_without_seed_or_game_is_an_error(tmp_path, capsys):
  with open(BBF_GIN) as f:
    lines = f.read().splitlines()
  no_seed = tmp_path / 'no_seed.gin'
  no_seed.write_text('\n'.join(l for l in lines
                               if not l.startswith('BBFAgent.seed')))
  with pytest.raises(ValueError, match=f'{no_seed} binds no seed'):
    sweep_plan.plan_runs([BBF_GIN, str(no_seed)], 'Pong', '0', tmp_path / 'r')
  no_game = tmp_path / 'no_game.gin'
  no_game.write_text('\n'.join(l for l in lines if 'game_name' not in l))
  with pytest.raises(ValueError, match='binds no game'):
    sweep_plan.plan_runs([str(no_game)], 'Pong', '0', tmp_path / 'r')
  # A commented-out binding is not a binding.
  commented = tmp_path / 'commented.gin'
  commented.write_text('\n'.join('# ' + l if l.startswith('BBFAgent.seed')
                                 else l for l in lines))
  with pytest.raises(ValueError, match='binds no seed'):
    sweep_plan.selectors(str(commented))
  # An included file's binding counts.
  included = tmp_path / 'included.gin'
  included.write_text(f"include '{no_seed.name}'\nBBFAgent.seed = 0\n")
  assert sweep_plan.selectors(str(included)) == (
      ['BBFAgent'], ['atari_lib.create_atari_environment'], 'atari')
  # An environment factory of no known domain: refused.
  other = tmp_path / 'other.gin'
  other.write_text("BBFAgent.seed = 0\n"
                   "create_gym_environment.game_name = 'CartPole'\n")
  with pytest.raises(ValueError, match='create_gym_environment'):
    sweep_plan.selectors(str(other))
  # From the command line: a message and exit code 2 before anything runs.
  root = tmp_path / 'cli'
  assert sweep.main(['--gin_files', str(no_seed), '--games', 'Pong',
                     '--seeds', '0', '--root', str(root)]) == 2
  assert 'binds no seed' in capsys.readouterr().err
  assert not root.exists()


def test_bad_arguments_fail_before_anything_runs(tmp_path, capsys):
  root = tmp_path / 'r'
  base = ['--gin_files', BBF_GIN, '--root', str(root)]
  for extra, message in (
      (['--games', 'Pong,Tetris', '--seeds', '0'], "Unknown Atari 100k game.*'Tetris'"),
      (['--games', 'Pong', '--seeds', '2-1'], 'Empty seed range'),
      (['--games', 'Pong', '--seeds', '0', '--gin_bindings',
        'BBFAgent.seed=3'], 'sets the seed'),
      (['--games', 'Pong', '--seeds', '0', '--gin_files', BBF_GIN],
       'used twice')):
    assert sweep.main(base + extra) == 2
    assert re.search(message, capsys.readouterr().err)
  with pytest.raises(SystemExit):
    sweep.main(base + ['--games', 'Pong'])  # No --seeds.
  assert not root.exists()


def test_run_status(tmp_path):
  run_dir = tmp_path / 'run'
  assert sweep_plan.run_status(run_dir) == 'new'
  (run_dir / 'checkpoints').mkdir(parents=True)
  (run_dir / 'checkpoints' / 'ckpt.10').write_bytes(b'')
  assert sweep_plan.run_status(run_dir) == 'new'  # No sentinel: incomplete.
  (run_dir / 'checkpoints' / f'{checkpoints.SENTINEL_PREFIX}.10').write_text(
      '')
  assert sweep_plan.run_status(run_dir) == 'resume'
  (run_dir / 'final_eval.json').write_text('{"mean_return": 1.5}')
  assert sweep_plan.run_status(run_dir) == 'done'


def _make_statuses(root):
  """bbf/Pong/0 done, bbf/Pong/1 with a checkpoint, bbf/Pong/2 new."""
  done, resume = root / 'bbf' / 'Pong' / '0', root / 'bbf' / 'Pong' / '1'
  done.mkdir(parents=True)
  (done / 'final_eval.json').write_text('{"mean_return": -20.0}')
  (resume / 'checkpoints').mkdir(parents=True)
  (resume / 'checkpoints' / f'{checkpoints.SENTINEL_PREFIX}.20').write_text('')


def test_dry_run_lists_status_and_commands(tmp_path, capsys):
  _make_statuses(tmp_path)
  assert sweep.main(['--gin_files', BBF_GIN, '--games', 'Pong', '--seeds',
                     '0-2', '--root', str(tmp_path), '--dry_run']) == 0
  out = capsys.readouterr().out.splitlines()
  runs = sweep_plan.plan_runs(BBF_GIN, 'Pong', '0-2', tmp_path)
  assert out == [
      f'done   bbf Pong seed 0: {runs[0].run_dir}',
      f'resume bbf Pong seed 1: {runs[1].run_dir}',
      f'         {shlex.join(runs[1].command)}',
      f'new    bbf Pong seed 2: {runs[2].run_dir}',
      f'         {shlex.join(runs[2].command)}',
      '3 runs: 1 new, 1 resume, 1 done']
  # The printed command is the run's command, quoting included.
  assert shlex.split(out[2]) == list(runs[1].command)
  assert not (tmp_path / 'bbf' / 'Pong' / '2').exists()


def test_slurm_script(tmp_path, capsys):
  _make_statuses(tmp_path)
  assert sweep.main(['--gin_files', f'{BBF_GIN},{DER_GIN}', '--games',
                     'Pong', '--seeds', '0-2', '--root', str(tmp_path),
                     '--slurm', '--gpus_per_run', '0.5', '--cpus_per_run',
                     '2', '--parallel', '3']) == 0
  script = capsys.readouterr().out
  runs = [r for r in sweep_plan.plan_runs([BBF_GIN, DER_GIN], 'Pong', '0-2',
                                          tmp_path) if r.status != 'done']
  assert len(runs) == 5
  assert script.startswith('#!/bin/bash\n')
  for line in ('#SBATCH --array=0-4%3', '#SBATCH --cpus-per-task=2',
               '#SBATCH --gres=gpu:1', 'case "$SLURM_ARRAY_TASK_ID" in'):
    assert line + '\n' in script
  for i, run in enumerate(runs):
    assert f'  {i})  # {run.config} {run.game} seed {run.seed}' in script
    assert f'{shlex.join(run.command)} >> {run.log} 2>&1 ;;' in script
  assert 'BBFAgent.seed=0' not in script  # bbf/Pong/0 is done.
  syntax = subprocess.run(['bash', '-n'], input=script, text=True,
                          capture_output=True, check=False)
  assert syntax.returncode == 0, syntax.stderr
  # Run index 1 of the array with a fake interpreter: the right command.
  fake = tmp_path / 'echo_args'
  fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
  fake.chmod(0o755)
  ran = subprocess.run(
      ['bash', '-c', script.replace(sys.executable, str(fake))],
      env={**os.environ, 'SLURM_ARRAY_TASK_ID': '1',
           'ARGS_OUT': str(tmp_path / 'args')}, check=False)
  assert ran.returncode == 0
  assert (tmp_path / 'args').read_text().splitlines() == list(
      runs[1].command[1:])


# GPU slots -----------------------------------------------------------------


def test_device_envs():
  assert sweep_backends.device_envs(3, [], 1) == [{}, {}, {}]
  envs = sweep_backends.device_envs(4, ['0', '1'], 2)
  assert [e['CUDA_VISIBLE_DEVICES'] for e in envs] == ['0', '1', '0', '1']
  assert {e['XLA_PYTHON_CLIENT_MEM_FRACTION'] for e in envs} == {'0.45'}
  assert all(e['TF_FORCE_GPU_ALLOW_GROWTH'] == 'true' for e in envs)
  one = sweep_backends.device_envs(1, ['3'], 1)
  assert one == [{'CUDA_VISIBLE_DEVICES': '3',
                  'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.9',
                  'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}]
  # More slots than GPU shares: the memory is split among the actual sharers.
  envs = sweep_backends.device_envs(6, ['2', '5'], 1)
  assert [e['CUDA_VISIBLE_DEVICES'] for e in envs] == ['2', '5'] * 3
  assert envs[0]['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.3'
  with pytest.raises(ValueError):
    sweep_backends.device_envs(0, ['0'], 1)
  with pytest.raises(ValueError):
    sweep_backends.device_envs(2, ['0'], 0)
  assert sweep_backends.default_parallel(2, 3) == 6
  assert sweep_backends.default_parallel(0, 3) == max(1, os.cpu_count() // 2)
  assert sweep_backends.ray_gpu_env(0) == {}
  assert sweep_backends.ray_gpu_env(0.25)[
      'XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.225'


def test_detect_gpus(monkeypatch, tmp_path):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '1,3')
  assert sweep_backends.detect_gpus() == ['1', '3']
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  assert sweep_backends.detect_gpus() == []
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
  fake = tmp_path / 'nvidia-smi'
  fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 (UUID: a)"\n'
                  'echo "GPU 1: NVIDIA H100 (UUID: b)"\n')
  fake.chmod(0o755)
  monkeypatch.setenv('PATH', str(tmp_path), prepend=os.pathsep)
  assert sweep_backends.detect_gpus() == ['0', '1']
  monkeypatch.setenv('PATH', str(tmp_path / 'nowhere'))
  assert sweep_backends.detect_gpus() == []


# The sweep's bookkeeping, with a fake train module -------------------------

FAKE_TRAIN = '''
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument('--base_dir')
parser.add_argument('--gin_files', action='append')
parser.add_argument('--gin_bindings', action='append', default=[])
args = parser.parse_args()
bindings = dict(b.split('=', 1) for b in args.gin_bindings)
print('fake train in', args.base_dir, os.environ.get('SWEEP_TEST_MARK'))
if 'Breakout' in bindings['%s']:
  sys.exit('Breakout is broken')
if os.environ.get('FAKE_NO_FINAL_EVAL'):
  sys.exit(0)
os.makedirs(args.base_dir, exist_ok=True)
with open(os.path.join(args.base_dir, 'final_eval.json'), 'w') as f:
  json.dump({'mean_return': float(bindings['BBFAgent.seed'])}, f)
''' % GAME_KEY


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
  """Runs use FAKE_TRAIN: Breakout fails, other games end at once."""
  (tmp_path / 'fake_train.py').write_text(FAKE_TRAIN)
  monkeypatch.setenv('PYTHONPATH', str(tmp_path), prepend=os.pathsep)
  monkeypatch.setenv('SWEEP_TEST_MARK', 'inherited')
  monkeypatch.setattr(sweep_plan, 'TRAIN_MODULE', 'fake_train')


def test_sweep_summary_with_failures(tmp_path, fake_train, capsys):
  del fake_train
  root = tmp_path / 'results'
  _make_statuses(root)
  summary = sweep.run_sweep(BBF_GIN, 'Pong,Breakout', '0-2', root,
                            parallel=2, report=False)
  assert summary['counts'] == {'done': 1, 'resumed': 1, 'skipped': 1,
                               'failed': 3, 'interrupted': 0}
  assert summary['exit_code'] == 1
  failed = [os.path.join(root, 'bbf', 'Breakout', str(s), 'sweep.log')
            for s in range(3)]
  assert sorted(summary['failed_logs']) == failed
  by_run = {(r['game'], r['seed']): r for r in summary['runs']}
  assert by_run['Pong', 0]['outcome'] == 'skipped'
  assert by_run['Pong', 0]['mean_return'] == -20.0
  assert by_run['Pong', 1]['outcome'] == 'resumed'
  assert by_run['Pong', 2]['outcome'] == 'done'
  assert by_run['Pong', 2]['mean_return'] == 2.0
  assert by_run['Breakout', 1]['returncode'] == 1
  assert by_run['Pong', 2]['executor'].startswith('local slot ')
  with open(failed[0]) as f:
    log = f.read()
  assert log.startswith('=== sweep attempt ') and '(new)' in log
  assert 'fake train in' in log and 'inherited' in log
  assert 'Breakout is broken' in log and '=== exit code 1 after' in log
  out = capsys.readouterr().out
  assert '6 runs: 4 new, 1 to resume, 1 done.' in out
  assert ('[1/6] bbf Pong seed 0: skipped (already done), final mean return '
          '-20\n') in out
  assert 'bbf Pong seed 2: done in' in out
  assert f'(exit code 1; log {failed[2]})' in out
  assert ('1 done, 1 resumed, 1 skipped (already done), 3 failed.' in out)
  for log in failed:
    assert f'  failed: {log}' in out
  # Again: failed runs are retried (their log grows), finished ones skipped.
  summary = sweep.run_sweep(BBF_GIN, 'Pong,Breakout', '0-2', root,
                            parallel=1, report=False)
  assert summary['counts']['skipped'] == 3
  assert summary['counts']['failed'] == 3
  assert len(attempts(os.path.dirname(failed[0]))) == 2
  assert len(attempts(by_run['Pong', 2]['run_dir'])) == 1


def test_exit_0_without_final_eval_is_a_failure(tmp_path, fake_train,
                                                monkeypatch, capsys):
  del fake_train
  monkeypatch.setenv('FAKE_NO_FINAL_EVAL', '1')
  summary = sweep.run_sweep(BBF_GIN, 'Pong', '0', tmp_path, report=False)
  assert summary['counts']['failed'] == 1 and summary['exit_code'] == 1
  assert 'exit code 0 but no final_eval.json' in capsys.readouterr().out


def test_a_run_going_on_elsewhere_is_not_started_twice(tmp_path, fake_train,
                                                       monkeypatch, capsys):
  del fake_train
  root = tmp_path / 'results'
  busy = root / 'bbf' / 'Pong' / '0'
  busy.mkdir(parents=True)
  monkeypatch.setattr(sweep_backends, 'LOCK_WAIT_S', 0.5)
  with open(busy / 'sweep.log', 'a') as log:  # As a live run holds it.
    fcntl.flock(log, fcntl.LOCK_EX)
    summary = sweep.run_sweep(BBF_GIN, 'Pong', '0-1', root, parallel=2,
                              report=False)
  assert summary['counts']['done'] == 1 and summary['counts']['failed'] == 1
  assert summary['failed_logs'] == [str(busy / 'sweep.log')]
  assert 'is locked by a process still running' in capsys.readouterr().out
  assert sweep_plan.run_status(busy) == 'new'
  assert (busy / 'sweep.log').read_text() == ''
  # Once that process is gone, the run goes.
  summary = sweep.run_sweep(BBF_GIN, 'Pong', '0-1', root, report=False)
  assert summary['counts']['done'] == 1 and summary['exit_code'] == 0


# Real runs -----------------------------------------------------------------


def _run_state(run_dirs):
  done = [d for d in run_dirs if os.path.exists(f'{d}/final_eval.json')]
  partial = {d: checkpoints.complete_numbers(f'{d}/checkpoints')[0]
             for d in run_dirs if d not in done
             and checkpoints.complete_numbers(f'{d}/checkpoints')}
  return done, partial


def test_killed_sweep_resumes(tmp_path, run_env):
  gin_files = [tiny_gin(tmp_path, c) for c in ('bbf', 'bbf_no_spr')]
  root = tmp_path / 'results'
  command = sweep_command(gin_files, 'Pong,Breakout', '0-1', root,
                          '--parallel', '2', '--report_reps', '100')
  run_dirs = [os.path.join(root, c, g, s) for c in ('bbf', 'bbf_no_spr')
              for g in ('Pong', 'Breakout') for s in ('0', '1')]
  with open(tmp_path / 'first.log', 'w') as log:
    first = subprocess.Popen(command, cwd=ROOT, stdout=log, env=run_env,
                             stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + TIMEOUT_S
  while True:
    assert first.poll() is None, (
        'the sweep ended before a run was half done:\n' +
        (tmp_path / 'first.log').read_text()[-3000:])
    assert time.time() < deadline
    done, partial = _run_state(run_dirs)
    if done and partial:
      # Freeze the group, look again (a run may just have finished), kill.
      os.killpg(first.pid, signal.SIGSTOP)
      done, partial = _run_state(run_dirs)
      if done and partial:
        os.killpg(first.pid, signal.SIGKILL)
        break
      os.killpg(first.pid, signal.SIGCONT)
    time.sleep(0.05)
  first.wait()
  for d in run_dirs:  # The killed runs are gone once their logs are free.
    if os.path.exists(f'{d}/sweep.log'):
      with open(f'{d}/sweep.log') as log:
        assert sweep_backends.try_lock(log, 120), d
  mtimes = {d: os.stat(f'{d}/final_eval.json').st_mtime_ns for d in done}

  second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False, env=run_env)
  assert second.returncode == 0, second.stdout + second.stderr[-3000:]
  out = second.stdout
  new = 8 - len(done) - len(partial)
  assert f'8 runs: {new} new, {len(partial)} to resume, {len(done)} done.' in (
      out)
  assert (f'{new} done, {len(partial)} resumed, {len(done)} skipped (already '
          'done), 0 failed.') in out
  assert len([l for l in out.splitlines() if l.startswith('[')]) == 8
  for d in done:  # Skipped: not run again.
    assert os.stat(f'{d}/final_eval.json').st_mtime_ns == mtimes[d]
    assert len(attempts(d)) == 1
    config, game, seed = d.split(os.sep)[-3:]
    assert f'{config} {game} seed {seed}: skipped' in out
  for d, number in partial.items():  # Resumed from the newest checkpoint.
    with open(f'{d}/run_info.json') as f:
      launches = json.load(f)['launches']
    assert [l['resumed_from_checkpoint'] for l in launches] == [None, number]
    assert '(resume)' in attempts(d)[-1]
  for d in run_dirs:
    with open(f'{d}/final_eval.json') as f:
      final = json.load(f)
    assert final['env_steps'] == 60 and final['seed'] == int(d[-1])
    assert final['game'] == d.split(os.sep)[-2]

  per_game = pd.read_csv(root / 'report' / 'per_game.csv')
  ours = per_game[~per_game.agent.str.startswith('paper:')]
  assert sorted(zip(ours.agent, ours.game, ours.runs)) == [
      (c, g, 2) for c in ('bbf', 'bbf_no_spr') for g in ('Breakout', 'Pong')]
  assert (root / 'report' / 'report.md').exists()

  # A third time: nothing to do.
  third = subprocess.run(command + ['--no_report'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         check=False)
  assert third.returncode == 0
  assert '0 done, 0 resumed, 8 skipped (already done), 0 failed.' in (
      third.stdout)


def test_sigterm_terminates_runs(tmp_path, run_env):
  gin_file = tiny_gin(tmp_path, 'bbf')
  root = tmp_path / 'results'
  proc = subprocess.Popen(
      sweep_command([gin_file], 'Pong', '0-1', root, '--parallel', '2'),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=run_env)
  deadline = time.time() + 120
  while len(children(proc.pid)) < 2:
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  runs = children(proc.pid)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, out
  assert not any(alive(pid) for pid in runs)
  assert '0 failed, 2 interrupted, 0 not started.' in out
  for seed in ('0', '1'):
    run_dir = root / 'bbf' / 'Pong' / seed
    assert f'exit code -{int(signal.SIGTERM)}' in (run_dir / 'sweep.log'
                                                   ).read_text()
    assert sweep_plan.run_status(run_dir) == 'new'


@pytest.fixture
def ray_env(run_env):
  """run_env plus a token of its own for Ray's token authentication.

  Ray >= 2.59 turns token authentication on for a `ray start` cluster when
  ~/.ray/auth_token exists (a local ray.init() writes it), while a driver
  connecting by address sends no token unless told: both sides get one here,
  so the test does not depend on that file.
  """
  return {**run_env, 'RAY_AUTH_MODE': 'token',
          'RAY_AUTH_TOKEN': secrets.token_hex(32)}


@pytest.fixture
def ray_address(ray_env):
  """A local Ray instance of 2 CPUs of its own, stopped afterwards.

  Not `ray stop`, which would stop every Ray instance of this user: the
  instance runs under `ray start --block`, whose SIGTERM stops its processes.
  """
  pytest.importorskip('ray')
  temp_dir = tempfile.mkdtemp(prefix='ray', dir='/tmp')  # Short socket paths.
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  ray_bin = os.path.join(os.path.dirname(sys.executable), 'ray')
  log = open(os.path.join(temp_dir, 'start.log'), 'w')

  def read_log():
    with open(log.name) as f:
      return f.read()

  head = subprocess.Popen(
      [ray_bin, 'start', '--head', '--block', '--num-cpus', '2',
       '--include-dashboard=false', '--disable-usage-stats', '--port',
       str(port), '--temp-dir', temp_dir], stdout=log, env=ray_env,
      stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.time() + 120
    while 'Ray runtime started' not in read_log():
      assert head.poll() is None and time.time() < deadline, read_log()
      time.sleep(0.2)
    yield f'127.0.0.1:{port}'
  finally:
    head.terminate()
    try:
      head.wait(timeout=60)
    except subprocess.TimeoutExpired:
      pass
    try:
      os.killpg(head.pid, signal.SIGKILL)  # Whatever did not stop.
    except ProcessLookupError:
      pass
    head.wait()
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_on_ray(tmp_path, ray_address, ray_env):
  gin_file = tiny_gin(tmp_path, 'bbf')
  root = tmp_path / 'results'
  result = subprocess.run(
      sweep_command([gin_file], 'Pong', '0-1', root, '--ray', 'auto',
                    '--cpus_per_run', '1', '--no_report'),
      cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
      check=False, env={**ray_env, 'RAY_ADDRESS': ray_address})
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert 'Running them as Ray tasks (auto).' in result.stdout
  assert '2 done, 0 resumed, 0 skipped (already done), 0 failed.' in (
      result.stdout)
  for seed in ('0', '1'):
    run_dir = root / 'bbf' / 'Pong' / seed
    (header,) = attempts(run_dir)
    assert 'executor: ray task ' in header
    with open(run_dir / 'final_eval.json') as f:
      assert json.load(f)['seed'] == int(seed)


MINATAR_GIN = str(ROOT / 'gin_configs' / 'minatar' / 'bbf.gin')
MINATAR_DQN_GIN = str(ROOT / 'gin_configs' / 'minatar' / 'dqn.gin')


def test_parse_minatar_games():
  assert sweep_plan.parse_games('breakout, Space_Invaders,minatar-asterix',
                                'minatar') == [
                               'minatar-breakout', 'minatar-space_invaders',
                               'minatar-asterix']
  assert sweep_plan.parse_games('minatar', 'minatar') == [
      'minatar-asterix', 'minatar-breakout', 'minatar-freeway',
      'minatar-seaquest', 'minatar-space_invaders']
  with pytest.raises(ValueError, match="Unknown MinAtar game.*'Pong'"):
    sweep_plan.parse_games('breakout,Pong', 'minatar')
  with pytest.raises(ValueError, match='twice'):
    sweep_plan.parse_games('breakout,minatar-breakout', 'minatar')
  # 'atari100k' is not a MinAtar selection, nor 'minatar' an Atari one.
  with pytest.raises(ValueError, match='Unknown MinAtar'):
    sweep_plan.parse_games('atari100k', 'minatar')
  with pytest.raises(ValueError, match='Unknown Atari 100k'):
    sweep_plan.parse_games('minatar', 'atari')


def test_plan_minatar_runs(tmp_path):
  runs = sweep_plan.plan_runs([MINATAR_GIN, MINATAR_DQN_GIN],
                              'breakout,seaquest', '0-1', tmp_path)
  assert len(runs) == 2 * 2 * 2
  run = runs[0]
  # The directory carries the domain; the binding the package's own name.
  assert run.game == 'minatar-breakout'
  assert run.run_dir == os.path.join(tmp_path, 'bbf', 'minatar-breakout', '0')
  assert run.bindings == ('create_minatar_environment.game_name="breakout"',
                          'BBFAgent.seed=0')
  dqn = [r for r in runs if r.config == 'dqn' and r.seed == 1][-1]
  assert dqn.bindings == ('create_minatar_environment.game_name="seaquest"',
                          'JaxDQNAgent.seed=1')
  # Atari and MinAtar in one sweep: refused, naming both.
  with pytest.raises(ValueError, match='mix Atari and MinAtar'):
    sweep_plan.plan_runs([BBF_GIN, MINATAR_GIN], 'breakout', '0', tmp_path)
  # Atari game names with a MinAtar config: refused.
  with pytest.raises(ValueError, match="Unknown MinAtar game.*'Pong'"):
    sweep_plan.plan_runs([MINATAR_GIN], 'Pong', '0', tmp_path)
