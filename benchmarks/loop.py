# coding=utf-8
"""Benchmarks BBF's whole training loop on a real ALE game; JSON lines out.

  python benchmarks/loop.py --width_scale 1 --replay_ratio 64 --steps 100

Runs the agent through Dopamine's begin_episode / step / end_episode contract
on real Atari frames (Dopamine's AtariPreprocessing: frame skip 4, 84x84,
terminal on life loss), once learning has started. Reports agent steps per
second of the whole loop (environment, replay writes and sampling, priority
updates, acting, training), the fraction of loop time spent outside the
jitted training step (host overhead), peak resident memory, device memory on
an accelerator, and the projected wall-clock of a 100k-step run.

It also splits the loop's time per agent step into its parts: environment,
action selection (a jitted forward pass, which a GPU would run), replay
sampling, priority updates, replay writes, the training step, and the rest
(frame stacking, schedules, Python). The parts that stay on the host when
the network runs on a GPU are what a GPU run's wall-clock cannot go below
(benchmarks/device/README.md). With --prefetch_batches the next batch is
drawn while the training call runs: that time is reported as `prefetch` and
is part of `train`, not added to the other parts.
"""

import collections
import functools
import json
import resource
import time

from absl import app
from absl import flags
from dopamine.discrete_domains import atari_lib
import jax
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import networks

flags.DEFINE_float('width_scale', 1.0, 'Impala width scale.')
flags.DEFINE_integer('hidden_dim', 2048, 'Hidden size.')
flags.DEFINE_integer('replay_ratio', 64, 'BBF replay ratio (64 = RR 2).')
flags.DEFINE_integer('batches_to_group', 2, 'Minibatches per jitted call.')
flags.DEFINE_integer('warmup', 300, 'Agent steps before learning starts.')
flags.DEFINE_integer('steps', 100, 'Timed agent steps after warm-up.')
flags.DEFINE_string('game', 'Pong', 'ALE game.')
flags.DEFINE_bool('prefetch_batches', False,
                  'Draw the next replay batch while the training call runs '
                  '(BBFAgent.prefetch_batches).')
FLAGS = flags.FLAGS


def main(_):
  network = functools.partial(networks.BBFNetwork,
                              width_scale=FLAGS.width_scale,
                              hidden_dim=FLAGS.hidden_dim)
  env = atari_lib.create_atari_environment(FLAGS.game, sticky_actions=False)
  agent = agent_lib.BBFAgent(
      num_actions=env.action_space.n, network=network,
      replay_ratio=FLAGS.replay_ratio, batches_to_group=FLAGS.batches_to_group,
      min_replay_history=FLAGS.warmup, replay_capacity=100_000,
      prefetch_batches=FLAGS.prefetch_batches)

  seconds = collections.defaultdict(float)  # part -> time in the loop

  def timed(part, fn, block=False):
    def wrapper(*args, **kwargs):
      start = time.perf_counter()
      out = fn(*args, **kwargs)
      if block:  # device work is asynchronous: charge it to its own part
        out = jax.block_until_ready(out)
      seconds[part] += time.perf_counter() - start
      return out
    return wrapper
  # A call's time runs from its dispatch until its priorities are on the
  # host; with prefetching, the next batch is drawn inside it (timed again
  # below as 'prefetch', which is not added to the parts).
  agent._run_call = timed('train', agent._run_call)
  agent._prefetcher.prepare = timed('prefetch', agent._prefetcher.prepare)
  learner.select_action = timed('act', learner.select_action, block=True)
  agent._sample_batch = timed('sample', agent._sample_batch)
  agent._replay.update_priorities = timed('priorities',
                                          agent._replay.update_priorities)
  agent._replay.add = timed('replay_add', agent._replay.add)
  env_step = timed('env', env.step)

  def run(num_steps):
    done = 0
    action = agent.begin_episode(env.reset())
    while done < num_steps:
      observation, reward, terminal, _ = env_step(action)
      done += 1
      reward = float(np.clip(reward, -1, 1))
      if env.game_over or terminal:
        agent.end_episode(reward, terminal)
        action = agent.begin_episode(env.reset() if env.game_over
                                     else observation)
      else:
        action = agent.step(reward, observation)

  run(FLAGS.warmup + 5)  # fills replay and compiles
  seconds.clear()
  start = time.perf_counter()
  run(FLAGS.steps)
  loop = time.perf_counter() - start
  steps_per_s = FLAGS.steps / loop
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  common = {'width_scale': FLAGS.width_scale, 'hidden_dim': FLAGS.hidden_dim,
            'replay_ratio': FLAGS.replay_ratio, 'game': FLAGS.game,
            'prefetch_batches': FLAGS.prefetch_batches,
            'device': device.device_kind, 'jax': jax.__version__}
  for name, value, unit in (
      ('loop_agent_steps_per_s', steps_per_s, '1/s'),
      ('loop_host_overhead_fraction', 1.0 - seconds['train'] / loop, '1'),
      ('peak_rss_bytes',
       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'B'),
      ('device_peak_bytes',
       stats.get('peak_bytes_in_use') if stats else None, 'B'),
      ('projected_100k_run_hours', 100_000 / steps_per_s / 3600, 'h')):
    print(json.dumps(dict(figure=name, value=value, unit=unit, **common)),
          flush=True)
  overlapped = seconds.pop('prefetch', 0.0)
  seconds['other'] = loop - sum(seconds.values())
  seconds['prefetch'] = overlapped
  for part in ('env', 'act', 'sample', 'priorities', 'replay_add', 'train',
               'other', 'prefetch'):
    print(json.dumps(dict(figure=f'loop_{part}_s_per_agent_step',
                          value=seconds[part] / FLAGS.steps, unit='s',
                          **common)), flush=True)


if __name__ == '__main__':
  app.run(main)
