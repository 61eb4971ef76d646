# coding=utf-8
"""Tests of bbf_dopamine/returns.py against brute-force loop references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import returns

H = 10  # Window horizon used throughout.
JIT_MODES = [False, True]


# ---------------------------------------------------------------------------
# Brute-force references (plain Python loops, no vectorisation).
# ---------------------------------------------------------------------------


def ref_n_step(rewards, terminals, n, gamma, legacy):
  """Loop reference of (G, discount, bootstrap_offset)."""
  ret = 0.0
  alive = 1.0
  for k in range(n):
    ret += gamma**k * float(rewards[k]) * alive
    if terminals[k]:
      alive = 0.0
  if legacy:
    # Bootstraps from s_{t+n-1}; checks only d_t .. d_{t+n-2}.
    alive_legacy = 1.0
    for j in range(n - 1):
      if terminals[j]:
        alive_legacy = 0.0
    return ret, gamma**n * alive_legacy, n - 1
  return ret, gamma**n * alive, n


def ref_spr_mask(terminals, jumps, legacy):
  mask = []
  for k in range(1, jumps + 1):
    last = k if legacy else k - 1  # legacy: prod over j <= k, correct: j < k
    value = 1.0
    for j in range(last + 1):
      if terminals[j]:
        value = 0.0
    mask.append(value)
  return np.asarray(mask)


def ref_frame_stacks(frames, episode_ends, positions, stack_size):
  out = np.zeros((len(positions),) + frames.shape[1:] + (stack_size,),
                 np.uint8)
  for row, p in enumerate(positions):
    for j in range(stack_size):
      # Slot t+p-(S-1)+j is window index p+j; zeroed if an episode ended in
      # window indices p+j .. p+S-2 (slots t+p-(S-1)+j .. t+p-1).
      ended = False
      for m in range(p + j, p + stack_size - 1):
        if episode_ends[m]:
          ended = True
      if not ended:
        out[row, :, :, j] = frames[p + j]
  return out


def _maybe_jit(fn, use_jit, **jit_kwargs):
  return jax.jit(fn, **jit_kwargs) if use_jit else fn


# ---------------------------------------------------------------------------
# n-step returns.
# ---------------------------------------------------------------------------

N_VALUES = (1, 3, 10)


def _terminal_cases(n):
  """Terminal patterns: none, at 0, middle, n-1, n, and two terminals."""
  positions = sorted({0, n // 2, 4, n - 1, n})
  cases = [('none', np.zeros(H, np.float32))]
  for pos in positions:
    if pos < H:
      d = np.zeros(H, np.float32)
      d[pos] = 1.0
      cases.append((f'at{pos}', d))
  d = np.zeros(H, np.float32)
  d[[1, 6]] = 1.0
  cases.append(('two', d))
  d = np.zeros(H, np.float32)
  d[H - 1] = 1.0
  cases.append(('last', d))
  return cases


@pytest.mark.parametrize('use_jit', JIT_MODES)
@pytest.mark.parametrize('legacy', [False, True])
@pytest.mark.parametrize('n', N_VALUES)
def test_n_step_return_matches_loop_reference(n, legacy, use_jit):
  rng = np.random.default_rng(n)
  rewards = rng.uniform(-1.0, 1.0, size=H).astype(np.float32)
  fn = _maybe_jit(
      lambda r, d, n_, g: returns.n_step_return(r, d, n_, g, legacy), use_jit)
  for gamma in (0.97, 0.5):
    for name, terminals in _terminal_cases(n):
      ret, disc, off = fn(jnp.asarray(rewards), jnp.asarray(terminals), n,
                          gamma)
      ref_ret, ref_disc, ref_off = ref_n_step(rewards, terminals, n, gamma,
                                              legacy)
      msg = f'n={n} legacy={legacy} gamma={gamma} terminals={name}'
      np.testing.assert_allclose(float(ret), ref_ret, rtol=1e-5, atol=1e-6,
                                 err_msg=msg)
      np.testing.assert_allclose(float(disc), ref_disc, rtol=1e-5, atol=1e-7,
                                 err_msg=msg)
      assert int(off) == ref_off, msg


def test_n_step_return_boolean_terminals():
  rewards = jnp.arange(1.0, H + 1.0)
  d = np.zeros(H, bool)
  d[2] = True
  ret, disc, off = returns.n_step_return(rewards, jnp.asarray(d), 5, 0.5)
  # 1 + 0.5*2 + 0.25*3 = 2.75, terminal after a_{t+2} -> no bootstrap.
  np.testing.assert_allclose(float(ret), 2.75, rtol=1e-6)
  assert float(disc) == 0.0
  assert int(off) == 5


@pytest.mark.parametrize('use_jit', JIT_MODES)
def test_n_step_return_hand_computed(use_jit):
  fn_c = _maybe_jit(lambda r, d, n, g: returns.n_step_return(r, d, n, g),
                    use_jit)
  fn_l = _maybe_jit(
      lambda r, d, n, g: returns.n_step_return(r, d, n, g, legacy=True),
      use_jit)
  rewards = jnp.asarray([1., 2., 3., 4., 5., 6., 7., 8., 9., 10.])
  no_term = jnp.zeros(H)
  term2 = jnp.zeros(H).at[2].set(1.0)
  term1 = jnp.zeros(H).at[1].set(1.0)
  term0 = jnp.zeros(H).at[0].set(1.0)

  def check(out, g, disc, off):
    np.testing.assert_allclose(float(out[0]), g, rtol=1e-6)
    np.testing.assert_allclose(float(out[1]), disc, rtol=1e-6)
    assert int(out[2]) == off

  # n = 3, gamma = 0.5, no terminal: G = 1 + 0.5*2 + 0.25*3 = 2.75.
  check(fn_c(rewards, no_term, 3, 0.5), 2.75, 0.125, 3)
  check(fn_l(rewards, no_term, 3, 0.5), 2.75, 0.125, 2)
  # Terminal after a_{t+2} (= n-1): correct does not bootstrap, legacy does
  # (it only checks d_t, d_{t+1}) with gamma^3 from s_{t+2}.
  check(fn_c(rewards, term2, 3, 0.5), 2.75, 0.0, 3)
  check(fn_l(rewards, term2, 3, 0.5), 2.75, 0.125, 2)
  # Terminal after a_{t+1}: G = 1 + 0.5*2 = 2, both stop.
  check(fn_c(rewards, term1, 3, 0.5), 2.0, 0.0, 3)
  check(fn_l(rewards, term1, 3, 0.5), 2.0, 0.0, 2)
  # n = 1, terminal at t: correct 0 discount, legacy bootstraps from s_t.
  check(fn_c(rewards, term0, 1, 0.5), 1.0, 0.0, 1)
  check(fn_l(rewards, term0, 1, 0.5), 1.0, 0.5, 0)
  # n = 3, gamma = 0.9, rewards 1, 0, 2: G = 1 + 0.81 * 2 = 2.62.
  r2 = jnp.asarray([1., 0., 2., 5., 5., 5., 5., 5., 5., 5.])
  check(fn_c(r2, no_term, 3, 0.9), 2.62, 0.729, 3)
  # n = 10, gamma = 0.5, all rewards 1, terminal at t+9 (= n-1):
  # G = sum_{k<10} 0.5^k = 2 - 2^-9 = 1.998046875.
  ones = jnp.ones(H)
  term9 = jnp.zeros(H).at[9].set(1.0)
  check(fn_c(ones, term9, 10, 0.5), 1.998046875, 0.0, 10)
  check(fn_l(ones, term9, 10, 0.5), 1.998046875, 0.0009765625, 9)


@pytest.mark.parametrize('legacy', [False, True])
def test_n_step_return_n_and_gamma_traced(legacy):
  traces = [0]

  def fn(r, d, n, gamma):
    traces[0] += 1
    return returns.n_step_return(r, d, n, gamma, legacy)

  jitted = jax.jit(fn)
  rng = np.random.default_rng(0)
  rewards = rng.uniform(-1, 1, size=H).astype(np.float32)
  terminals = np.zeros(H, np.float32)
  terminals[4] = 1.0
  for n, gamma in itertools.product(N_VALUES, (0.97, 0.99, 0.5)):
    ret, disc, off = jitted(jnp.asarray(rewards), jnp.asarray(terminals),
                            jnp.int32(n), jnp.float32(gamma))
    ref = ref_n_step(rewards, terminals, n, gamma, legacy)
    np.testing.assert_allclose(float(ret), ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(disc), ref[1], rtol=1e-5, atol=1e-7)
    assert int(off) == ref[2]
  assert traces[0] == 1

  # Also batched with vmap as the learner does, n and gamma shared.
  traces[0] = 0
  batched = jax.jit(
      lambda r, d, n, g: jax.vmap(lambda a, b: fn(a, b, n, g))(r, d))
  rb = rng.uniform(-1, 1, size=(4, H)).astype(np.float32)
  db = np.zeros((4, H), np.float32)
  db[1, 0] = db[2, 2] = db[3, 9] = 1.0
  for n, gamma in ((1, 0.9), (3, 0.97), (10, 0.99)):
    ret, disc, off = batched(rb, db, n, gamma)
    for b in range(4):
      ref = ref_n_step(rb[b], db[b], n, gamma, legacy)
      np.testing.assert_allclose(float(ret[b]), ref[0], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(float(disc[b]), ref[1], rtol=1e-5,
                                 atol=1e-7)
      assert int(off[b]) == ref[2]
  assert traces[0] == 1


# ---------------------------------------------------------------------------
# SPR masks.
# ---------------------------------------------------------------------------

K = 5


def _spr_terminal_cases():
  cases = [np.zeros(H, np.float32)]
  for pos in (0, 1, 2, K - 1, K, K + 1, H - 1):
    d = np.zeros(H, np.float32)
    d[pos] = 1.0
    cases.append(d)
  d = np.zeros(H, np.float32)
  d[[1, 3]] = 1.0
  cases.append(d)
  return cases


@pytest.mark.parametrize('use_jit', JIT_MODES)
@pytest.mark.parametrize('legacy', [False, True])
def test_spr_mask_matches_loop_reference(legacy, use_jit):
  fn = _maybe_jit(lambda d: returns.spr_mask(d, K, legacy), use_jit)
  for d in _spr_terminal_cases():
    np.testing.assert_array_equal(
        np.asarray(fn(jnp.asarray(d))), ref_spr_mask(d, K, legacy),
        err_msg=f'terminals={d} legacy={legacy}')


def test_spr_mask_hand_computed():
  def mask(positions, legacy):
    d = jnp.zeros(H).at[jnp.asarray(positions, jnp.int32)].set(1.0)
    return np.asarray(returns.spr_mask(d, K, legacy)).tolist()

  assert mask([], False) == [1, 1, 1, 1, 1]
  assert mask([], True) == [1, 1, 1, 1, 1]
  # Terminal after a_t: s_{t+1} is already the next episode.
  assert mask([0], False) == [0, 0, 0, 0, 0]
  assert mask([0], True) == [0, 0, 0, 0, 0]
  assert mask([2], False) == [1, 1, 0, 0, 0]
  assert mask([2], True) == [1, 0, 0, 0, 0]
  assert mask([K - 1], False) == [1, 1, 1, 1, 0]
  assert mask([K - 1], True) == [1, 1, 1, 0, 0]
  assert mask([K], False) == [1, 1, 1, 1, 1]
  assert mask([K], True) == [1, 1, 1, 1, 0]
  assert mask([K + 1], True) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize('use_jit', JIT_MODES)
@pytest.mark.parametrize('legacy', [False, True])
def test_spr_mask_batch(legacy, use_jit):
  rng = np.random.default_rng(3)
  terminals = (rng.uniform(size=(6, H)) < 0.2).astype(np.float32)
  terminals[0, :] = 0.0
  terminals[0, 1] = 1.0  # Row 0 has a terminal inside the SPR horizon.
  terminals[2, :] = 0.0
  terminals[3, 0] = 1.0
  fn = _maybe_jit(lambda d: returns.spr_mask_batch(d, K, legacy), use_jit)
  got = np.asarray(fn(jnp.asarray(terminals)))
  assert got.shape == (6, K)
  expected = np.stack([ref_spr_mask(d, K, legacy) for d in terminals])
  if legacy:
    # The official defect: batch row 0 is never masked.
    expected[0] = 1.0
    np.testing.assert_array_equal(got[0], np.ones(K))
  else:
    np.testing.assert_array_equal(got[0], [1, 0, 0, 0, 0])
  np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# Frame stacks.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('use_jit', JIT_MODES)
@pytest.mark.parametrize('stack_size', [1, 2, 4])
def test_frame_stacks_matches_loop_reference(stack_size, use_jit):
  horizon = 6
  width = stack_size - 1 + horizon + 1
  rng = np.random.default_rng(stack_size)
  frames = rng.integers(1, 256, size=(width, 2, 3), dtype=np.uint8)
  fn = _maybe_jit(
      lambda f, e, p: returns.frame_stacks(f, e, p, stack_size), use_jit)
  positions = np.arange(horizon + 1, dtype=np.int32)
  patterns = [np.zeros(width, np.uint8), np.ones(width, np.uint8)]
  for pos in range(width):
    e = np.zeros(width, np.uint8)
    e[pos] = 1
    patterns.append(e)
  for _ in range(5):
    patterns.append((rng.uniform(size=width) < 0.3).astype(np.uint8))
  for e in patterns:
    got = np.asarray(fn(jnp.asarray(frames), jnp.asarray(e),
                        jnp.asarray(positions)))
    assert got.dtype == np.uint8
    assert got.shape == (horizon + 1, 2, 3, stack_size)
    np.testing.assert_array_equal(
        got, ref_frame_stacks(frames, e, positions, stack_size),
        err_msg=f'episode_ends={e}')
  # A subset of positions, e.g. only the bootstrap state s_{t+3}.
  e = patterns[stack_size + 2]
  sub = np.asarray([3, 0], np.int32)
  np.testing.assert_array_equal(
      np.asarray(fn(jnp.asarray(frames), jnp.asarray(e), jnp.asarray(sub))),
      ref_frame_stacks(frames, e, sub, stack_size))


def test_frame_stacks_hand_computed():
  # S = 4, H = 5: window indices 0..8 = slots t-3 .. t+5; frame i = 10*(i+1).
  frames = (10 * np.arange(1, 10, dtype=np.uint8))[:, None, None] * np.ones(
      (1, 1, 2), np.uint8)
  ends = np.zeros(9, np.uint8)
  ends[4] = 1  # Episode ended after a_{t+1} (window index 4).
  stacks = np.asarray(
      returns.frame_stacks(jnp.asarray(frames), jnp.asarray(ends),
                           jnp.arange(6), 4))
  got = stacks[:, 0, 0, :].tolist()  # (P, S)
  assert got == [
      [10, 20, 30, 40],  # s_t: window 0..3, no end before index 3.
      [20, 30, 40, 50],  # s_{t+1}: window 1..4, end at 4 is after s_{t+1}.
      [0, 0, 0, 60],  # s_{t+2}: first state of the new episode.
      [0, 0, 60, 70],
      [0, 60, 70, 80],
      [60, 70, 80, 90],
  ]
  assert stacks.shape == (6, 1, 2, 4)
  np.testing.assert_array_equal(stacks[:, :, 0], stacks[:, :, 1])
