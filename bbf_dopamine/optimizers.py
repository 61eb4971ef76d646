# coding=utf-8
"""AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), BBF's setup.

BBF (appendix A): lr 1e-4 for encoder and head, Adam eps 1.5e-4 (from DER),
weight decay 0.1, no decay on biases or other rank-1 parameters, no gradient
clipping. The encoder and transition model can use their own learning rate
(`encoder_learning_rate`), like the official agent's two optimisers.
"""

import gin
import jax
import optax

from bbf_dopamine import networks

ENCODER_MODULES = ('encoder', 'transition_model')


def _labels(params):
  def label(path, _):
    module = networks.module_name(path)
    return 'encoder' if module in ENCODER_MODULES else 'head'
  return jax.tree_util.tree_map_with_path(label, params)


def _decay_mask(params):
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


@gin.configurable
def create_scaling_optimizer(learning_rate=1e-4,
                             encoder_learning_rate=1e-4,
                             b1=0.9,
                             b2=0.999,
                             eps=1.5e-4,
                             weight_decay=0.1):
  """Builds the optimiser; weight_decay = 0 gives plain Adam."""
  for name, value in (('learning_rate', learning_rate),
                      ('encoder_learning_rate', encoder_learning_rate),
                      ('eps', eps)):
    if value <= 0:
      raise ValueError(f'create_scaling_optimizer.{name} must be positive, '
                       f'got {value}.')
  if weight_decay < 0:
    raise ValueError(f'weight_decay must be >= 0, got {weight_decay}.')
  make = lambda lr: optax.adamw(lr, b1=b1, b2=b2, eps=eps,
                                weight_decay=weight_decay, mask=_decay_mask)
  return optax.multi_transform(
      {'encoder': make(encoder_learning_rate), 'head': make(learning_rate)},
      _labels)
