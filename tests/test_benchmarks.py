# coding=utf-8
"""benchmarks/train_step.py times the agent's own step, without Dopamine.

A lent GPU machine has JAX, Flax and Optax but no TensorFlow (its wheel is
too large to carry there), so the step benchmark builds the training state
itself instead of through BBFAgent. These tests hold it to the agent: the
same initial parameters, the same batch layout and the same losses and
updated parameters after one step; and its imports must stay free of
Dopamine and TensorFlow. benchmarks/device/gpu.sh, the one command a lent GPU
runs, is run here on the CPU at a tiny width, and so is benchmarks/loop.py
(real Pong), whose figures must agree with each other and with its
--prefetch_batches flag.
"""

import collections
import functools
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import learner
from bbf_dopamine import networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'train_step.py')
WIDTH, HIDDEN, ACTIONS, BATCH, GROUP, SEED = 0.25, 32, 4, 4, 1, 3


def _load():
  spec = importlib.util.spec_from_file_location('train_step_bench', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_step_benchmark_imports_neither_dopamine_nor_tensorflow():
  code = (
      'import importlib.util, sys\n'
      f'spec = importlib.util.spec_from_file_location("b", {SCRIPT!r})\n'
      'spec.loader.exec_module(importlib.util.module_from_spec(spec))\n'
      'print(sorted({m.split(".")[0] for m in sys.modules} &'
      ' {"dopamine", "tensorflow", "ale_py", "gym", "gymnasium"}))\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, cwd=ROOT)
  assert out.stdout.strip() == '[]', out.stdout


def _agent():
  network = functools.partial(networks.BBFNetwork, width_scale=WIDTH,
                              hidden_dim=HIDDEN)
  agent = agent_lib.BBFAgent(num_actions=ACTIONS, network=network, seed=SEED,
                             batch_size=BATCH, batches_to_group=GROUP,
                             replay_capacity=500, min_replay_history=50)
  rng = np.random.default_rng(0)
  for step in range(60):
    agent._replay.add(rng.integers(0, 255, (84, 84), np.uint8),
                      rng.integers(ACTIONS), float(rng.normal()),
                      step % 29 == 28, step % 29 == 28)
  return agent


def test_step_benchmark_builds_the_agents_state_and_step():
  bench = _load()
  config, state, batch = bench.build(WIDTH, HIDDEN, GROUP,
                                     num_actions=ACTIONS, batch_size=BATCH,
                                     seed=SEED)
  agent = _agent()
  _, agent_batch = agent._sample_batch()
  for name, ours, theirs in zip(learner.Batch._fields, batch, agent_batch):
    assert (np.shape(ours), np.asarray(ours).dtype) == (
        np.shape(theirs), np.asarray(theirs).dtype), name

  # Same seed, same key streams: identical initial parameters.
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)),
                                state.online_params,
                                agent._state.online_params)
  assert all(jax.tree_util.tree_leaves(same))

  # One step of each on the agent's batch: a default that differs between
  # the agent and the benchmark (learning rates, weight decay, spr_weight,
  # tau, double DQN, augmentation, ...) changes the losses or parameters.
  n, gamma = jnp.int32(10), jnp.float32(0.97)
  copy = lambda s: jax.tree_util.tree_map(jnp.copy, s)
  ours, our_metrics, our_priorities = learner.train(
      copy(state), agent_batch, n, gamma, config=config)
  theirs, their_metrics, their_priorities = learner.train(
      copy(agent._state), agent_batch, n, gamma, config=agent._config)
  for key in ('Loss', 'DQNLoss', 'SPRLoss'):
    np.testing.assert_allclose(our_metrics[key], their_metrics[key],
                               rtol=1e-6, err_msg=key)
  np.testing.assert_allclose(our_priorities, their_priorities, rtol=1e-6)
  # Compare the updates, not the parameters: weight decay moves a parameter
  # by lr * 0.1 = 1e-5 of itself, which a tolerance on parameters would hide.
  def updates(after, before):
    return jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
        after, before))
  for field in ('online_params', 'target_params'):
    for a, b in zip(updates(getattr(ours, field), getattr(state, field)),
                    updates(getattr(theirs, field),
                            getattr(agent._state, field))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-12, err_msg=field)


def test_device_script_writes_every_figure_of_each_setting(tmp_path):
  # The GPU call is one shot with a 15-minute budget: a flag or format error
  # found there costs the lease. Run the same script on the CPU, tiny.
  env = dict(os.environ, OUT=str(tmp_path / 'out'), WIDTHS='0.25',
             HIDDEN='32', REPEATS='1', PYTHON=sys.executable,
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'cache'))
  out = subprocess.run(['bash', 'benchmarks/device/gpu.sh'], cwd=ROOT,
                       env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  records = [json.loads(line) for line in
             (tmp_path / 'out' / 'gpu_train_step.jsonl').read_text().split(
                 '\n') if line]
  figures = collections.defaultdict(dict)
  for r in records:
    figures[(r['width_scale'], r['replay_ratio'],
             r['half_precision'])][r['figure']] = r['value']
  assert set(figures) == {(0.25, 64, False), (0.25, 256, False),
                          (0.25, 64, True)}
  for (_, replay_ratio, _), f in figures.items():
    assert set(f) == {'train_compile_s', 'act_compile_s', 'act_s_per_call',
                      'train_s_per_gradient_step',
                      'train_gradient_steps_per_s',
                      'train_flops_per_gradient_step',
                      'train_achieved_flops_per_s',
                      'projected_100k_train_hours'}
    step = f['train_s_per_gradient_step']
    assert f['train_gradient_steps_per_s'] == pytest.approx(1 / step)
    # 98k learning agent steps, replay_ratio / 32 gradient steps each.
    assert f['projected_100k_train_hours'] == pytest.approx(
        98_000 * (replay_ratio // 32) * step / 3600)
  # Widths 0.25 at RR 2 and RR 8 compile the same step: same FLOP count.
  assert (figures[(0.25, 64, False)]['train_flops_per_gradient_step'] ==
          figures[(0.25, 256, False)]['train_flops_per_gradient_step'])
  versions = (tmp_path / 'out' / 'gpu_env.txt').read_text()
  assert 'gin-config ' in versions and 'jax ' in versions
  assert 'width rr bf16' in out.stdout


@pytest.mark.parametrize('prefetch', [False, True])
def test_loop_benchmark_accounts_for_every_part(prefetch):
  """loop.py on real Pong: its figures agree with each other and the flag."""
  out = subprocess.run(
      [sys.executable, 'benchmarks/loop.py', '--width_scale=0.25',
       '--hidden_dim=32', '--replay_ratio=64', '--warmup=40', '--steps=6',
       f'--prefetch_batches={prefetch}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  f = {r['figure']: r['value'] for r in
       (json.loads(line) for line in out.stdout.splitlines()
        if line.startswith('{'))}
  parts = ('env', 'act', 'sample', 'priorities', 'replay_add', 'train',
           'other')
  per_step = 1 / f['loop_agent_steps_per_s']
  assert all(f[f'loop_{p}_s_per_agent_step'] >= 0 for p in parts)
  assert sum(f[f'loop_{p}_s_per_agent_step'] for p in parts) == (
      pytest.approx(per_step))
  assert f['loop_host_overhead_fraction'] == pytest.approx(
      1 - f['loop_train_s_per_agent_step'] / per_step)
  assert f['projected_100k_run_hours'] == pytest.approx(
      100_000 * per_step / 3600)
  drawn_ahead = f['loop_prefetch_s_per_agent_step']
  if prefetch:
    # The draw happens inside the call; the step's own path only checks it.
    assert 0 < drawn_ahead < f['loop_train_s_per_agent_step']
    assert f['loop_sample_s_per_agent_step'] < drawn_ahead / 5
  else:
    # prepare() is a no-op: only the timing wrapper's own microseconds.
    assert drawn_ahead < f['loop_sample_s_per_agent_step'] / 5
