# coding=utf-8
"""ReDo: recycling dormant neurons (Sokar et al., 2023, algorithm 1).

Every `every` gradient steps, on a batch of replay states:
  1. score each neuron i of a recyclable layer,
     s_i = E|h_i| / ((1/H) sum_j E|h_j|)  (definition 3.1, diagnostics.py);
  2. neurons with s_i <= tau are dormant;
  3. a dormant neuron's incoming weights (its kernel column and bias) are
     drawn afresh from the network's initialiser, its outgoing weights (the
     next layer's kernel rows that read it) are set to zero, so the network's
     output is unchanged at the moment of recycling;
  4. the Adam moments (mu, nu) of all those weights are zeroed, so stale
     statistics do not drive the new weights.
Everything else (other neurons, the step count, the EMA target network,
which follows the online network through its EMA) is left bit-identical.

Recyclable layers are those whose output feeds exactly one set of next-layer
weights, so that "outgoing weights" is well defined (names as in
diagnostics.py):
  Impala   encoder_block{i}_conv0: relu(ResidualBlock_i/Conv_0) -> Conv_1.
           The stage convolutions and the blocks' second convolutions feed
           the residual stream, whose channels every later block and the
           next stage read through the skip path, so they are not recycled.
  Nature   encoder_conv0 -> Conv_1, encoder_conv1 -> Conv_2.
  Dense projection (BBF's penultimate layer): relu(projection) -> the
           dueling head's value and advantage kernels, and SPR's predictor
           (which reads the projection) -> predictor kernel rows.
Layer groups for `layers`: 'encoder' (all of the encoder's recyclable
layers) and 'projection'. The SoftMoE head and noisy layers have no
recyclable projection: asking for one is an error.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import diagnostics
from bbf_dopamine import networks

LAYER_GROUPS = ('encoder', 'projection')


def parse_layers(layers):
  """'encoder,projection' -> ('encoder', 'projection'), checked."""
  if isinstance(layers, str):
    layers = tuple(x.strip() for x in layers.split(',') if x.strip())
  layers = tuple(layers)
  unknown = sorted(set(layers) - set(LAYER_GROUPS))
  if unknown or not layers:
    raise ValueError(f'Unknown or empty ReDo layers {unknown or layers!r}; '
                     f'choose from {LAYER_GROUPS}.')
  return layers


def recyclable_layers(network, params, groups):
  """{layer: (incoming keys, ((outgoing key, input axis), ...))}.

  Keys are `networks.parameter_key` tuples; a layer's neurons are the last
  axis of its incoming kernel and bias.
  """
  tree = params['params']
  spec = {}
  if 'encoder' in groups:
    encoder = tree['encoder']
    if network.encoder_type == 'impala':
      blocks = sorted((k for k in encoder if k.startswith('ResidualBlock_')),
                      key=lambda k: int(k.split('_')[1]))
      for block in blocks:
        i = int(block.split('_')[1])
        base = ('encoder', block)
        spec[f'encoder_block{i}_conv0'] = (
            (base + ('Conv_0', 'kernel'), base + ('Conv_0', 'bias')),
            ((base + ('Conv_1', 'kernel'), 2),))  # HWIO: I is axis 2
    else:  # nature: Conv_0 -> Conv_1 -> Conv_2
      for k in (0, 1):
        spec[f'encoder_conv{k}'] = (
            (('encoder', f'Conv_{k}', 'kernel'),
             ('encoder', f'Conv_{k}', 'bias')),
            ((('encoder', f'Conv_{k + 1}', 'kernel'), 2),))
  if 'projection' in groups:
    if network.head_type != 'dense' or network.noisy:
      raise ValueError("ReDo on the projection needs head_type='dense' and "
                       'noisy=False; use redo_layers=\'encoder\' for this '
                       'network.')
    outgoing = [(('head', 'advantage', 'kernel'), 0),
                (('predictor', 'kernel'), 0)]
    if 'value' in tree['head']:
      outgoing.append((('head', 'value', 'kernel'), 0))
    spec['projection'] = ((('projection', 'kernel'), ('projection', 'bias')),
                          tuple(outgoing))
  return spec


def _broadcast(mask, ndim, axis):
  shape = [1] * ndim
  shape[axis] = -1
  return mask.reshape(shape)


def recycle(params, fresh, opt_state, masks, spec):
  """Applies ReDo for given dormant masks; pure.

  Args:
    params: online parameters ({'params': ...}).
    fresh: a freshly initialised parameter tree of the same structure.
    opt_state: the optimiser state (Adam mu / nu mirror `params`).
    masks: {layer: (units,) bool}, True for a dormant neuron.
    spec: `recyclable_layers` output.

  Returns:
    (new params, new optimiser state).
  """
  incoming, outgoing = {}, {}
  for layer, (ins, outs) in spec.items():
    for key in ins:
      incoming[key] = masks[layer]
    for key, axis in outs:
      outgoing.setdefault(key, []).append((masks[layer], axis))

  def edit(path, leaf, incoming_value):
    # Parameters get fresh incoming weights, Adam moments zeros; both get
    # zero outgoing weights. Leaves outside the spec (biases of other
    # layers, step counts: key None) pass through bit-identical.
    key = networks.parameter_key(path)
    for mask, axis in outgoing.get(key, ()):  # zero outgoing weights
      leaf = jnp.where(_broadcast(mask, leaf.ndim, axis), 0.0, leaf)
    # Incoming last: a weight between two dormant neurons of consecutive
    # layers is fresh, as when layers are recycled in order.
    if key in incoming:
      leaf = jnp.where(_broadcast(incoming[key], leaf.ndim, -1),
                       incoming_value, leaf)
    return leaf

  params = jax.tree_util.tree_map_with_path(edit, params, fresh)
  opt_state = jax.tree_util.tree_map_with_path(
      lambda path, leaf: edit(path, leaf, 0.0), opt_state)
  return params, opt_state


@functools.partial(jax.jit, static_argnames=('network', 'groups'))
def recycle_dormant(network, params, fresh, opt_state, states, tau, groups):
  """Scores neurons on `states`, recycles the tau-dormant ones.

  Args:
    network: the BBFNetwork.
    params, fresh, opt_state: see `recycle`.
    states: (B, h, w[, C], S) uint8 replay states.
    tau: float32 threshold (traced).
    groups: tuple of LAYER_GROUPS (static).

  Returns:
    new params, new optimiser state, {layer: recycled fraction, 'all': ...}.
  """
  spec = recyclable_layers(network, params, groups)
  layers = diagnostics.activations(network, params, states)
  masks = {name: diagnostics.dormant_mask(layers[name], tau) for name in spec}
  params, opt_state = recycle(params, fresh, opt_state, masks, spec)
  fractions = {name: jnp.mean(m.astype(jnp.float32))
               for name, m in masks.items()}
  total = sum(m.size for m in masks.values())
  fractions['all'] = sum(jnp.sum(m) for m in masks.values()) / total
  return params, opt_state, fractions


class Recycler(object):
  """When and on what the agent recycles; owns its replay-sampling RNG."""

  def __init__(self, every, tau, layers, batch_size, seed):
    if every < 0 or tau < 0 or batch_size < 1:
      raise ValueError(f'ReDo needs redo_every >= 0 (0: off), redo_tau >= 0 '
                       f'and redo_batch_size >= 1; got {every}, {tau}, '
                       f'{batch_size}.')
    self.every = int(every)
    self.tau = float(tau)
    self.groups = parse_layers(layers) if self.every else ()
    self.batch_size = int(batch_size)
    # Its own stream: recycling never shifts the training batches' draws.
    self._rng = np.random.default_rng([int(seed), 11])

  def due(self, previous_step, step):
    return self.every > 0 and step // self.every > previous_step // self.every

  def sample_states(self, replay, stacks_fn):
    indices, _ = replay.sample(self.batch_size, self._rng)
    window = replay.gather(indices)
    return stacks_fn(window['frames'], window['episode_ends'])

  def fresh_key(self):
    return jax.random.PRNGKey(int(self._rng.integers(2**31)))

  def bundle(self):
    return {'rng': self._rng.bit_generator.state}

  def unbundle(self, saved):
    self._rng.bit_generator.state = saved['rng']
