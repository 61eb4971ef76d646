# coding=utf-8
"""Replay batches for the training calls, optionally drawn one call ahead.

JAX dispatches BBF's training call asynchronously: the host gets control back
at once and then waits for the priorities the call returns. With
`BBFAgent.prefetch_batches = True` the host spends that wait drawing and
gathering the next call's batch and starting its transfer to the device, so
sampling leaves the critical path.

What this changes, and why it is off by default: a prefetched batch is drawn
from the sum tree as it stood *before* the running call's priority update
(and before the replay writes of any agent steps in between). BBF already
draws its `batches_to_group` minibatches at once from one tree, so the
second minibatch of every group sees priorities one minibatch old; a
prefetched group sees them one group older. An exact prefetch is not
possible: each priority update changes the tree's total, which moves every
stratified target (Schaul et al., 2016, B.2.1), so the same uniform draws
land on other slots for nearly every row.

Windows never mix old and new data: rows that became unsampleable since
they were drawn (their stack lost a frame to the circular cursor) are
re-drawn from the current tree when the batch is taken, with their current
probabilities.
"""

import jax
import numpy as np

from bbf_dopamine import learner


def to_batch(window, probabilities, group, size):
  """learner.Batch of G = group minibatches of B = size windows (numpy)."""
  shape = lambda x: x.reshape((group, size) + x.shape[1:])
  return learner.Batch(
      frames=shape(window['frames']),  # (G, B, W, h, w)
      episode_ends=shape(window['episode_ends']),  # (G, B, W)
      actions=shape(window['actions']),  # (G, B, H)
      rewards=shape(window['rewards']),  # (G, B, H)
      terminals=shape(window['terminals']),  # (G, B, H)
      probabilities=shape(probabilities))  # (G, B)


class BatchPrefetcher(object):
  """Draws the (indices, learner.Batch) of each training call.

  take() returns the batch of the call about to run; prepare(), called while
  that call runs, draws the next one when prefetching is on. Batches are
  always placed on the device here (jax.device_put), so the training call
  sees one argument signature whichever path made its batch.
  """

  def __init__(self, replay, group, size, enabled=False):
    self._replay = replay
    self._group, self._size = int(group), int(size)
    self.enabled = bool(enabled)
    # (indices (G*B,), probabilities (G*B,), their batch on the device).
    self._pending = None

  @property
  def pending(self):
    return self._pending is not None

  def _place(self, indices, probabilities):
    """The windows of `indices` as a batch on the device (transfer starts)."""
    window = self._replay.gather(indices)
    return jax.device_put(
        to_batch(window, probabilities, self._group, self._size))

  def _draw(self, rng):
    indices, probabilities = self._replay.sample(self._group * self._size,
                                                 rng)
    return indices, probabilities, self._place(indices, probabilities)

  def prepare(self, rng):
    """Draws the next call's batch now (no-op unless prefetching)."""
    if self.enabled:
      self._pending = self._draw(rng)

  def stale_rows(self, indices):
    """(G*B,) bool: rows no longer sampleable since they were drawn.

    A replay write zeroes the priority of exactly the slots whose windows it
    touches (the stacks that lose a frame to the circular cursor); other
    sampleable windows hold only slots written before the draw.
    """
    return self._replay.priorities(indices) <= 0

  def take(self, rng):
    """(indices (G*B,), learner.Batch) for the call about to run."""
    if self._pending is None:
      indices, _, batch = self._draw(rng)
      return indices, batch
    indices, probabilities, batch = self._pending
    self._pending = None
    stale = self.stale_rows(indices)
    if not stale.any():
      return indices, batch
    # Rare (after the cursor wraps): re-draw those rows and gather the
    # whole batch again; the other rows' windows are unchanged.
    fresh, fresh_p = self._replay.sample(int(stale.sum()), rng)
    indices, probabilities = indices.copy(), probabilities.copy()
    indices[stale], probabilities[stale] = fresh, fresh_p
    return indices, self._place(indices, probabilities)

  def clear(self):
    self._pending = None

  # Checkpointing: the pending draw is part of the run's state (its random
  # numbers are already spent), so a resumed run trains on the same batch.

  def bundle(self):
    if self._pending is None:
      return None
    indices, probabilities, _ = self._pending
    return {'indices': indices, 'probabilities': probabilities}

  def unbundle(self, saved):
    """Restores a pending draw; call after the replay buffer is restored.

    A run that does not prefetch drops it (its random numbers stay spent).
    """
    if saved is None or not self.enabled:
      self._pending = None
      return
    indices = np.asarray(saved['indices'], np.int64)
    probabilities = np.asarray(saved['probabilities'], np.float32)
    # Rows a later write invalidated are caught by stale_rows at take().
    self._pending = (indices, probabilities,
                     self._place(indices, probabilities))
