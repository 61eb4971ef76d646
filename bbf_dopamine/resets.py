# coding=utf-8
"""Shrink-and-perturb resets (Ash & Adams, 2020; D'Oro et al., 2023; BBF 3).

For each top-level module m of the parameter tree:
  m in shrink_perturb_keys:   theta <- shrink * theta + perturb * theta_fresh
  otherwise:                  theta <- theta_fresh
The target network gets the same treatment with its own fresh draw.

Optimiser state: BBF means to keep the Adam moments of the modules it only
shrinks and to clear those of the modules it re-initialises; the official code
clears everything (moments and step count). `reset_optimizer_state` does the
former by default and the latter with `legacy=True`.
"""

import jax
import jax.numpy as jnp

from bbf_dopamine import networks


def shrink_perturb(params, fresh, shrink_perturb_keys, shrink_factor,
                   perturb_factor):
  """Returns the reset parameters; both trees have the same structure."""
  def reset_leaf(path, old, new):
    if networks.module_name(path) in shrink_perturb_keys:
      return shrink_factor * old + perturb_factor * new
    return new
  return jax.tree_util.tree_map_with_path(reset_leaf, params, fresh)


def reset_optimizer_state(opt_state, shrink_perturb_keys, legacy=False):
  """Clears optimiser statistics of re-initialised modules.

  Leaves that belong to a module (Adam's mu and nu mirror the parameter tree)
  are zeroed unless the module is in `shrink_perturb_keys`. Leaves outside any
  module (Adam's step count) are kept. With `legacy=True` every leaf is zeroed,
  as the official BBF code does.
  """
  def reset_leaf(path, leaf):
    if legacy:
      return jnp.zeros_like(leaf)
    module = networks.module_name(path)
    if module is None or module in shrink_perturb_keys:
      return leaf
    return jnp.zeros_like(leaf)
  return jax.tree_util.tree_map_with_path(reset_leaf, opt_state)
