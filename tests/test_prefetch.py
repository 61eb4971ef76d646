# coding=utf-8
"""Tests of bbf_dopamine/prefetch.py: batches drawn while the device trains.

The replay-level test drives a small buffer through test_replay's stream
(with time-limit cuts and many wraps of the circular cursor) in the agent's
order: write a transition, take the call's batch, prepare the next one,
update the taken rows' priorities. Each prefetched batch is compared with a
deep copy of the buffer and RNG sampled at the moment of the draw, and every
row with the brute-force history's window.
"""

import copy
import functools

import jax
import numpy as np

from bbf_dopamine import agent as agent_lib
from bbf_dopamine import evaluation
from bbf_dopamine import learner
from bbf_dopamine import networks
from bbf_dopamine import prefetch
from test_replay import add
from test_replay import History
from test_replay import make_buffer
from test_replay import make_stream

GROUP, SIZE = 2, 4


def _check_rows(buf, history, indices, batch):
  """Every row is sampleable now and holds exactly the history's window."""
  assert np.all(buf.priorities(indices) > 0)
  frames = np.asarray(batch.frames).reshape((GROUP * SIZE, -1) +
                                            batch.frames.shape[-2:])
  rewards = np.asarray(batch.rewards).reshape(GROUP * SIZE, -1)
  for row, slot in enumerate(indices):
    want = history.window(history.abs_of_slot(int(slot)))
    np.testing.assert_array_equal(frames[row], want['frames'])
    np.testing.assert_array_equal(rewards[row], want['rewards'])


def test_prefetched_batch_is_the_draw_before_the_update():
  stream = make_stream()
  buf, history = make_buffer(), History()
  fetcher = prefetch.BatchPrefetcher(buf, GROUP, SIZE, enabled=True)
  rng = np.random.default_rng(0)
  update_rng = np.random.default_rng(1)
  reference = None
  checked = redrawn = 0
  for step in stream:
    add(buf, history, step)
    if buf.num_sampleable() == 0:
      fetcher.clear()
      reference = None
      continue
    indices, batch = fetcher.take(rng)
    _check_rows(buf, history, indices, batch)
    probabilities = np.asarray(batch.probabilities).reshape(-1)
    if reference is not None:
      ref_indices, ref_probabilities, ref_frames = reference
      stale = buf.priorities(ref_indices) <= 0
      # Exactly the invalidated rows were re-drawn; the others are the
      # draw from the tree as it stood before the update and the write.
      np.testing.assert_array_equal(indices[~stale], ref_indices[~stale])
      assert np.all(indices[stale] != ref_indices[stale])
      np.testing.assert_array_equal(probabilities[~stale],
                                    ref_probabilities[~stale])
      np.testing.assert_array_equal(
          np.asarray(batch.frames).reshape(ref_frames.shape)[~stale],
          ref_frames[~stale])
      total = buf._tree.root  # pylint: disable=protected-access
      np.testing.assert_allclose(probabilities[stale],
                                 buf.priorities(indices[stale]) / total,
                                 rtol=1e-6)
      checked += 1
      redrawn += int(stale.sum())
    # The call runs; meanwhile the next batch is drawn.
    snapshot, snapshot_rng = copy.deepcopy(buf), copy.deepcopy(rng)
    fetcher.prepare(rng)
    assert fetcher.pending
    ref_indices, ref_probabilities = snapshot.sample(GROUP * SIZE,
                                                     snapshot_rng)
    reference = (ref_indices, ref_probabilities,
                 snapshot.gather(ref_indices)['frames'])
    # The call's priorities: the prefetched draw must not see them.
    buf.update_priorities(indices, update_rng.uniform(0.1, 5.0, len(indices)))
  assert checked > 80
  assert redrawn > 5  # the cursor invalidated prefetched rows many times


def test_off_draws_from_the_current_tree_like_the_replay():
  stream = make_stream()
  buf, history = make_buffer(), History()
  fetcher = prefetch.BatchPrefetcher(buf, GROUP, SIZE, enabled=False)
  rng, ref_rng = np.random.default_rng(3), np.random.default_rng(3)
  for step in stream[:40]:
    add(buf, history, step)
  fetcher.prepare(rng)  # a no-op when off
  assert not fetcher.pending
  for _ in range(3):
    indices, batch = fetcher.take(rng)
    ref_indices, ref_probabilities = buf.sample(GROUP * SIZE, ref_rng)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(
        np.asarray(batch.probabilities).reshape(-1), ref_probabilities)
    _check_rows(buf, history, indices, batch)
    buf.update_priorities(indices, np.arange(1.0, 1.0 + len(indices)))


def _tiny_agent(**kwargs):
  return agent_lib.BBFAgent(
      num_actions=3,
      network=functools.partial(networks.BBFNetwork, width_scale=0.25,
                                hidden_dim=16),
      replay_capacity=40, min_replay_history=20, replay_ratio=16,
      batch_size=4, batches_to_group=2, jumps=2, max_update_horizon=4,
      update_horizon=2, **kwargs)


def _frames(seed, count):
  rng = np.random.default_rng(seed)
  return [(float(rng.normal()), rng.integers(0, 255, (84, 84, 1), np.uint8))
          for _ in range(count)]


def _run(agent, steps):
  for reward, frame in steps:
    agent.step(reward, frame)


def test_agent_prepares_the_next_batch_before_reading_priorities(monkeypatch):
  agent = _tiny_agent(prefetch_batches=True)
  events = []

  class Priorities:
    """Stands for the device's priorities; records when the host reads."""

    def __init__(self, value):
      self._value = value

    def __array__(self, dtype=None, copy=None):
      del copy
      events.append('read priorities')
      return np.asarray(self._value, dtype)

  train = learner.train

  def recording_train(*args, **kwargs):
    events.append('dispatch')
    state, metrics, priorities = train(*args, **kwargs)
    return state, metrics, Priorities(jax.block_until_ready(priorities))

  prepare = agent._prefetcher.prepare  # pylint: disable=protected-access

  def recording_prepare(rng):
    events.append('prepare')
    prepare(rng)

  monkeypatch.setattr(learner, 'train', recording_train)
  monkeypatch.setattr(agent._prefetcher, 'prepare', recording_prepare)  # pylint: disable=protected-access
  steps = _frames(0, 24)
  agent.begin_episode(steps[0][1])
  _run(agent, steps[1:])
  # 3 agent steps past min_replay_history, 2 calls of 2 gradient steps each.
  assert agent.gradient_steps == 3 * 2 * 2
  assert events == ['dispatch', 'prepare', 'read priorities'] * 6


def test_resume_takes_the_pending_batch(tmp_path):
  """A checkpoint between draw and use resumes bit-identically."""
  steps = _frames(1, 70)  # 40 slots: the cursor wraps and invalidates rows
  straight = _tiny_agent(prefetch_batches=True)
  straight.begin_episode(steps[0][1])
  _run(straight, steps[1:])

  first = _tiny_agent(prefetch_batches=True)
  first.begin_episode(steps[0][1])
  _run(first, steps[1:55])
  assert first._prefetcher.pending  # pylint: disable=protected-access
  bundle = first.bundle_and_checkpoint(str(tmp_path), 7)
  episode = evaluation.save_agent_episode(first)  # the runner saves this too
  resumed = _tiny_agent(prefetch_batches=True)
  assert resumed.unbundle(str(tmp_path), 7, bundle)
  evaluation.restore_agent_episode(resumed, episode)
  _run(resumed, steps[55:])

  assert resumed.gradient_steps == straight.gradient_steps > 0
  for a, b in zip(jax.tree_util.tree_leaves(straight._state),  # pylint: disable=protected-access
                  jax.tree_util.tree_leaves(resumed._state)):  # pylint: disable=protected-access
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prefetch_changes_the_run_and_compiles_once():
  steps = _frames(2, 70)
  runs = {}
  for on in (False, True):
    agent = _tiny_agent(prefetch_batches=on)
    agent.begin_episode(steps[0][1])
    _run(agent, steps[1:25])
    before = learner.train._cache_size()  # pylint: disable=protected-access
    _run(agent, steps[25:])  # past the wrap: re-drawn rows take their path
    assert learner.train._cache_size() == before  # pylint: disable=protected-access
    runs[on] = jax.tree_util.tree_leaves(agent.online_params)
  # The default draws from the freshest tree, so the runs differ.
  assert any(not np.array_equal(a, b) for a, b in zip(runs[False],
                                                      runs[True]))
