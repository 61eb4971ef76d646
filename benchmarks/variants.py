# coding=utf-8
r"""Cost of each BBF variant's gin file beside plain BBF: JSON lines.

  python benchmarks/variants.py \
      --gin_files gin_configs/minatar/bbf.gin,gin_configs/minatar/bbf_redo.gin \
      [--gin_bindings 'BBFNetwork.width_scale = 1'] [--repeats 5]

For each file, the agent is built from the file itself (its network, head,
ReDo and pruning settings), its replay filled with random frames of the
file's observation shape, and one grouped minibatch drawn. Figures:
  * params: parameters of the online network; prunable_params and
    params_at_end (non-zero parameters once pruning reaches its target; the
    pruned run still computes dense, so FLOPs do not drop);
  * flops_per_gradient_step: XLA's cost analysis of the jitted training step
    (which includes applying the pruning masks), per gradient step;
  * gradient_steps_per_s / agent_steps_per_s: median of --repeats timed
    calls after a warm-up (agent steps: gradient steps / updates per step);
  * redo_s and redo_overhead: one ReDo pass (dormancy on a replay batch,
    re-initialisation, moment reset) and its share of training time at the
    file's interval; prune_s / prune_overhead likewise for one pruning step.
"""

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import gin
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import minatar_env
from bbf_dopamine import networks

flags.DEFINE_list('gin_files', [], 'Gin files of the variants.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra bindings for every file.')
flags.DEFINE_integer('repeats', 5, 'Timed calls of the training step.')
FLAGS = flags.FLAGS


def emit(config, name, value, unit, **extra):
  record = {'config': config, 'figure': name, 'value': value, 'unit': unit,
            'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
            'machine': platform.processor() or platform.machine()}
  record.update(extra)
  print(json.dumps(record), flush=True)


def build_agent(gin_file):
  """The file's BBFAgent on its environment's shapes, with random replay."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [gin_file], FLAGS.gin_bindings + ['BBFAgent.replay_capacity = 2000',
                                        'BBFAgent.min_replay_history = 100'],
      skip_unknown=True)
  minatar = 'minatar' in gin_file
  if minatar:
    game = gin.query_parameter('create_minatar_environment.game_name')
    env = minatar_env.MinAtarEnvironment(game)
    shape, actions = env.observation_shape, env.action_space.n
    frame = lambda rng: (rng.random(shape) < 0.1).astype(np.uint8) * 255
  else:
    shape, actions = (84, 84), 18
    frame = lambda rng: rng.integers(0, 255, shape, np.uint8)
  agent = agent_lib.BBFAgent(num_actions=actions, observation_shape=shape)
  rng = np.random.default_rng(0)
  for step in range(400):
    end = step % 97 == 96
    agent._replay.add(frame(rng), rng.integers(actions),  # pylint: disable=protected-access
                      float(rng.normal()), end, end)
  return agent


def bench(gin_file):
  config = os.path.relpath(gin_file)
  agent = build_agent(gin_file)
  params = agent.online_params
  emit(config, 'params', networks.count_parameters(params), 'parameters')
  pruner = agent._pruner  # pylint: disable=protected-access
  if pruner.enabled:
    sizes = [m.size for m in jax.tree_util.tree_leaves(agent._state.masks)  # pylint: disable=protected-access
             if m.ndim]
    pruned = sum(int(np.floor(pruner.target * n)) for n in sizes)
    emit(config, 'prunable_params', sum(sizes), 'parameters')
    emit(config, 'params_at_end', networks.count_parameters(params) - pruned,
         'parameters', note='non-zero once pruning reaches its target')

  _, batch = agent._sample_batch()  # pylint: disable=protected-access
  n, gamma = jnp.int32(10), jnp.float32(0.97)
  state, cfg = agent._state, agent._config  # pylint: disable=protected-access
  start = time.perf_counter()
  compiled = learner.train.lower(state, batch, n, gamma, config=cfg).compile()
  emit(config, 'train_compile_s', time.perf_counter() - start, 's')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  group = agent.batches_to_group
  emit(config, 'flops_per_gradient_step',
       float(cost.get('flops', float('nan'))) / group, 'FLOP')
  state, metrics, _ = learner.train(state, batch, n, gamma, config=cfg)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    state, metrics, _ = learner.train(state, batch, n, gamma, config=cfg)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  per_step = statistics.median(times) / group
  emit(config, 'gradient_steps_per_s', 1.0 / per_step, '1/s')
  emit(config, 'agent_steps_per_s',
       1.0 / (per_step * agent.num_updates_per_step), '1/s',
       note='training step only')
  agent._state = state  # pylint: disable=protected-access

  recycler = agent._redo  # pylint: disable=protected-access
  if recycler.every:
    for _ in range(2):  # The first call compiles; the second is timed.
      start = time.perf_counter()
      agent._recycle()  # pylint: disable=protected-access
      jax.block_until_ready(agent.online_params)
    redo_s = time.perf_counter() - start
    emit(config, 'redo_s', redo_s, 's')
    emit(config, 'redo_overhead', redo_s / (recycler.every * per_step),
         'fraction', every=recycler.every)
  if pruner.enabled:
    for sparsity in (pruner.target / 2, pruner.target):  # compile, then time
      start = time.perf_counter()
      agent._prune(sparsity)  # pylint: disable=protected-access
      jax.block_until_ready(agent.online_params)
    prune_s = time.perf_counter() - start
    emit(config, 'prune_s', prune_s, 's')
    emit(config, 'prune_overhead', prune_s / (pruner.frequency * per_step),
         'fraction', every=pruner.frequency)


def main(argv):
  del argv
  for gin_file in FLAGS.gin_files:
    bench(gin_file)


if __name__ == '__main__':
  app.run(main)
