# coding=utf-8
"""Tests of bbf_dopamine/replay.py against a brute-force model of the stream.

Every added transition is also kept in a plain Python history indexed by the
absolute step number; validity, windows, stacks and priorities are recomputed
from that history with loops and compared with the buffer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import replay
from bbf_dopamine import returns

H = 5  # horizon
S = 4  # stack size
CAP = 31
OBS = (2, 3)

# Episode segments: (length, how it ends). 'term': terminal (agent's
# end_episode(terminal=True)), 'life': life-loss terminal stored as
# terminal=True, episode_end=False, 'cut': time-limit cut
# (episode_end=True, terminal=False).
SEGMENTS = [(7, 'term'), (3, 'life'), (12, 'cut'), (2, 'term'), (4, 'cut'),
            (9, 'life'), (1, 'cut'), (1, 'term'), (15, 'cut'), (6, 'term'),
            (3, 'cut'), (11, 'life'), (8, 'cut'), (5, 'term'), (13, 'cut'),
            (2, 'cut'), (10, 'term'), (7, 'cut')]


def frame_of(x):
  """Frame of step x: (x mod 250) + 1 plus a pixel offset 0..5 (never 0)."""
  return (np.full(OBS, x % 250 + 1, np.uint8) +
          np.arange(6, dtype=np.uint8).reshape(OBS))


def make_stream():
  """List of (frame, action, reward, terminal, episode_end) per step."""
  stream = []
  for length, kind in SEGMENTS:
    for i in range(length):
      x = len(stream)
      last = i == length - 1
      terminal = last and kind in ('term', 'life')
      episode_end = last and kind in ('term', 'cut')
      stream.append((frame_of(x), x % 7, 0.25 * (x % 5) - 0.5, terminal,
                     episode_end))
  return stream


class History:
  """Brute-force model of the buffer's contents, by absolute step."""

  def __init__(self, horizon=H, stack=S, capacity=CAP):
    self.h, self.s, self.cap = horizon, stack, capacity
    self.steps = []

  def append(self, step):
    self.steps.append(step)

  @property
  def n(self):
    return len(self.steps)

  def ended(self, x):
    """e_x: any episode end after a_x (unwritten steps count as ends)."""
    if x < 0 or x >= self.n:
      return True
    _, _, _, terminal, episode_end = self.steps[x]
    return bool(terminal or episode_end)

  def terminal(self, x):
    return bool(self.steps[x][3])

  def valid(self, a):
    """Is absolute step a sampleable now? Loops, straight from the rules."""
    n = self.n
    if a < 0 or a + self.h > n - 1:  # Whole window t .. t+H written?
      return False
    # Oldest stack slot a-(S-1) must not have been rewritten by the cursor:
    # it is rewritten by absolute step a-(S-1)+cap once that was added.
    if a - (self.s - 1) + self.cap <= n - 1:
      return False
    # The n-step window must not cross a time-limit cut: the first episode
    # end in a .. a+H-1 (if any) must be a terminal.
    for k in range(self.h):
      if self.ended(a + k):
        return self.terminal(a + k)
    return True

  def valid_abs(self):
    return [a for a in range(max(0, self.n - self.cap), self.n)
            if self.valid(a)]

  def abs_of_slot(self, slot):
    """Newest absolute step stored in `slot`."""
    return slot + self.cap * ((self.n - 1 - slot) // self.cap)

  def window(self, a):
    """Expected gather() output for absolute step a."""
    xs = range(a - (self.s - 1), a + self.h + 1)
    frames = np.stack([
        self.steps[x][0] if x >= 0 else np.zeros(OBS, np.uint8) for x in xs])
    ends = np.asarray([self.ended(x) for x in xs], np.uint8)
    steps = [self.steps[x] for x in range(a, a + self.h)]
    return {
        'frames': frames,
        'episode_ends': ends,
        'actions': np.asarray([s[1] for s in steps]),
        'rewards': np.asarray([s[2] for s in steps], np.float32),
        'terminals': np.asarray([float(s[3]) for s in steps], np.float32),
    }

  def stack(self, y):
    """What the acting agent saw at state s_y: zeros before episode start."""
    start = 0
    for z in range(y):
      if self.ended(z):
        start = z + 1
    out = np.zeros(OBS + (self.s,), np.uint8)
    for j in range(self.s):
      x = y - (self.s - 1) + j
      if x >= start:
        out[..., j] = self.steps[x][0]
    return out


class PriorityModel:
  """Expected sum-tree leaves: max priority for new slots, 0 when invalid."""

  def __init__(self, prioritized=True):
    self.prioritized = prioritized
    self.max_priority = 1.0
    self.by_abs = {}

  def refresh(self, history):
    valid = set(history.valid_abs())
    self.by_abs = {a: p for a, p in self.by_abs.items() if a in valid}
    for a in valid:
      if a not in self.by_abs:
        self.by_abs[a] = self.max_priority if self.prioritized else 1.0

  def update(self, history, slots, priorities):
    if not self.prioritized:
      return
    for slot, p in zip(slots, priorities):
      a = history.abs_of_slot(int(slot))
      if a in self.by_abs:
        self.by_abs[a] = float(p)
        self.max_priority = max(self.max_priority, float(p))

  def leaves(self, cap):
    out = np.zeros(cap)
    for a, p in self.by_abs.items():
      out[a % cap] = p
    return out


def leaves(buf):
  return buf._tree.get(np.arange(buf.capacity))  # pylint: disable=protected-access


def assert_leaves(buf, want, msg=''):
  """Leaves equal `want` (the tree adds deltas: exact zeros, 1e-12 else)."""
  got = leaves(buf)
  np.testing.assert_array_equal(got > 0, want > 0, err_msg=msg)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=msg)


def make_buffer(prioritized=True, capacity=CAP):
  return replay.SubsequenceReplayBuffer(
      horizon=H, observation_shape=OBS, stack_size=S,
      replay_capacity=capacity, prioritized=prioritized)


def add(buf, history, step):
  buf.add(*step)
  history.append(step)


def check_windows(buf, history):
  """gather() of every sampleable slot equals the history's window."""
  valid = history.valid_abs()
  slots = np.asarray([a % CAP for a in valid], np.int64)
  got = buf.gather(slots)
  assert got['frames'].shape == (len(valid), S - 1 + H + 1) + OBS
  assert got['episode_ends'].shape == (len(valid), S + H)
  for name in ('actions', 'rewards', 'terminals'):
    assert got[name].shape == (len(valid), H)
  for row, a in enumerate(valid):
    want = history.window(a)
    for name, value in want.items():
      np.testing.assert_array_equal(got[name][row], value,
                                    err_msg=f'{name} of step {a}')
  return valid, got


def test_stream_covers_interesting_cases():
  stream = make_stream()
  assert len(stream) > 3 * CAP
  ends = [x for x, s in enumerate(stream) if s[3] or s[4]]
  cuts = [x for x, s in enumerate(stream) if s[4] and not s[3]]
  # A cut whose H-step walk-back wraps around the end of the circular array.
  assert any(x >= CAP and x % CAP < H - 1 for x in cuts)
  # A cut right after another episode end (episode shorter than H).
  assert any(x - 1 in ends for x in cuts)
  # A life loss stored without episode_end.
  assert any(s[3] and not s[4] for s in stream)


@pytest.mark.parametrize('prioritized', [True, False])
def test_sampleable_slots_and_priorities_match_brute_force(prioritized):
  buf = make_buffer(prioritized)
  history = History()
  model = PriorityModel(prioritized)
  rng = np.random.default_rng(0)
  stream = make_stream()
  seen_valid = set()
  for x, step in enumerate(stream):
    add(buf, history, step)
    model.refresh(history)
    assert buf.add_count == x + 1
    assert_leaves(buf, model.leaves(CAP), f'after adding step {x}')
    assert buf.num_sampleable() == len(history.valid_abs())
    seen_valid.update(history.valid_abs())
    # Every few steps, give some sampleable slots new priorities.
    if x % 9 == 8 and model.by_abs:
      slots = np.asarray(sorted(a % CAP for a in model.by_abs))[::2]
      new = rng.uniform(0.1, 3.0, size=len(slots))
      buf.update_priorities(slots, new)
      model.update(history, slots, new)
      assert_leaves(buf, model.leaves(CAP))
  if prioritized:
    assert model.max_priority > 1.0
    assert buf._tree.max_recorded_priority == model.max_priority  # pylint: disable=protected-access
  # No sampleable step ever had a time-limit cut as the first end of its
  # n-step window; and cut windows do exist in the stream.
  full = _full(stream)
  blocked = [a for a in range(len(stream) - H) if not full.valid(a)]
  assert blocked
  assert not seen_valid & set(blocked)


def _full(stream):
  """History of the whole stream with an infinite capacity."""
  h = History(capacity=10**9)
  for step in stream:
    h.append(step)
  return h


def test_no_window_crosses_a_cut():
  stream = make_stream()
  buf = make_buffer()
  history = History()
  for step in stream:
    add(buf, history, step)
    for a in history.valid_abs():
      # Independent restatement: walking from a, we never pass a cut before
      # reaching a terminal within the H steps the window can bootstrap over.
      for k in range(H):
        _, _, _, terminal, episode_end = stream[a + k]
        assert not (episode_end and not terminal), (a, k)
        if terminal:
          break
  # A cut at c blocks exactly the steps of its episode in c-H+1 .. c.
  full = _full(stream)
  cuts = [x for x, s in enumerate(stream) if s[4] and not s[3]]
  for c in cuts:
    for a in range(c - H + 1, c + 1):
      same_episode = a >= 0 and not any(full.ended(z) for z in range(a, c))
      if same_episode:
        assert not full.valid(a), (c, a)


def test_gather_windows_and_stacks_match_history():
  stream = make_stream()
  buf = make_buffer()
  history = History()
  stacks_fn = jax.jit(jax.vmap(
      lambda f, e: returns.frame_stacks(f, e, jnp.arange(H + 1), S)))
  nstep_fn = jax.jit(jax.vmap(
      lambda r, d, n: returns.n_step_return(r, d, n, 0.9),
      in_axes=(0, 0, None)))
  checked = 0
  zero_padded = 0
  for x, step in enumerate(stream):
    add(buf, history, step)
    if x % 4 != 3 and x != len(stream) - 1:
      continue
    valid, got = check_windows(buf, history)
    if not valid:
      continue
    stacks = np.asarray(stacks_fn(got['frames'], got['episode_ends']))
    for row, a in enumerate(valid):
      for p in range(H + 1):
        want = history.stack(a + p)
        np.testing.assert_array_equal(stacks[row, p], want,
                                      err_msg=f'stack of s_{a + p}')
        zero_padded += int(not want[..., 0].any())
      checked += 1
    # A nonzero bootstrap discount means s_{t+n} is in the episode of s_t.
    for n in range(1, H + 1):
      _, disc, off = nstep_fn(got['rewards'], got['terminals'], n)
      for row, a in enumerate(valid):
        if float(disc[row]) > 0:
          assert int(off[row]) == n
          assert not any(history.ended(z) for z in range(a, a + n))
  assert checked > 100
  assert zero_padded > 20


def test_first_stacks_zero_padded_and_wraparound_padding_invalidated():
  # Before the first wrap the stacks of steps 0..S-2 read unwritten slots at
  # the end of the array (zero padding). Once those slots are written the
  # steps must stop being sampleable.
  buf = make_buffer()
  history = History()
  step_count = 0
  while buf.add_count < CAP + 2:
    step = (frame_of(step_count), 0, 0.0, False, False)
    add(buf, history, step)
    step_count += 1
    valid = history.valid_abs()
    assert sorted(np.nonzero(leaves(buf))[0]) == sorted(a % CAP
                                                        for a in valid)
    if valid:
      _, got = check_windows(buf, history)
      stacks = returns.frame_stacks(
          jnp.asarray(got['frames'][0]), jnp.asarray(got['episode_ends'][0]),
          jnp.arange(1), S)
      np.testing.assert_array_equal(np.asarray(stacks[0]),
                                    history.stack(valid[0]))
    if buf.add_count == CAP:
      # Slots 0..S-2 have had their padding slots rewritten.
      assert valid[0] == S - 1
  assert history.stack(0)[..., :S - 1].max() == 0


def test_sample_probabilities_are_priority_over_total():
  buf = make_buffer()
  history = History()
  stream = make_stream()
  for step in stream[:2 * CAP + 7]:
    add(buf, history, step)
  valid = history.valid_abs()
  slots = np.asarray([a % CAP for a in valid])
  priorities = np.linspace(0.5, 4.0, len(slots))
  buf.update_priorities(slots, priorities)
  expected = dict(zip(slots.tolist(), priorities / priorities.sum()))
  rng = np.random.default_rng(1)
  for batch in (1, 7, 32):
    idx, probs = buf.sample(batch, rng)
    assert idx.shape == (batch,) and idx.dtype == np.int64
    assert probs.shape == (batch,) and probs.dtype == np.float32
    for i, p in zip(idx, probs):
      assert int(i) in expected
      np.testing.assert_allclose(p, expected[int(i)], rtol=1e-6)


def test_update_priorities_changes_sampling_distribution():
  buf = make_buffer()
  history = History()
  for step in make_stream()[:CAP + 12]:
    add(buf, history, step)
  slots = np.asarray(sorted(a % CAP for a in history.valid_abs()))
  assert len(slots) >= 8
  rng = np.random.default_rng(1234)
  batch, calls = 16, 1500

  def frequencies():
    counts = np.zeros(CAP)
    for _ in range(calls):
      idx, _ = buf.sample(batch, rng)
      np.add.at(counts, idx, 1)
    return counts / (batch * calls)

  # Uniform at first: all new slots got the initial max priority 1.
  freq = frequencies()
  assert set(np.nonzero(freq)[0]) <= set(slots.tolist())
  np.testing.assert_allclose(freq[slots], 1.0 / len(slots), atol=0.01)

  # Skewed priorities; one slot set to 0 is never sampled again.
  new = np.arange(len(slots), dtype=np.float64) ** 2
  new[1] = 1.0
  buf.update_priorities(slots, new)
  assert buf.num_sampleable() == len(slots) - 1
  want = np.zeros(CAP)
  want[slots] = new / new.sum()
  freq = frequencies()
  assert freq[slots[0]] == 0.0
  np.testing.assert_allclose(freq, want, atol=0.01)
  # A newly complete slot gets the max priority recorded so far.
  stream = make_stream()
  fresh = set()
  for step in stream[CAP + 12:CAP + 24]:
    before = set(np.nonzero(leaves(buf))[0])
    add(buf, history, step)
    fresh |= set(np.nonzero(leaves(buf))[0]) - before
  assert fresh
  for slot in fresh:
    assert leaves(buf)[slot] == new.max()


def test_update_priorities_skips_invalidated_slots_and_uniform_ignores():
  buf = make_buffer()
  history = History()
  stream = make_stream()
  for step in stream[:CAP]:
    add(buf, history, step)
  oldest = min(history.valid_abs())
  slot = np.asarray([oldest % CAP])
  # Overwrite until the oldest step is no longer sampleable.
  x = CAP
  while history.valid(oldest):
    add(buf, history, stream[x])
    x += 1
  buf.update_priorities(slot, np.asarray([5.0]))
  assert leaves(buf)[slot[0]] == 0.0
  assert buf._tree.max_recorded_priority == 1.0  # pylint: disable=protected-access

  uniform = make_buffer(prioritized=False)
  for step in stream[:CAP]:
    uniform.add(*step)
  before = leaves(uniform).copy()
  live = np.nonzero(before)[0]
  uniform.update_priorities(live, np.full(len(live), 7.0))
  np.testing.assert_array_equal(leaves(uniform), before)
  assert set(before[live]) == {1.0}


def test_save_load_round_trip(tmp_path):
  stream = make_stream()
  buf = make_buffer()
  for step in stream[:CAP + 17]:
    buf.add(*step)
  slots = np.nonzero(leaves(buf))[0]
  buf.update_priorities(slots, np.linspace(0.2, 2.5, len(slots)))
  path = str(tmp_path / 'replay.npz')
  buf.save(path)
  assert not (tmp_path / 'replay.npz.tmp').exists()

  other = make_buffer()
  other.load(path)
  assert other.add_count == buf.add_count
  for name in ('_frames', '_actions', '_rewards', '_terminals',
               '_episode_ends', '_blocked'):
    np.testing.assert_array_equal(getattr(other, name), getattr(buf, name),
                                  err_msg=name)
  np.testing.assert_array_equal(other._tree._nodes, buf._tree._nodes)  # pylint: disable=protected-access
  assert other._tree.max_recorded_priority == buf._tree.max_recorded_priority  # pylint: disable=protected-access

  # Identical behaviour afterwards: sampling, gathering and further adds.
  i1, p1 = buf.sample(16, np.random.default_rng(5))
  i2, p2 = other.sample(16, np.random.default_rng(5))
  np.testing.assert_array_equal(i1, i2)
  np.testing.assert_array_equal(p1, p2)
  g1, g2 = buf.gather(i1), other.gather(i2)
  for name in g1:
    np.testing.assert_array_equal(g1[name], g2[name])
  for step in stream[CAP + 17:CAP + 40]:
    buf.add(*step)
    other.add(*step)
    np.testing.assert_array_equal(leaves(other), leaves(buf))

  # A checkpoint of another capacity is rejected.
  small = make_buffer(capacity=CAP - 1)
  with pytest.raises(ValueError):
    small.load(path)


def test_partial_buffer_saves_only_written_slots(tmp_path):
  stream = make_stream()
  buf = make_buffer()
  for step in stream[:CAP // 2]:
    buf.add(*step)
  path = str(tmp_path / 'replay.npz')
  buf.save(path)
  with np.load(path) as data:
    assert data['frames'].shape[0] == CAP // 2
  # Loading over a buffer holding other data restores the unwritten slots
  # to their initial values too.
  other = make_buffer()
  for step in stream[:CAP + 5]:
    other.add(*step)
  other.load(path)
  fresh = make_buffer()
  for step in stream[:CAP // 2]:
    fresh.add(*step)
  for name in ('_frames', '_actions', '_rewards', '_terminals',
               '_episode_ends', '_blocked'):
    np.testing.assert_array_equal(getattr(other, name), getattr(fresh, name),
                                  err_msg=name)
  np.testing.assert_array_equal(leaves(other), leaves(fresh))


def test_truncated_or_foreign_file_is_rejected(tmp_path):
  buf = make_buffer()
  for step in make_stream()[:CAP]:
    buf.add(*step)
  path = tmp_path / 'replay.npz'
  buf.save(str(path))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='replay.npz'):
    make_buffer().load(str(path))
  np.savez(str(path), frames=np.zeros(3))
  with pytest.raises(ValueError, match='lacks'):
    make_buffer().load(str(path))


def test_errors():
  with pytest.raises(ValueError):
    replay.SubsequenceReplayBuffer(horizon=H, observation_shape=OBS,
                                   stack_size=S, replay_capacity=H + S)
  buf = make_buffer()
  with pytest.raises(RuntimeError):
    buf.sample(4, np.random.default_rng(0))
  for x in range(H):
    buf.add(frame_of(x), 0, 0.0, False, False)
  assert buf.num_sampleable() == 0
  buf.add(frame_of(H), 0, 0.0, False, False)
  assert buf.num_sampleable() == 1
  idx, probs = buf.sample(3, np.random.default_rng(0))
  np.testing.assert_array_equal(idx, [0, 0, 0])
  np.testing.assert_array_equal(probs, [1.0, 1.0, 1.0])
