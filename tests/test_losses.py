# coding=utf-8
"""C51 projection, C51 cross-entropy and SPR's loss against references.

The projection is checked against Dopamine's own (unbatched)
`rainbow_agent.project_distribution` and a hand-computed case; the losses
against plain numpy.
"""

from dopamine.jax.agents.rainbow import rainbow_agent
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import losses

ATOMS, V_MAX = 51, 10.0


def _dopamine_projection(target_support, probs, support):
  # Dopamine's signature: (supports, weights, target_support), one example.
  return jax.vmap(rainbow_agent.project_distribution,
                  in_axes=(0, 0, None))(target_support, probs, support)


def _random_case(seed, batch=16):
  rng = np.random.default_rng(seed)
  support = np.linspace(-V_MAX, V_MAX, ATOMS).astype(np.float32)
  rewards = rng.uniform(-4.0, 4.0, (batch, 1))
  discounts = rng.uniform(0.0, 1.0, (batch, 1))
  # Shifted atoms G + gamma^n z_j; include examples whose shifted support
  # sticks out of [-10, 10] on either side, and one wildly outside.
  target_support = rewards + discounts * support[None, :]
  target_support[0] = support * 1.7 + 3.0
  target_support[1] = support - 25.0
  target_support[2] = support + 25.0
  target_support[3] = rng.uniform(-30, 30, ATOMS)  # not even monotonic
  logits = rng.normal(size=(batch, ATOMS)) * 2.0
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return (target_support.astype(np.float32), probs.astype(np.float32),
          support)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_projection_matches_dopamine(seed):
  target_support, probs, support = _random_case(seed)
  # Sanity: the case really has mass outside [v_min, v_max].
  assert (target_support < -V_MAX).any() and (target_support > V_MAX).any()
  ours = losses.project_distribution(jnp.asarray(target_support),
                                     jnp.asarray(probs), jnp.asarray(support))
  theirs = _dopamine_projection(jnp.asarray(target_support),
                                jnp.asarray(probs), jnp.asarray(support))
  assert ours.shape == (target_support.shape[0], ATOMS)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs),
                             rtol=1e-5, atol=1e-6)
  # A projection of a distribution is a distribution.
  np.testing.assert_allclose(np.asarray(ours).sum(-1), 1.0, rtol=1e-5)
  assert (np.asarray(ours) >= 0).all()


def test_projection_entirely_outside_goes_to_the_edge_atoms():
  target_support, probs, support = _random_case(3)
  ours = np.asarray(losses.project_distribution(
      jnp.asarray(target_support), jnp.asarray(probs), jnp.asarray(support)))
  expected_low = np.zeros(ATOMS, np.float32)
  expected_low[0] = 1.0
  expected_high = np.zeros(ATOMS, np.float32)
  expected_high[-1] = 1.0
  np.testing.assert_allclose(ours[1], expected_low, atol=1e-5)
  np.testing.assert_allclose(ours[2], expected_high, atol=1e-5)


def test_projection_of_the_identity_is_the_identity():
  _, probs, support = _random_case(4)
  target_support = np.broadcast_to(support, probs.shape)
  ours = losses.project_distribution(jnp.asarray(target_support),
                                     jnp.asarray(probs), jnp.asarray(support))
  np.testing.assert_allclose(np.asarray(ours), probs, atol=1e-6)


def test_projection_hand_computed_three_atoms():
  # Support z = (-1, 0, 1), dz = 1.
  support = jnp.array([-1.0, 0.0, 1.0])
  target_support = jnp.array([
      # -2 clips to -1 -> all of 0.2 on z_0; 0.25 -> 0.75 * 0.3 on z_1 and
      # 0.25 * 0.3 on z_2; 0.5 -> half of 0.5 on each of z_1, z_2.
      [-2.0, 0.25, 0.5],
      # -0.5 -> 0.2 on z_0 and 0.2 on z_1; 1.5 and 3 clip to 1 -> z_2.
      [-0.5, 1.5, 3.0],
  ])
  probs = jnp.array([[0.2, 0.3, 0.5], [0.4, 0.1, 0.5]])
  expected = np.array([
      [0.2, 0.225 + 0.25, 0.075 + 0.25],
      [0.2, 0.2, 0.6],
  ])
  ours = losses.project_distribution(target_support, probs, support)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(_dopamine_projection(target_support, probs, support)),
      expected, atol=1e-6)


def test_c51_cross_entropy_matches_numpy():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(7, ATOMS)).astype(np.float32) * 3.0
  target = rng.uniform(size=(7, ATOMS)).astype(np.float32)
  target /= target.sum(-1, keepdims=True)
  # numpy reference in float64: -sum m log softmax(logits).
  l64 = logits.astype(np.float64)
  log_p = l64 - l64.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  expected = -(target * log_p).sum(-1)
  ours = losses.c51_cross_entropy(jnp.asarray(target), jnp.asarray(logits))
  assert ours.shape == (7,)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5)


def test_c51_cross_entropy_hand_computed():
  # Uniform logits over 4 atoms: -log(1/4) whatever the target.
  logits = jnp.zeros((2, 4))
  target = jnp.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
  np.testing.assert_allclose(
      np.asarray(losses.c51_cross_entropy(target, logits)),
      [np.log(4.0)] * 2, rtol=1e-6)
  # One-hot target: -log p_k with p = softmax([0, ln 3]) = (1/4, 3/4).
  logits = jnp.array([[0.0, np.log(3.0)]])
  np.testing.assert_allclose(
      np.asarray(losses.c51_cross_entropy(jnp.array([[0.0, 1.0]]), logits)),
      [-np.log(0.75)], rtol=1e-6)


def _numpy_spr(pred, target, mask):
  pred = pred.astype(np.float64)
  target = target.astype(np.float64)
  cos = (pred * target).sum(-1) / (np.linalg.norm(pred, axis=-1) *
                                   np.linalg.norm(target, axis=-1))  # (K, B)
  return ((2.0 - 2.0 * cos) * mask.T).mean(0)  # (B,)


K, B, D = 5, 6, 16


def test_spr_loss_zero_for_identical_and_scaled_targets():
  rng = np.random.default_rng(6)
  pred = rng.normal(size=(K, B, D)).astype(np.float32)
  mask = np.ones((B, K), np.float32)
  np.testing.assert_allclose(
      np.asarray(losses.spr_loss(pred, pred, mask)), np.zeros(B), atol=1e-6)
  scales = rng.uniform(0.01, 100.0, (K, B, 1)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(losses.spr_loss(pred, pred * scales, mask)), np.zeros(B),
      atol=1e-5)
  # Opposite targets: 2 - 2 cos = 4 on every step.
  np.testing.assert_allclose(
      np.asarray(losses.spr_loss(pred, -3.0 * pred, mask)), np.full(B, 4.0),
      rtol=1e-5)


def test_spr_loss_matches_numpy():
  rng = np.random.default_rng(7)
  pred = rng.normal(size=(K, B, D)).astype(np.float32)
  target = rng.normal(size=(K, B, D)).astype(np.float32) * 5.0
  mask = np.ones((B, K), np.float32)
  ours = losses.spr_loss(jnp.asarray(pred), jnp.asarray(target),
                         jnp.asarray(mask))
  assert ours.shape == (B,)
  np.testing.assert_allclose(np.asarray(ours), _numpy_spr(pred, target, mask),
                             rtol=1e-5, atol=1e-6)


def test_spr_loss_masked_steps_contribute_zero():
  rng = np.random.default_rng(8)
  pred = rng.normal(size=(K, B, D)).astype(np.float32)
  target = rng.normal(size=(K, B, D)).astype(np.float32)
  # Episode ends after step e for example b: steps e+1.. are masked.
  mask = np.ones((B, K), np.float32)
  for b, end in enumerate([5, 4, 2, 1, 0, 3]):
    mask[b, end:] = 0.0
  ours = np.asarray(losses.spr_loss(jnp.asarray(pred), jnp.asarray(target),
                                    jnp.asarray(mask)))
  np.testing.assert_allclose(ours, _numpy_spr(pred, target, mask),
                             rtol=1e-5, atol=1e-6)
  # Fully masked example: 0. Changing masked steps' inputs changes nothing.
  assert ours[4] == 0.0
  garbage_pred, garbage_target = pred.copy(), target.copy()
  garbage_pred[2:, 2] = 1e3 * rng.normal(size=(K - 2, D))
  garbage_target[2:, 2] = -garbage_pred[2:, 2]
  again = np.asarray(losses.spr_loss(jnp.asarray(garbage_pred),
                                     jnp.asarray(garbage_target),
                                     jnp.asarray(mask)))
  np.testing.assert_allclose(again, ours, rtol=1e-6)
  # The average is over all K steps (masked ones count as 0), as in the
  # official agent: example 3 keeps only step 1.
  cos = (pred[0, 3] @ target[0, 3]) / (np.linalg.norm(pred[0, 3]) *
                                       np.linalg.norm(target[0, 3]))
  np.testing.assert_allclose(ours[3], (2 - 2 * cos) / K, rtol=1e-5)
