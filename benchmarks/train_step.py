# coding=utf-8
"""Benchmarks BBF's jitted gradient step; prints one JSON line per figure.

  python benchmarks/train_step.py --width_scale 1 --replay_ratio 64

Figures: compile time of the training step and of action selection, steady
state gradient steps per second (median of --repeats timed calls after a
warm-up, `batches_to_group` minibatches per call), XLA's FLOP count per
gradient step and the achieved FLOP/s. Synthetic frames; the step's cost does
not depend on their content.
"""

import functools
import json
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import networks

flags.DEFINE_float('width_scale', 1.0, 'Impala width scale.')
flags.DEFINE_integer('hidden_dim', 2048, 'Hidden size.')
flags.DEFINE_integer('replay_ratio', 64, 'BBF replay ratio (64 = RR 2).')
flags.DEFINE_integer('batches_to_group', 2, 'Minibatches per jitted call.')
flags.DEFINE_integer('repeats', 5, 'Timed calls.')
FLAGS = flags.FLAGS


def emit(name, value, unit, **extra):
  record = {'figure': name, 'value': value, 'unit': unit,
            'width_scale': FLAGS.width_scale, 'hidden_dim': FLAGS.hidden_dim,
            'replay_ratio': FLAGS.replay_ratio,
            'batches_to_group': FLAGS.batches_to_group,
            'device': jax.devices()[0].device_kind,
            'jax': jax.__version__, 'machine': platform.processor() or
            platform.machine()}
  record.update(extra)
  print(json.dumps(record), flush=True)


def main(_):
  network = functools.partial(networks.BBFNetwork,
                              width_scale=FLAGS.width_scale,
                              hidden_dim=FLAGS.hidden_dim)
  agent = agent_lib.BBFAgent(num_actions=18, network=network,
                             replay_ratio=FLAGS.replay_ratio,
                             batches_to_group=FLAGS.batches_to_group,
                             replay_capacity=2000, min_replay_history=100)
  rng = np.random.default_rng(0)
  for step in range(400):
    agent._replay.add(rng.integers(0, 255, (84, 84), np.uint8),
                      rng.integers(18), float(rng.normal()), step % 97 == 96,
                      step % 97 == 96)
  _, batch = agent._sample_batch()
  n, gamma = jnp.int32(10), jnp.float32(0.97)
  state = agent._state

  start = time.perf_counter()
  compiled = learner.train.lower(state, batch, n, gamma,
                                 config=agent._config).compile()
  emit('train_compile_s', time.perf_counter() - start, 's')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float(cost.get('flops', float('nan'))) / (
      FLAGS.batches_to_group)

  start = time.perf_counter()
  learner.select_action.lower(agent.network_def, state.target_params,
                              agent.state[None], agent._rng, jnp.float32(0.),
                              18, False).compile()
  emit('act_compile_s', time.perf_counter() - start, 's')

  state, metrics, _ = learner.train(state, batch, n, gamma,
                                    config=agent._config)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    state, metrics, _ = learner.train(state, batch, n, gamma,
                                      config=agent._config)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  per_step = statistics.median(times) / FLAGS.batches_to_group
  emit('train_s_per_gradient_step', per_step, 's')
  emit('train_gradient_steps_per_s', 1.0 / per_step, '1/s')
  emit('train_flops_per_gradient_step', flops_per_step, 'FLOP')
  emit('train_achieved_flops_per_s', flops_per_step / per_step, 'FLOP/s')
  updates = FLAGS.replay_ratio // 32
  emit('projected_100k_train_hours', 98_000 * updates * per_step / 3600, 'h',
       note='gradient steps only, 98k learning agent steps')


if __name__ == '__main__':
  app.run(main)
