# coding=utf-8
"""Checkpoint size / write / restore time, and the numerics guard's cost.

  python benchmarks/checkpoint.py --width_scale 4 --transitions 100000

Prints one JSON line per figure. A BBFAgent with bbf.gin's replay capacity
(200k) holds `--transitions` random frames (random pixels: the worst case
for any compression; our files are not compressed), then the Atari100kRunner
path writes one checkpoint (agent bundle + replay file + ckpt.N + sentinel,
fsynced) and a fresh agent restores it.

Numerics guard: the three `isfinite` reductions the jitted step adds (loss,
every gradient, every parameter), timed as a separate jitted call on
parameter-sized trees (an upper bound: inside the step XLA fuses them), plus
the host-side check, against the median time of the whole gradient step.
"""

import functools
import json
import platform
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import checkpoints
from bbf_dopamine import networks

flags.DEFINE_float('width_scale', 4.0, 'Impala width scale.')
flags.DEFINE_integer('transitions', 100_000, 'Transitions in the replay.')
flags.DEFINE_integer('capacity', 200_000, 'Replay capacity (bbf.gin).')
flags.DEFINE_integer('repeats', 3, 'Timed gradient steps / writes.')
flags.DEFINE_string('dir', None, 'Where to write (default: a temp dir).')
FLAGS = flags.FLAGS


def emit(name, value, unit, **extra):
  record = {'figure': name, 'value': value, 'unit': unit,
            'width_scale': FLAGS.width_scale,
            'transitions': FLAGS.transitions, 'capacity': FLAGS.capacity,
            'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
            'machine': platform.processor() or platform.machine()}
  record.update(extra)
  print(json.dumps(record), flush=True)


def make_agent():
  network = functools.partial(networks.BBFNetwork,
                              width_scale=FLAGS.width_scale)
  return agent_lib.BBFAgent(num_actions=18, network=network,
                            replay_capacity=FLAGS.capacity,
                            min_replay_history=100)


def fill(agent):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (1000, 84, 84), np.uint8)
  for step in range(FLAGS.transitions):
    agent._replay.add(frames[step % 1000], step % 18, 0.0,  # pylint: disable=protected-access
                      step % 997 == 996, step % 997 == 996)


def checkpoint_figures(agent, directory):
  writes, sizes = [], []
  for repeat in range(FLAGS.repeats):
    number = FLAGS.transitions + repeat
    start = time.perf_counter()
    data = agent.bundle_and_checkpoint(directory, number)
    checkpoints.save(directory, number, data, keep=2)
    writes.append(time.perf_counter() - start)
    sizes.append(checkpoints.size(directory, number))
  emit('checkpoint_size', sizes[-1] / 2**20, 'MiB')
  emit('checkpoint_write_time', statistics.median(writes), 's')
  emit('replay_memory_full_buffer', agent.checkpoint_nbytes / 2**20, 'MiB')
  other = make_agent()
  start = time.perf_counter()
  number, _ = checkpoints.load_newest(
      directory, lambda n, d: other.unbundle(directory, n, d))
  emit('checkpoint_restore_time', time.perf_counter() - start, 's',
       checkpoint=number)


def guard_figures(agent):
  params = agent.online_params
  finite = lambda tree: jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))
  guard = jax.jit(lambda g, p, loss: (finite(g), finite(p),
                                      jnp.isfinite(loss)))
  jax.block_until_ready(guard(params, params, jnp.float32(1.0)))
  times = []
  for _ in range(20):
    start = time.perf_counter()
    jax.block_until_ready(guard(params, params, jnp.float32(1.0)))
    times.append(time.perf_counter() - start)
  guard_time = statistics.median(times) * agent.batches_to_group
  metrics = {k: np.ones(agent.batches_to_group, bool) for k in
             ('FiniteLoss', 'FiniteGradients', 'FiniteParameters')}
  start = time.perf_counter()
  for _ in range(1000):
    agent._check_finite(metrics, None, None, 3, 0.99)  # pylint: disable=protected-access
  host_time = (time.perf_counter() - start) / 1000
  agent._train_step()  # pylint: disable=protected-access  # compile
  steps = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    agent._train_step()  # pylint: disable=protected-access
    steps.append(time.perf_counter() - start)
  step_time = statistics.median(steps)  # one agent step = G gradient steps
  emit('nan_guard_time_per_agent_step', guard_time + host_time, 's',
       jitted=guard_time, host=host_time)
  emit('train_time_per_agent_step', step_time, 's')
  emit('nan_guard_overhead', 100 * (guard_time + host_time) / step_time, '%')


def main(_):
  directory = FLAGS.dir or tempfile.mkdtemp(prefix='bbf_ckpt_bench_')
  agent = make_agent()
  fill(agent)
  try:
    checkpoint_figures(agent, directory)
  finally:
    if FLAGS.dir is None:
      shutil.rmtree(directory)
  guard_figures(agent)


if __name__ == '__main__':
  app.run(main)
