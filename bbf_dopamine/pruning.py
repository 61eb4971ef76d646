# coding=utf-8
"""Gradual magnitude pruning (Zhu & Gupta, 2017) for the BBF agent.

Schedule (Zhu & Gupta, 2017, eq. 1, with initial sparsity s_i = 0):
  s(t) = s_f * (1 - (1 - (t - t_0) / (t_1 - t_0))^3)   for t_0 <= t <= t_1,
  s(t) = 0 before t_0 and s_f after t_1,
with t the agent step and t_0, t_1 the start and end of pruning as fractions
of training (Graesser et al., 2022, and Obando-Ceron et al., 2024, "In
value-based deep RL, a pruned network is a good network", prune from 20% to
80% of training). Every `frequency` gradient steps inside [t_0, t_1] (and
once more at t_1 to reach s_f exactly) each pruned weight tensor keeps its
ceil((1 - s) * n) largest-magnitude weights: floor(s * n) of its n weights
are zero, per tensor (uniform sparsity across layers). Already pruned weights
are always among those pruned next, so a mask only ever loses entries.

Pruned tensors: every kernel (ndim > 1) of the modules named in `layers`;
biases are never pruned. Masks hold after every optimiser update
(learner.py): gradients are masked before AdamW, so the moments of a pruned
weight stay zero, and the updated online and EMA target parameters are
masked after it, so neither momentum nor weight decay revives a pruned
weight. At a pruning step the newly pruned weights' moments are zeroed too.

Resets: the pruning papers train without resets, so what a shrink-and-perturb
reset does to the masks is our choice (`BBFAgent.pruning_on_reset`):
  'keep': the fresh draw is masked, so the sparse topology and its sparsity
      survive the reset and the schedule continues on the agent-step clock.
      The fully reset layers then are a random sparse network whose surviving
      positions were chosen for the old weights' magnitudes.
  'regrow': the reset makes every pruned tensor dense again (masks all ones,
      the encoder's shrink-and-perturb mix dense too), and the next pruning
      step on the schedule, `frequency` gradient steps later, prunes the
      retrained weights by magnitude to the schedule's sparsity at that point
      (the target once past t_1). Pruning after the last reset ends sparse.
results/minatar/README.md compares the two.
"""


from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import networks
from bbf_dopamine import schedules


def sparsity_at(step, start, end, target):
  """Zhu & Gupta's cubic schedule s(t) (float, 0 <= s <= target)."""
  if target <= 0 or step < start:
    return 0.0
  if step >= end:
    return float(target)
  progress = (step - start) / (end - start)
  return float(target) * (1.0 - (1.0 - progress) ** 3)


def parse_layers(layers):
  if isinstance(layers, str):
    layers = tuple(x.strip() for x in layers.split(',') if x.strip())
  layers = tuple(layers)
  unknown = sorted(set(layers) - set(networks.MODULE_NAMES))
  if unknown or not layers:
    raise ValueError(f'Unknown or empty prune_layers {unknown or layers!r}; '
                     f'modules are {networks.MODULE_NAMES}.')
  return layers


def prunable(path, leaf, layers):
  return networks.module_name(path) in layers and leaf.ndim > 1


def initial_masks(params, layers):
  """All-ones masks: a float32 array per pruned tensor, a scalar 1 elsewhere

  (the scalar broadcasts, so `tree_map(jnp.multiply, params, masks)` leaves
  unpruned tensors unchanged)."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: (jnp.ones(x.shape, jnp.float32) if prunable(p, x, layers)
                    else jnp.ones((), jnp.float32)), params)


def num_pruned(masks, sparsity):
  """Per tensor, floor(sparsity * n) as int32 (0 for unpruned leaves)."""
  return jax.tree_util.tree_map(
      lambda m: np.int32(np.floor(sparsity * m.size)) if m.ndim else
      np.int32(0), masks)


def _mask_one(weight, mask, count):
  """Keeps all but the `count` smallest |w|, previously pruned ones first."""
  if mask.ndim == 0:
    return mask
  score = jnp.where(mask > 0, jnp.abs(weight), -1.0).ravel()
  order = jnp.argsort(score, stable=True)  # ascending
  ranks = jnp.zeros_like(order).at[order].set(jnp.arange(order.size))
  return (ranks >= count).astype(jnp.float32).reshape(weight.shape)


def apply_masks(tree, masks):
  return jax.tree_util.tree_map(lambda x, m: x * m, tree, masks)


def mask_moments(opt_state, masks):
  """Zeroes Adam's mu / nu entries of pruned weights (keys as in params)."""
  by_key = {networks.parameter_key(p): m for p, m in
            jax.tree_util.tree_flatten_with_path(masks)[0]}

  def edit(path, leaf):
    mask = by_key.get(networks.parameter_key(path))
    if mask is None or mask.ndim == 0 or mask.shape != leaf.shape:
      return leaf
    return leaf * mask
  return jax.tree_util.tree_map_with_path(edit, opt_state)


@jax.jit
def prune(state, counts):
  """Magnitude-prunes `state` (a learner.TrainState with masks); pure.

  Args:
    state: TrainState whose `masks` are the current masks.
    counts: tree like the masks: int32 number of zeros per pruned tensor.

  Returns:
    the state with new masks applied to online and target parameters and
    to the optimiser moments.
  """
  masks = jax.tree_util.tree_map(_mask_one, state.online_params, state.masks,
                                 counts)
  return state._replace(
      online_params=apply_masks(state.online_params, masks),
      target_params=apply_masks(state.target_params, masks),
      opt_state=mask_moments(state.opt_state, masks),
      masks=masks)


def sparsities(masks):
  """{'module/.../kernel': zero fraction, module: ..., 'all': ...}."""
  values, per_module = {}, {}
  for path, mask in jax.tree_util.tree_flatten_with_path(masks)[0]:
    if mask.ndim == 0:
      continue
    key = networks.parameter_key(path)
    zeros = float(np.sum(np.asarray(mask) == 0))
    values['/'.join(key)] = zeros / mask.size
    total = per_module.setdefault(key[0], [0.0, 0])
    total[0] += zeros
    total[1] += mask.size
  for module, (zeros, size) in per_module.items():
    values[module] = zeros / size
  if per_module:
    values['all'] = (sum(z for z, _ in per_module.values()) /
                     sum(n for _, n in per_module.values()))
  return values


RESET_RULES = ('keep', 'regrow')


class Pruner(object):
  """The schedule on the agent's clocks; pruning itself is `prune`."""

  def __init__(self, target_sparsity, start, end, frequency, layers,
               total_steps, on_reset='keep'):
    if on_reset not in RESET_RULES:
      raise ValueError(f'Unknown pruning_on_reset {on_reset!r}; expected one '
                       f'of {RESET_RULES}.')
    if not 0.0 <= target_sparsity < 1.0:
      raise ValueError(f'target_sparsity={target_sparsity} must be in [0, 1).')
    if not 0.0 <= start < end <= 1.0:
      raise ValueError(f'Pruning needs 0 <= pruning_start < pruning_end <= 1 '
                       f'(fractions of training); got {start}, {end}.')
    if frequency < 1 or total_steps < 1:
      raise ValueError(f'pruning_frequency ({frequency}) and '
                       f'pruning_total_steps ({total_steps}) must be positive.')
    self.target = float(target_sparsity)
    self.layers = parse_layers(layers) if self.target else ()
    self.frequency = int(frequency)
    self.start_step = start * total_steps  # agent steps
    self.end_step = end * total_steps
    self.on_reset = on_reset
    self.applied = 0.0  # sparsity of the last pruning step
    # After a regrowing reset: prune only on the schedule's period, even past
    # t_1, so the fresh weights train before their magnitudes are compared.
    self.regrown = False

  @property
  def enabled(self):
    return self.target > 0

  def warn_about_resets(self, reset_every, no_resets_after):
    """Logs a warning when pruning meets resets (not an error: a choice)."""
    # Resets happen at all if and only if the first one fits.
    first = schedules.is_reset_step(reset_every, reset_every, no_resets_after)
    if self.enabled and first:
      logging.warning(
          'Pruning to %s with resets every %d agent steps (pruning_on_reset='
          '%r): on MinAtar Breakout this combination collapsed at the reset '
          'after the sparsity passed about 80%% (results/minatar/README.md); '
          'the pruning gin files set BBFAgent.no_resets_after = 0.',
          self.target, reset_every, self.on_reset)

  def masks_after_reset(self, masks):
    """Pure (jitted with the reset): the masks a reset leaves."""
    if masks is None or self.on_reset == 'keep':
      return masks
    return jax.tree_util.tree_map(jnp.ones_like, masks)

  def reset(self):
    """Host side of a reset: the regrown network is dense again."""
    if self.enabled and self.on_reset == 'regrow':
      self.applied = 0.0
      self.regrown = True

  def pruned(self, sparsity):
    self.applied = sparsity
    self.regrown = False

  def due(self, previous_step, step, agent_step):
    """The sparsity to prune to after this gradient step, or None."""
    if not self.enabled or agent_step < self.start_step:
      return None
    sparsity = sparsity_at(agent_step, self.start_step, self.end_step,
                           self.target)
    on_schedule = step // self.frequency > previous_step // self.frequency
    at_target = sparsity >= self.target and not self.regrown
    if sparsity > self.applied and (on_schedule or at_target):
      return sparsity
    return None

  def bundle(self):
    return {'applied': self.applied, 'regrown': self.regrown}

  def unbundle(self, saved):
    self.applied = saved['applied']
    # Checkpoints written before pruning_on_reset existed lack it.
    self.regrown = bool(saved.get('regrown', False))
