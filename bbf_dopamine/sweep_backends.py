# coding=utf-8
"""Where the runs of a sweep execute: local subprocesses or Ray tasks.

Both backends run the same thing, `execute_run`: one run's train command as a
subprocess whose stdout and stderr are appended to `<run>/sweep.log` after a
header line naming the attempt and the executor. They differ only in who
decides when and where a run starts:

  * `run_local`: at most `parallel` runs at once on this machine, each in a
    worker slot; with GPUs every slot owns one GPU share (`device_envs`).
  * `run_ray`: one Ray task per run (`num_cpus`, `num_gpus` per task); Ray's
    scheduler places them, on this machine or a cluster.

Children stay in the sweep's process group, so killing the group kills the
whole sweep; SIGTERM or Ctrl-C to the sweep alone terminates its children
(`Interrupted`). Runs are crash-safe to kill (checkpoints.py) and the next
sweep resumes them.
"""

import dataclasses
import fcntl
import json
import math
import os
import platform
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

LOG_FILE = 'sweep.log'
FINAL_EVAL_FILE = 'final_eval.json'  # runner.FINAL_EVAL_FILE, without JAX.
# A share of the GPU is left to the CUDA context and to other processes.
GPU_MEMORY_SHARE = 0.9
TERMINATE_GRACE_S = 10.0
# A run killed just before (with its sweep) can take seconds to exit and
# release its log's lock.
LOCK_WAIT_S = 10.0


class Interrupted(Exception):
  """The sweep got SIGTERM or SIGINT; running children were terminated."""

  def __init__(self, signum):
    super().__init__(f'interrupted by signal {signum}')
    self.signum = signum


@dataclasses.dataclass
class Result:
  """What one executed run left behind."""
  returncode: Optional[int]  # None: not started, or lost with its task.
  wall_s: float
  executor: str  # 'local slot 0' or 'ray task <id> on node <id>'.
  mean_return: Optional[float]
  has_final_eval: bool
  # Ended by the sweep's own stop (SIGTERM / Ctrl-C), not by a failure.
  interrupted: bool = False
  error: Optional[str] = None  # Why it did not run, if it did not.


def detect_gpus() -> List[str]:
  """CUDA device ids visible to runs started from here (empty: none).

  `nvidia-smi -L` counts the machine's GPUs without importing JAX; a set
  CUDA_VISIBLE_DEVICES restricts them, as it would restrict a single run.
  """
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    ids = [d.strip() for d in visible.split(',')]
    return [d for d in ids if d not in ('', '-1')]
  if shutil.which('nvidia-smi') is None:
    return []
  try:
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True,
                             text=True, timeout=30, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return []
  if listing.returncode != 0:
    return []
  lines = [l for l in listing.stdout.splitlines() if l.startswith('GPU ')]
  return [str(i) for i in range(len(lines))]


def default_parallel(num_gpus: int, runs_per_gpu: int) -> int:
  """Runs at once: every GPU share, else half the cores (JAX multithreads)."""
  if num_gpus:
    return num_gpus * runs_per_gpu
  return max(1, (os.cpu_count() or 1) // 2)


def device_envs(num_slots: int, gpu_ids: Sequence[str],
                runs_per_gpu: int) -> List[Dict[str, str]]:
  """Environment variables of each worker slot of a local sweep.

  Slot i runs on GPU gpu_ids[i % num_gpus], so the runs going on at any time
  spread evenly over the GPUs. Each run may preallocate 0.9 / k of its GPU's
  memory, k the most slots sharing one GPU (at least runs_per_gpu):
  preallocation stays on (JAX's default), so a run that does not fit fails at
  its start instead of hours in. TensorFlow, imported by Dopamine's binary,
  would otherwise take the whole GPU.

  Args:
    num_slots: runs at once (--parallel).
    gpu_ids: CUDA device ids; empty for CPU only.
    runs_per_gpu: runs meant to share one GPU.

  Returns:
    One dict per slot (empty dicts without GPUs).
  """
  if num_slots < 1 or runs_per_gpu < 1:
    raise ValueError(f'num_slots ({num_slots}) and runs_per_gpu '
                     f'({runs_per_gpu}) must be >= 1.')
  if not gpu_ids:
    return [{} for _ in range(num_slots)]
  sharing = max(runs_per_gpu, math.ceil(num_slots / len(gpu_ids)))
  fraction = f'{GPU_MEMORY_SHARE / sharing:.3g}'
  return [{'CUDA_VISIBLE_DEVICES': str(gpu_ids[i % len(gpu_ids)]),
           'XLA_PYTHON_CLIENT_MEM_FRACTION': fraction,
           'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}
          for i in range(num_slots)]


def ray_gpu_env(gpus_per_run: float) -> Dict[str, str]:
  """A Ray task's extra environment; Ray itself sets CUDA_VISIBLE_DEVICES."""
  if gpus_per_run <= 0:
    return {}
  share = GPU_MEMORY_SHARE * min(gpus_per_run, 1.0)
  return {'XLA_PYTHON_CLIENT_MEM_FRACTION': f'{share:.3g}',
          'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}


def read_mean_return(run_dir: str) -> Optional[float]:
  try:
    with open(os.path.join(run_dir, FINAL_EVAL_FILE)) as f:
      return float(json.load(f)['mean_return'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def try_lock(file, wait_s: float) -> bool:
  """Takes an exclusive flock on file, trying for up to wait_s seconds."""
  deadline = time.time() + wait_s
  while True:
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      if time.time() >= deadline:
        return False
      time.sleep(0.2)


def execute_run(command: Sequence[str], run_dir: str, env: Dict[str, str],
                executor: str, status: str,
                started: Optional[Callable[[subprocess.Popen], None]] = None,
                cwd: Optional[str] = None) -> Result:
  """Runs one train command to its end, logging into run_dir/sweep.log.

  Args:
    command: the train command (argv).
    run_dir: the run's base_dir.
    env: variables added to this process's environment.
    executor: who runs it, for the log header and the summary.
    status: the run's state before this attempt (new / resume).
    started: called with the Popen right after the start (to track it).
    cwd: working directory of the command.

  Returns:
    The attempt's Result.
  """
  os.makedirs(run_dir, exist_ok=True)
  start = time.time()
  with open(os.path.join(run_dir, LOG_FILE), 'a') as log:
    # The lock belongs to the open log, which is the child's stdout: it holds
    # while the run lives, even if this sweep is killed, so a second sweep
    # over the same root cannot start the run twice.
    if not try_lock(log, LOCK_WAIT_S):
      return Result(None, 0.0, executor, None, False,
                    error=f'not started: {log.name} is locked by a process '
                    'still running this run')
    log.write(f'=== sweep attempt {time.strftime("%Y-%m-%dT%H:%M:%S%z")} '
              f'({status}) executor: {executor} host: {platform.node()}\n'
              f'$ {shlex.join(command)}\n')
    log.flush()
    proc = subprocess.Popen(list(command), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env}, cwd=cwd)
    if started is not None:
      started(proc)
    try:
      returncode = proc.wait()
    except BaseException:
      # Ray's cancel lands here as KeyboardInterrupt: take the run along.
      _terminate([proc])
      raise
    wall = time.time() - start
    log.write(f'=== exit code {returncode} after {wall:.1f} s (pid '
              f'{proc.pid})\n')
  return Result(returncode, wall, executor, read_mean_return(run_dir),
                os.path.isfile(os.path.join(run_dir, FINAL_EVAL_FILE)))


def _terminate(procs):
  """SIGTERM, then SIGKILL whatever is still alive after the grace period."""
  for proc in procs:
    if proc.poll() is None:
      proc.terminate()
  deadline = time.time() + TERMINATE_GRACE_S
  for proc in procs:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


class _Signals:
  """Records SIGTERM and SIGINT while active (main thread only).

  The handler only records the signal; the polling loops below check it.
  Raising from the handler instead would surface inside Ray's C++ wait as a
  SystemError.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._old[signum] = signal.signal(signum, self._record)
    return self

  def _record(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for signum, handler in self._old.items():
      signal.signal(signum, handler)


def run_local(jobs: Sequence, parallel: int,
              envs: Sequence[Dict[str, str]],
              on_result: Callable[[object, Result], None]) -> None:
  """Runs `jobs` as subprocesses, at most `parallel` at once.

  Args:
    jobs: runs (with .command, .run_dir, .status), started in this order.
    parallel: worker slots.
    envs: each slot's extra environment (`device_envs`).
    on_result: called in this thread with (job, Result) as runs end.

  Raises:
    Interrupted: SIGTERM / SIGINT; children are terminated first and the
      runs they were doing reported to on_result as interrupted.
  """
  todo, results = queue.Queue(), queue.Queue()
  for job in jobs:
    todo.put(job)
  stop, lock, running = threading.Event(), threading.Lock(), set()

  def track(proc):
    with lock:
      running.add(proc)
    if stop.is_set():  # Started while the sweep was being stopped.
      proc.terminate()

  def worker(slot):
    while not stop.is_set():
      try:
        job = todo.get_nowait()
      except queue.Empty:
        return
      try:
        result = execute_run(job.command, job.run_dir, envs[slot],
                             f'local slot {slot}', job.status, track)
      except Exception as e:  # pylint: disable=broad-except
        result = Result(None, 0.0, f'local slot {slot}', None, False,
                        error=f'could not run: {e!r}')
      if stop.is_set() and result.returncode != 0:
        result.interrupted = True
      results.put((job, result))

  threads = [threading.Thread(target=worker, args=(slot,), daemon=True)
             for slot in range(min(parallel, len(jobs)))]
  with _Signals() as signals:
    for thread in threads:
      thread.start()
    while any(t.is_alive() for t in threads) and signals.signum is None:
      try:
        on_result(*results.get(timeout=0.5))
      except queue.Empty:
        pass
    if signals.signum is not None:
      stop.set()
      with lock:
        procs = list(running)
      _terminate(procs)
    for thread in threads:
      thread.join()
    while not results.empty():  # Runs that ended last or while stopping.
      on_result(*results.get())
    if signals.signum is not None:
      raise Interrupted(signals.signum)


def _ray_task(command, run_dir, env, status):
  """Body of the Ray task: the same subprocess, on the node Ray chose."""
  import ray  # pylint: disable=g-import-not-at-top
  context = ray.get_runtime_context()
  executor = (f'ray task {context.get_task_id()} on node '
              f'{context.get_node_id()[:12]}')
  # The cluster's interpreter runs the command (paths may differ by node).
  command = [sys.executable] + list(command[1:])
  return execute_run(command, run_dir, env, executor, status)


def run_ray(jobs: Sequence, address: str, cpus_per_run: float,
            gpus_per_run: float,
            on_result: Callable[[object, Result], None]) -> None:
  """Runs every job as one Ray task; Ray schedules them.

  Args:
    jobs: as in run_local; run_dir must be on a file system every node sees.
    address: 'local' (start Ray here with this machine's CPUs), 'auto' or a
      cluster address such as ray://host:10001.
    cpus_per_run: num_cpus of each task.
    gpus_per_run: num_gpus of each task (fractions share a GPU).
    on_result: called with (job, Result) as tasks end.

  Raises:
    ImportError: Ray is not installed (pip install 'bbf-dopamine[sweep]').
    Interrupted: SIGTERM / SIGINT; the tasks are cancelled first.
  """
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--ray needs Ray: pip install 'ray[default]>=2.9' "
                      "(or bbf-dopamine[sweep]).") from e
  if address == 'local':
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
             logging_level='warning')
  else:
    ray.init(address=address, logging_level='warning')
  try:
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                      max_retries=0)(_ray_task)
    env = ray_gpu_env(gpus_per_run)
    pending = {task.remote(job.command, job.run_dir, env,
                           job.status): job for job in jobs}
    with _Signals() as signals:
      while pending and signals.signum is None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for ref in ready:
          job = pending.pop(ref)
          try:
            result = ray.get(ref)
          except Exception as e:  # pylint: disable=broad-except
            result = Result(None, 0.0, 'ray task', None, False,
                            error=f'Ray task failed: {e}')
          on_result(job, result)
      if signals.signum is not None:
        for ref in pending:
          ray.cancel(ref)  # KeyboardInterrupt in the task ends its child.
        if pending:
          ray.wait(list(pending), num_returns=len(pending),
                   timeout=TERMINATE_GRACE_S)
        for job in pending.values():
          on_result(job, Result(None, 0.0, 'ray task', None, False,
                                interrupted=True, error='Ray task cancelled'))
        raise Interrupted(signals.signum)
  finally:
    ray.shutdown()
