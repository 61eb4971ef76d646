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
"""

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
FLAGS = flags.FLAGS


def main(_):
  network = functools.partial(networks.BBFNetwork,
                              width_scale=FLAGS.width_scale,
                              hidden_dim=FLAGS.hidden_dim)
  env = atari_lib.create_atari_environment(FLAGS.game, sticky_actions=False)
  agent = agent_lib.BBFAgent(
      num_actions=env.action_space.n, network=network,
      replay_ratio=FLAGS.replay_ratio, batches_to_group=FLAGS.batches_to_group,
      min_replay_history=FLAGS.warmup, replay_capacity=100_000)

  train_time = [0.0]
  original_train = learner.train

  def timed_train(*args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(original_train(*args, **kwargs))
    train_time[0] += time.perf_counter() - start
    return out
  learner.train = timed_train

  def run(num_steps):
    done = 0
    action = agent.begin_episode(env.reset())
    while done < num_steps:
      observation, reward, terminal, _ = env.step(action)
      done += 1
      reward = float(np.clip(reward, -1, 1))
      if env.game_over or terminal:
        agent.end_episode(reward, terminal)
        action = agent.begin_episode(env.reset() if env.game_over
                                     else observation)
      else:
        action = agent.step(reward, observation)

  run(FLAGS.warmup + 5)  # fills replay and compiles
  train_time[0] = 0.0
  start = time.perf_counter()
  run(FLAGS.steps)
  loop = time.perf_counter() - start
  steps_per_s = FLAGS.steps / loop
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  common = {'width_scale': FLAGS.width_scale, 'hidden_dim': FLAGS.hidden_dim,
            'replay_ratio': FLAGS.replay_ratio, 'game': FLAGS.game,
            'device': device.device_kind, 'jax': jax.__version__}
  for name, value, unit in (
      ('loop_agent_steps_per_s', steps_per_s, '1/s'),
      ('loop_host_overhead_fraction', 1.0 - train_time[0] / loop, '1'),
      ('peak_rss_bytes',
       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'B'),
      ('device_peak_bytes',
       stats.get('peak_bytes_in_use') if stats else None, 'B'),
      ('projected_100k_run_hours', 100_000 / steps_per_s / 3600, 'h')):
    print(json.dumps(dict(figure=name, value=value, unit=unit, **common)),
          flush=True)


if __name__ == '__main__':
  app.run(main)
