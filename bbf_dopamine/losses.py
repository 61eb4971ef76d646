# coding=utf-8
"""Pure loss functions: C51 projection and cross-entropy, SPR's cosine loss.

Each function is written for a batch with shapes in the comments; all are
jit-safe and free of side effects.
"""

import jax
import jax.numpy as jnp


def project_distribution(target_support, probs, support):
  """Projects a categorical distribution on `target_support` onto `support`.

  Bellemare et al. (2017), eq. 7:
    (Phi T z)_i = sum_j [1 - |clip(T z_j, V_min, V_max) - z_i| / dz]_0^1 p_j

  Args:
    target_support: (batch, atoms) shifted atoms T z_j = G + discount * z_j.
    probs: (batch, atoms) probabilities p_j of the bootstrap distribution.
    support: (atoms,) fixed, evenly spaced atoms z_i.

  Returns:
    (batch, atoms) projected probabilities.
  """
  v_min, v_max = support[0], support[-1]
  delta_z = (v_max - v_min) / (support.shape[0] - 1)
  clipped = jnp.clip(target_support, v_min, v_max)  # (batch, atoms_j)
  # weight[b, i, j] = [1 - |T z_j - z_i| / dz]_0^1
  weight = jnp.clip(
      1.0 - jnp.abs(clipped[:, None, :] - support[None, :, None]) / delta_z,
      0.0, 1.0)
  return jnp.einsum('bij,bj->bi', weight, probs)


def c51_cross_entropy(target_probs, logits):
  """-sum_i m_i log p_i per example; (batch, atoms) x2 -> (batch,)."""
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits), axis=-1)


def spr_loss(predictions, targets, mask):
  """SPR's normalised L2 loss, SPR eq. (4): ||p/|p| - z/|z|||^2 = 2 - 2 cos.

  Args:
    predictions: (K, batch, dim) online predictions for steps 1..K.
    targets: (K, batch, dim) target projections for steps 1..K.
    mask: (batch, K) 1 where step k is in the same episode.

  Returns:
    (batch,) loss averaged over the K steps (masked steps contribute 0, as in
    the official agent).
  """
  normalize = lambda x: x / jnp.maximum(
      jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  per_step = jnp.sum(
      (normalize(predictions) - normalize(targets)) ** 2, axis=-1)  # (K, B)
  return jnp.mean(per_step * mask.T, axis=0)
