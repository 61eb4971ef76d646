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


def _top_level_module(path):
  """The network module a tree path lies in, or None.

  That is the key right after flax's 'params' root (parameter trees and Adam's
  mu / nu, which mirror them), or the path's first key for a tree without that
  root. Other keys that happen to spell a module name, such as the optimiser
  partition labels 'encoder' and 'head' of `optax.multi_transform`, are not
  modules: Adam's step counts lie under those labels but outside any module.
  """
  from bbf_dopamine import networks  # pylint: disable=g-import-not-at-top
  keys = [getattr(entry, 'key', None) for entry in path]
  if 'params' in keys:
    after = keys.index('params') + 1
    key = keys[after] if after < len(keys) else None
  else:
    key = keys[0] if keys else None
  return key if key in networks.MODULE_NAMES else None


def shrink_perturb(params, fresh, shrink_perturb_keys, shrink_factor,
                   perturb_factor):
  """Returns the reset parameters; both trees have the same structure."""
  def reset_leaf(path, old, new):
    if _top_level_module(path) in shrink_perturb_keys:
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
    module = _top_level_module(path)
    if module is None or module in shrink_perturb_keys:
      return leaf
    return jnp.zeros_like(leaf)
  return jax.tree_util.tree_map_with_path(reset_leaf, opt_state)
