# coding=utf-8
"""DrQ augmentation as used by SPR and BBF: random shift, then intensity.

Kostrikov et al. (2021), "Image Augmentation Is All You Need", section 3.1
(pad 4 with edge replication, random crop back to the input size); Schwarzer
et al. (2021), appendix: intensity x * (1 + 0.05 * clip(N(0, 1), -2, 2)).
"""

import jax
import jax.numpy as jnp

PAD = 4
INTENSITY_SCALE = 0.05


def random_shift(key, images):
  """Per-image random translation by up to PAD pixels.

  Args:
    key: PRNG key.
    images: (N, h, w, c) float.

  Returns:
    (N, h, w, c) shifted images.
  """
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)),
                   mode='edge')
  offsets = jax.random.randint(key, (n, 2), 0, 2 * PAD + 1)
  crop = lambda img, off: jax.lax.dynamic_slice(
      img, (off[0], off[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def intensity(key, images):
  """x * (1 + 0.05 * clip(eps, -2, 2)), one eps per image."""
  noise = jax.random.normal(key, (images.shape[0], 1, 1, 1))
  return images * (1.0 + INTENSITY_SCALE * jnp.clip(noise, -2.0, 2.0))


def augment(key, images):
  """(N, h, w, c) float in [0, 1] -> augmented images of the same shape."""
  key_shift, key_intensity = jax.random.split(key)
  return intensity(key_intensity, random_shift(key_shift, images))
