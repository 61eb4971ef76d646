# coding=utf-8
"""Subsequence replay for BBF: single frames stored once, windows sampled.

Each slot s of a circular buffer holds (o_s, a_s, r_s, d_s, e_s) (see
`returns.py` for the meaning). A sample at slot t returns the window of slots
t-(S-1) .. t+H with H = max(max_update_horizon, jumps): enough for the frame
stack of s_t, SPR's K future states and any n-step bootstrap state with
n <= H. Returns, masks and stacks are then computed on the accelerator for the
current (annealed) n and gamma.

Priorities live in Dopamine's vectorised numpy `SumTree`; uniform replay is the
same tree with every valid slot at priority 1. A slot is sampleable (priority
> 0) only when
  * its whole window has been written (H newer slots exist),
  * its window does not cross a time-limit cut (an episode end without a
    terminal within H steps, where no bootstrap state exists), and
  * the frames of its stack have not been overwritten by the circular cursor.
All bookkeeping is vectorised: no per-index Python loops.
"""

import os

import gin
import numpy as np
from dopamine.jax.replay_memory import sum_tree


@gin.configurable
class SubsequenceReplayBuffer(object):
  """Circular frame store with prioritised window sampling."""

  def __init__(self,
               horizon,
               observation_shape=(84, 84),
               stack_size=4,
               replay_capacity=200_000,
               prioritized=True,
               observation_dtype=np.uint8):
    if replay_capacity < horizon + stack_size + 1:
      raise ValueError(
          f'replay_capacity={replay_capacity} cannot hold one window of '
          f'{horizon + stack_size} slots.')
    self._horizon = int(horizon)
    self._stack = int(stack_size)
    self._capacity = int(replay_capacity)
    self._prioritized = prioritized
    cap = self._capacity
    self._frames = np.zeros((cap,) + tuple(observation_shape),
                            observation_dtype)
    self._actions = np.zeros((cap,), np.int32)
    self._rewards = np.zeros((cap,), np.float32)
    self._terminals = np.zeros((cap,), np.uint8)
    # Slots never written count as episode boundaries, so the first stacks
    # of the run are zero-padded like Dopamine's acting stack.
    self._episode_ends = np.ones((cap,), np.uint8)
    # Slots whose window crosses a time-limit cut; cleared on overwrite.
    self._blocked = np.zeros((cap,), bool)
    self._tree = sum_tree.SumTree(cap)
    self.add_count = 0

  @property
  def capacity(self):
    return self._capacity

  @property
  def window(self):
    """Number of slots in one sampled window."""
    return self._stack - 1 + self._horizon + 1

  def add(self, frame, action, reward, terminal, episode_end):
    """Writes one slot and updates which slots may be sampled."""
    cap, cursor = self._capacity, self.add_count % self._capacity
    self._frames[cursor] = frame
    self._actions[cursor] = action
    self._rewards[cursor] = reward
    self._terminals[cursor] = bool(terminal)
    self._episode_ends[cursor] = bool(episode_end or terminal)
    self._blocked[cursor] = False
    # Stacks reaching back over the cursor lose a frame: slots c+1 .. c+S-1.
    # Also before the first wrap: the zero-padding slots of the first stacks
    # (slots cap-S+1 .. cap-1) get written then (unwritten slots: no-op).
    zero = [cursor]
    zero.extend((cursor + np.arange(1, self._stack)) % cap)
    if episode_end and not terminal:
      # Time-limit cut: no bootstrap state exists for the last H slots of
      # this episode (walk back while the episode continues).
      back = (cursor - np.arange(self._horizon)) % cap
      before = (back - 1) % cap
      same = np.cumprod(
          np.concatenate([[1], 1 - self._episode_ends[before[:-1]]]))
      written = np.arange(self._horizon) < self.add_count + 1
      cut = back[(same > 0) & written]
      self._blocked[cut] = True
      zero.extend(cut)
    zero = np.asarray(zero, np.int64)
    self._tree.set(zero, np.zeros(len(zero)))
    self.add_count += 1
    # Slot c-H now has its whole window.
    if self.add_count > self._horizon:
      ready = (cursor - self._horizon) % cap
      oldest_valid = self.add_count - cap + self._stack - 1
      ready_abs = self.add_count - 1 - self._horizon
      if not self._blocked[ready] and ready_abs >= oldest_valid:
        priority = (self._tree.max_recorded_priority
                    if self._prioritized else 1.0)
        self._tree.set(np.asarray([ready]), np.asarray([priority]))

  def num_sampleable(self):
    return int(np.count_nonzero(self._tree.get(np.arange(self._capacity))))

  def sample(self, batch_size, rng):
    """Stratified proportional sampling (Schaul et al., 2016, appendix B.2.1).

    Args:
      batch_size: number of indices.
      rng: numpy Generator.

    Returns:
      indices (batch,) int64 and their sampling probabilities (batch,).
    """
    total = self._tree.root
    if total <= 0:
      raise RuntimeError('The replay buffer has no sampleable transition yet.')
    bounds = np.linspace(0.0, total, batch_size + 1)
    targets = rng.uniform(bounds[:-1], bounds[1:])
    targets = np.minimum(targets, np.nextafter(total, 0))
    indices = self._tree.query(targets)
    probabilities = self._tree.get(indices) / total
    return indices.astype(np.int64), probabilities.astype(np.float32)

  def priorities(self, indices):
    """Current priorities of `indices` (0: not sampleable now)."""
    return self._tree.get(indices)

  def gather(self, indices):
    """The windows of `indices` as a dict of numpy arrays.

    Returns:
      frames (B, W, h, w), episode_ends (B, W), actions / rewards / terminals
      (B, H) for slots t .. t+H-1.
    """
    offsets = np.arange(-(self._stack - 1), self._horizon + 1)
    slots = (indices[:, None] + offsets[None, :]) % self._capacity  # (B, W)
    steps = slots[:, self._stack - 1:-1]  # (B, H): t .. t+H-1
    return {
        'frames': self._frames[slots],
        'episode_ends': self._episode_ends[slots],
        'actions': self._actions[steps],
        'rewards': self._rewards[steps],
        'terminals': self._terminals[steps].astype(np.float32),
    }

  def update_priorities(self, indices, priorities):
    if not self._prioritized:
      return
    # Slots invalidated since sampling keep priority 0.
    valid = self.priorities(indices) > 0
    if np.any(valid):
      self._tree.set(indices[valid], np.asarray(priorities, np.float64)[valid])

  # Checkpointing --------------------------------------------------------

  _SLOT_ARRAYS = ('frames', 'actions', 'rewards', 'terminals', 'episode_ends',
                  'blocked')

  @property
  def nbytes(self):
    """Bytes of the full buffer (the most a checkpoint of it can take)."""
    return (sum(getattr(self, '_' + name).nbytes for name in self._SLOT_ARRAYS)
            + self._tree._nodes.nbytes)  # pylint: disable=protected-access

  def _state_arrays(self):
    # Slots never written hold their initial values: only the written prefix
    # is saved, so a checkpoint at 100k transitions of a 200k buffer is half
    # the size.
    filled = min(self.add_count, self._capacity)
    arrays = {name: getattr(self, '_' + name)[:filled]
              for name in self._SLOT_ARRAYS}
    arrays.update(
        tree_nodes=self._tree._nodes,  # pylint: disable=protected-access
        max_priority=np.asarray(self._tree.max_recorded_priority),
        add_count=np.asarray(self.add_count),
        capacity=np.asarray(self._capacity))
    return arrays

  def save(self, path):
    """Writes the buffer to `path` (.npz) via a temporary file."""
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      np.savez(f, **self._state_arrays())
    os.replace(tmp, path)

  def load(self, path):
    """Restores a buffer written by `save`; rejects foreign or cut files."""
    try:
      data = np.load(path)
    except Exception as error:  # zipfile / pickle / OS errors alike
      raise ValueError(f'Replay checkpoint {path} is unreadable: '
                       f'{error}') from error
    with data:
      missing = [k for k in self._state_arrays() if k not in data]
      if missing:
        raise ValueError(f'Replay checkpoint {path} lacks {missing}.')
      try:
        saved = {k: data[k] for k in data.files}
      except Exception as error:  # a truncated member fails on read
        raise ValueError(f'Replay checkpoint {path} is truncated or corrupt: '
                         f'{error}') from error
    if int(saved['capacity']) != self._capacity:
      raise ValueError(
          f'Replay checkpoint {path} holds a buffer of capacity '
          f'{int(saved["capacity"])}, this configuration has {self._capacity}.')
    filled = min(int(saved['add_count']), self._capacity)
    for name in self._SLOT_ARRAYS:
      array = getattr(self, '_' + name)
      expected = (filled,) + array.shape[1:]
      if saved[name].shape != expected:
        raise ValueError(
            f'Replay checkpoint {path}: {name} has shape {saved[name].shape}, '
            f'expected {expected} (different frame size?).')
    tree = self._tree._nodes  # pylint: disable=protected-access
    if saved['tree_nodes'].shape != tree.shape:
      raise ValueError(f'Replay checkpoint {path}: priority tree has shape '
                       f'{saved["tree_nodes"].shape}, expected {tree.shape}.')
    for name in self._SLOT_ARRAYS:
      array = getattr(self, '_' + name)
      # Unwritten slots: zeros, except episode_ends = 1 (see __init__).
      array[filled:] = 1 if name == 'episode_ends' else 0
      array[:filled] = saved[name]
    tree[...] = saved['tree_nodes']
    self._tree.max_recorded_priority = float(saved['max_priority'])
    self.add_count = int(saved['add_count'])
