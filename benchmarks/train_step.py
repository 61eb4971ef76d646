# coding=utf-8
"""Benchmarks BBF's jitted gradient step; prints one JSON line per figure.

  python benchmarks/train_step.py --width_scale 1 --replay_ratio 64

Figures: compile time of the training step and of action selection, steady
state gradient steps per second (median of --repeats timed calls after a
warm-up, `batches_to_group` minibatches per call), XLA's FLOP count per
gradient step and the achieved FLOP/s, the time of one action selection (the
agent's forward pass per agent step) and on a GPU the device's peak memory.
Synthetic frames; the step's cost does not depend on their content.

It builds the training state the way `BBFAgent` does (with the agent's
defaults, the official BBF.gin values) but imports neither Dopamine nor
TensorFlow: a lent GPU machine has JAX, Flax and Optax but no TensorFlow, and
TensorFlow's wheel is too large to carry there (benchmarks/device/README.md).
tests/test_benchmarks.py checks that this step equals the agent's.
"""

import json
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import learner
from bbf_dopamine import networks
from bbf_dopamine import optimizers

flags.DEFINE_float('width_scale', 1.0, 'Impala width scale.')
flags.DEFINE_integer('hidden_dim', 2048, 'Hidden size.')
flags.DEFINE_integer('replay_ratio', 64, 'BBF replay ratio (64 = RR 2).')
flags.DEFINE_integer('batches_to_group', 2, 'Minibatches per jitted call.')
flags.DEFINE_integer('repeats', 5, 'Timed calls.')
flags.DEFINE_bool('half_precision', False,
                  'bf16 computation, float32 parameters (the agent\'s '
                  'half_precision).')
FLAGS = flags.FLAGS

# BBFAgent's defaults (official BBF.gin): a window holds stack_size - 1 frames
# before s_t, then max(max_update_horizon, jumps) = 10 steps, then one more.
STACK_SIZE = 4
HORIZON = 10
OBSERVATION_SHAPE = (84, 84)


def build(width_scale, hidden_dim, batches_to_group, num_actions=18,
          batch_size=32, seed=0, half_precision=False):
  """Returns (config, state, batch) as BBFAgent(seed=seed) would build them.

  Same network, optimiser, learner settings and PRNG key streams as
  `BBFAgent.__init__` with its defaults; the batch is random frames, actions
  and rewards in the agent's batch layout (learner.Batch).
  """
  network_def = networks.BBFNetwork(
      num_actions=num_actions, num_atoms=51, dueling=True, noisy=False,
      width_scale=width_scale, hidden_dim=hidden_dim,
      dtype=jnp.bfloat16 if half_precision else jnp.float32)
  optimizer = optimizers.create_scaling_optimizer()
  config = learner.LearnerConfig(network=network_def, optimizer=optimizer)
  # The agent splits its seed into (init, learner, acting, reset) keys.
  key_init, key_learn, _, _ = jax.random.split(jax.random.PRNGKey(seed), 4)
  dummy = jnp.zeros((1,) + OBSERVATION_SHAPE + (STACK_SIZE,))
  params = jax.jit(network_def.init)(key_init, dummy)
  state = learner.initial_state(params, optimizer, key_learn)

  rng = np.random.default_rng(seed)
  window = STACK_SIZE - 1 + HORIZON + 1
  lead = (batches_to_group, batch_size)
  batch = learner.Batch(
      frames=rng.integers(0, 256, lead + (window,) + OBSERVATION_SHAPE,
                          np.uint8),  # (G, B, W, 84, 84)
      episode_ends=np.zeros(lead + (window,), np.uint8),  # (G, B, W)
      actions=rng.integers(0, num_actions, lead + (HORIZON,),
                           dtype=np.int32),  # (G, B, H)
      rewards=rng.normal(size=lead + (HORIZON,)).astype(np.float32),
      terminals=np.zeros(lead + (HORIZON,), np.float32),  # (G, B, H)
      probabilities=np.full(lead, 1e-3, np.float32))  # (G, B)
  return config, state, batch


def emit(name, value, unit, **extra):
  record = {'figure': name, 'value': value, 'unit': unit,
            'width_scale': FLAGS.width_scale, 'hidden_dim': FLAGS.hidden_dim,
            'replay_ratio': FLAGS.replay_ratio,
            'batches_to_group': FLAGS.batches_to_group,
            'half_precision': FLAGS.half_precision,
            'device': jax.devices()[0].device_kind,
            'jax': jax.__version__, 'machine': platform.processor() or
            platform.machine()}
  record.update(extra)
  print(json.dumps(record), flush=True)


def main(_):
  config, state, batch = build(FLAGS.width_scale, FLAGS.hidden_dim,
                               FLAGS.batches_to_group,
                               half_precision=FLAGS.half_precision)
  n, gamma = jnp.int32(10), jnp.float32(0.97)

  start = time.perf_counter()
  compiled = learner.train.lower(state, batch, n, gamma,
                                 config=config).compile()
  emit('train_compile_s', time.perf_counter() - start, 's')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float(cost.get('flops', float('nan'))) / (
      FLAGS.batches_to_group)

  # Action selection: one (1, 84, 84, 4) state through the network, once
  # per agent step; on a GPU it runs there, beside the training steps.
  observation = jnp.asarray(np.random.default_rng(1).integers(
      0, 256, (1,) + OBSERVATION_SHAPE + (STACK_SIZE,), np.uint8))
  act_args = lambda rng: (config.network, state.target_params, observation,
                          rng, jnp.float32(0.), config.network.num_actions,
                          False)
  act = lambda rng: learner.select_action(*act_args(rng),
                                          support=config.support)
  start = time.perf_counter()
  learner.select_action.lower(*act_args(state.rng),
                              support=config.support).compile()
  emit('act_compile_s', time.perf_counter() - start, 's')
  rng = state.rng
  jax.block_until_ready(act(rng))  # warm-up
  act_times = []
  for _ in range(10 * FLAGS.repeats):
    start = time.perf_counter()
    rng, action, _ = act(rng)
    int(action)  # the agent reads the action on the host at once
    act_times.append(time.perf_counter() - start)
  emit('act_s_per_call', statistics.median(act_times), 's')

  state, metrics, _ = learner.train(state, batch, n, gamma,
                                    config=config)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    state, metrics, _ = learner.train(state, batch, n, gamma, config=config)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  per_step = statistics.median(times) / FLAGS.batches_to_group
  emit('train_s_per_gradient_step', per_step, 's')
  emit('train_gradient_steps_per_s', 1.0 / per_step, '1/s')
  emit('train_flops_per_gradient_step', flops_per_step, 'FLOP')
  emit('train_achieved_flops_per_s', flops_per_step / per_step, 'FLOP/s')
  device = jax.devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    emit('device_peak_bytes', stats.get('peak_bytes_in_use'), 'B')
  updates = FLAGS.replay_ratio // 32
  emit('projected_100k_train_hours', 98_000 * updates * per_step / 3600, 'h',
       note='gradient steps only, 98k learning agent steps')


if __name__ == '__main__':
  app.run(main)
