# coding=utf-8
"""Plasticity and representation diagnostics as pure, jit-compatible functions.

  Dormant neurons   Sokar et al. (2023), "The Dormant Neuron Phenomenon in
                    Deep Reinforcement Learning", definition 3.1.
  Effective rank    Kumar et al. (2021), "Implicit Under-Parameterization
                    Inhibits Data-Efficient Deep Reinforcement Learning",
                    srank_delta with delta = 0.01.
  Policy churn      Schaul et al. (2022), "The Phenomenon of Policy Churn".
  Norms, Q statistics and Monte-Carlo over-estimation (host-side returns).

Layers of `activations`: each is a tensor the network itself passes through a
ReLU, read with flax's `capture_intermediates` (networks.py is unchanged).
Neurons are output channels (conv) or units (dense); conv activations are
averaged over batch and spatial positions.
  encoder_conv{k}        Nature: relu(encoder/Conv_k output), k = 0, 1, 2.
  encoder_conv{s}        Impala: relu(max_pool(encoder/Conv_s output)), the
                         first ReLU of stage s's first block.
  encoder_block{i}_conv0 Impala: relu(encoder/ResidualBlock_i/Conv_0 output),
                         the input of that block's Conv_1.
  encoder_block{i}       Impala: relu(encoder/ResidualBlock_i output), only
                         where the network applies one: before the next block
                         of the stage, and after the encoder's last block (the
                         encoder output). A stage's last block feeds the next
                         stage's conv without a ReLU.
  projection             relu(projection output): the penultimate
                         representation, the dueling head's input.
A block's Conv_1 has no ReLU of its own (it is added to the skip path).

Metric names are TensorBoard tags under `Plasticity/`; see `probe`.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import networks

# tau of definition 3.1. With tau = 0 a neuron is dormant only if its output is
# exactly zero on every probe input: the "dead" neurons the authors' Dopamine
# code counts by default (dopamine/labs/redo/weight_recyclers.py,
# BaseRecycler.dead_neurons_threshold=0.0). A larger tau (e.g. 0.1) also
# counts neurons that are nearly silent relative to their layer.
DEFAULT_TAU = 0.0
# delta of srank_delta (Kumar et al., 2021, section 3).
DEFAULT_DELTA = 0.01
PREFIX = 'Plasticity'


# --- Dormant neurons (Sokar et al., 2023, definition 3.1).


def neuron_scores(h):
  """Normalised mean activation s_i = E|h_i| / ((1/H) sum_j E|h_j|).

  Args:
    h: (batch, ..., units) activations; every axis but the last is averaged
      (batch and, for conv layers, spatial positions).

  Returns:
    (units,) scores; all zero for a layer whose activations are all zero.
  """
  mean_abs = jnp.mean(jnp.abs(h.astype(jnp.float32)),
                      axis=tuple(range(h.ndim - 1)))  # (units,) E|h_i|
  layer_mean = jnp.mean(mean_abs)  # (1/H) sum_j E|h_j|
  safe = jnp.where(layer_mean > 0, layer_mean, 1.0)
  return jnp.where(layer_mean > 0, mean_abs / safe, 0.0)


def dormant_mask(h, tau=DEFAULT_TAU):
  """(batch, ..., units) -> (units,) bool: tau-dormant iff s_i <= tau."""
  return neuron_scores(h) <= tau


def dormant_fraction(h, tau=DEFAULT_TAU):
  """Fraction of tau-dormant neurons of one layer, a float32 scalar."""
  return jnp.mean(dormant_mask(h, tau).astype(jnp.float32))


def dormant_masks(layers, tau=DEFAULT_TAU):
  """{layer: (batch, ..., units)} -> {layer: (units,) bool}."""
  return {name: dormant_mask(h, tau) for name, h in layers.items()}


def dormant_fractions(layers, tau=DEFAULT_TAU):
  """Per-layer dormant fractions and 'all' = total dormant / total neurons.

  Args:
    layers: {layer name: (batch, ..., units) activations}.
    tau: dormancy threshold.

  Returns:
    {layer name: fraction, ..., 'all': fraction weighted by neuron count}.
  """
  masks = dormant_masks(layers, tau)
  fractions = {name: jnp.mean(m.astype(jnp.float32))
               for name, m in masks.items()}
  dormant = sum(jnp.sum(m) for m in masks.values())
  total = sum(m.size for m in masks.values())
  fractions['all'] = dormant.astype(jnp.float32) / total
  return fractions


# --- Capturing activations.


def _capture_filter(module, method_name):
  """Captures the outputs of convs, residual blocks and dense layers."""
  return method_name == '__call__' and isinstance(
      module, (nn.Conv, networks.ResidualBlock, nn.Dense, networks.NoisyDense))


def _forward(module, x):
  """Everything `probe` reads, in one pass (noise off: key=None)."""
  latent = module.encode(x)  # (B, h, w, C)
  projected = module.project(latent)  # (B, hidden)
  predicted = module.predict(projected)  # (B, hidden)
  logits = module.q_logits(latent)  # (B, A, atoms)
  return projected, predicted, logits


def _by_index(names, prefix):
  """Names 'prefix_k' present in `names`, sorted by k."""
  pattern = re.compile(re.escape(prefix) + r'_(\d+)$')
  found = [(int(m.group(1)), n) for n in names if (m := pattern.match(n))]
  return [n for _, n in sorted(found)]


def _layers(network, intermediates):
  """Post-ReLU tensors (see the module docstring) from captured outputs."""
  output = lambda tree: tree['__call__'][0]  # first call of that module
  encoder = intermediates['encoder']
  convs = _by_index(encoder, 'Conv')
  layers = {}
  if network.encoder_type == 'nature':
    for k, conv in enumerate(convs):
      layers[f'encoder_conv{k}'] = nn.relu(output(encoder[conv]))
  elif network.encoder_type == 'impala':
    blocks = _by_index(encoder, 'ResidualBlock')
    per_stage = len(blocks) // len(convs)
    for s, conv in enumerate(convs):
      pooled = networks.max_pool_3x3_s2(output(encoder[conv]))
      layers[f'encoder_conv{s}'] = nn.relu(pooled)
      for j in range(per_stage):
        i = s * per_stage + j
        block = encoder[blocks[i]]
        layers[f'encoder_block{i}_conv0'] = nn.relu(output(block['Conv_0']))
        last_in_stage = j == per_stage - 1
        if not last_in_stage or s == len(convs) - 1:
          layers[f'encoder_block{i}'] = nn.relu(output(block))
  else:
    raise ValueError(f'Unknown encoder_type {network.encoder_type!r}.')
  layers['projection'] = nn.relu(output(intermediates['projection']))
  return layers


def _as_float(states):
  """uint8 frames are scaled to [0, 1] as the agent does; floats pass."""
  if jnp.issubdtype(states.dtype, jnp.integer):
    return states.astype(jnp.float32) / 255.0
  return states


def _run(network, params, x):
  (projected, predicted, logits), state = network.apply(
      params, _as_float(x), method=_forward,
      capture_intermediates=_capture_filter, mutable=['intermediates'])
  return _layers(network, state['intermediates']), projected, predicted, logits


def activations(network, params, x):
  """{layer name: post-ReLU activations} (network order unless jitted).

  Args:
    network: a `networks.BBFNetwork` (Impala or Nature encoder).
    params: its parameters ({'params': ...}).
    x: (batch, h, w, stack) float in [0, 1] (or uint8 frames).

  Returns:
    {'encoder_...': (batch, h', w', channels), ..., 'projection':
    (batch, hidden_dim)}; see the module docstring for which tensors.
  """
  return _run(network, params, x)[0]


# --- Effective rank (Kumar et al., 2021).


def srank(features, delta=DEFAULT_DELTA):
  """srank_delta = min{k : sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta}.

  Args:
    features: (batch, features) matrix Phi (more axes are flattened).
    delta: tolerance.

  Returns:
    int32 scalar; 0 for an all-zero matrix.
  """
  phi = features.reshape(features.shape[0], -1).astype(jnp.float32)
  sigma = jnp.linalg.svd(phi, compute_uv=False)  # (min(B, F),) descending
  total = jnp.sum(sigma)
  cumulative = jnp.cumsum(sigma) / jnp.where(total > 0, total, 1.0)
  # cumulative is non-decreasing: k is one plus the count below 1 - delta.
  k = jnp.sum(cumulative < 1.0 - delta) + 1
  return jnp.where(total > 0, k, 0).astype(jnp.int32)


# --- Norms.


def _module_norms(tree):
  """{module: L2 norm} for each of MODULE_NAMES present, plus 'total'."""
  squares = {}
  total = jnp.float32(0.0)
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    square = jnp.sum(jnp.square(jnp.asarray(leaf, jnp.float32)))
    total = total + square
    module = networks.module_name(path)
    if module is not None:
      squares[module] = squares.get(module, 0.0) + square
  norms = {m: jnp.sqrt(squares[m]) for m in networks.MODULE_NAMES
           if m in squares}
  norms['total'] = jnp.sqrt(total)
  return norms


def parameter_norms(params):
  """{module: ||theta_module||_2, ..., 'total': ||theta||_2}."""
  return _module_norms(params)


def gradient_norms(grads):
  """{module: ||g_module||_2, ..., 'total': ||g||_2} of a gradient tree."""
  return _module_norms(grads)


def feature_norm(features):
  """Mean over the batch of each example's feature L2 norm.

  Args:
    features: (batch, ...) features; non-batch axes are flattened.
  """
  phi = features.reshape(features.shape[0], -1).astype(jnp.float32)
  return jnp.mean(jnp.linalg.norm(phi, axis=-1))


# --- Policy churn, Q statistics, over-estimation.


def policy_churn(previous_greedy, current_greedy):
  """Fraction of probe states whose greedy action changed (Schaul et al.).

  Schaul et al. compare policies one gradient update apart; between probes N
  updates apart this is the churn accumulated over those N updates.

  Args:
    previous_greedy: (batch,) int greedy actions at the previous probe.
    current_greedy: (batch,) int greedy actions now, on the same states.
  """
  return jnp.mean((previous_greedy != current_greedy).astype(jnp.float32))


def q_statistics(q_values):
  """Mean and max over the probe batch of V(s) = max_a Q(s, a).

  Args:
    q_values: (batch, actions).

  Returns:
    {'QMean': mean_s max_a Q(s, a), 'QMax': max_s max_a Q(s, a)}.
  """
  values = jnp.max(q_values, axis=-1)  # (batch,)
  return {'QMean': jnp.mean(values), 'QMax': jnp.max(values)}


def discounted_returns(rewards, terminals, gamma):
  """Monte-Carlo returns G_t = r_t + gamma * (1 - d_t) * G_{t+1} (numpy, host).

  Only steps of completed episodes have a return: the output stops at the last
  terminal; the steps of an unfinished episode after it are dropped.

  Args:
    rewards: (T,) rewards r_t of consecutive steps (episodes back to back).
    terminals: (T,) d_t, true where the episode ends after step t.
    gamma: discount.

  Returns:
    (T',) float64 returns of steps 0 .. T'-1, T' = last terminal index + 1
    (0 if no episode ended).
  """
  rewards = np.asarray(rewards, np.float64)
  terminals = np.asarray(terminals, bool)
  ends = np.flatnonzero(terminals)
  length = int(ends[-1]) + 1 if ends.size else 0
  out = np.zeros(length, np.float64)
  g = 0.0
  for t in reversed(range(length)):
    g = rewards[t] + (0.0 if terminals[t] else gamma * g)
    out[t] = g
  return out


def overestimation(q_taken, mc_returns):
  """mean(Q(s_t, a_t) - G_t): positive when the agent over-estimates.

  Args:
    q_taken: (T,) Q of the actions taken.
    mc_returns: (T,) Monte-Carlo returns of the same steps, discounted with the
      gamma of the Q targets (`discounted_returns`).
  """
  return jnp.mean(jnp.asarray(q_taken, jnp.float32) -
                  jnp.asarray(mc_returns, jnp.float32))


# --- One jitted probe.


def tagged(group, values):
  """{'a': x} -> {'Plasticity/<group>/a': x}: TensorBoard tags."""
  return {f'{PREFIX}/{group}/{name}': value for name, value in values.items()}


@functools.partial(jax.jit, static_argnames='network')
def probe(network, params, probe_states, support, tau=DEFAULT_TAU,
          delta=DEFAULT_DELTA):
  """All diagnostics of one parameter set on a fixed batch of probe states.

  Noise is off (NoisyDense mean weights) and there is no augmentation.

  Args:
    network: `networks.BBFNetwork` (static).
    params: online parameters.
    probe_states: (B, h, w, stack) uint8 frames or floats in [0, 1].
    support: (atoms,) C51 support.
    tau: dormancy threshold (traced).
    delta: srank tolerance (traced).

  Returns:
    metrics: {tag: scalar}, with tags
      Plasticity/DormantFraction/<layer> (see `activations`) and .../all,
      Plasticity/SRank/penultimate     relu(projection output),
      Plasticity/SRank/spr_projection  projection output (networks.py's SPR
                                       projection: what SPR targets are),
      Plasticity/SRank/spr_prediction  predictor(projection output),
      Plasticity/FeatureNorm           of the penultimate representation,
      Plasticity/ParamNorm/<module> and .../total,
      Plasticity/QMean, Plasticity/QMax (see `q_statistics`);
    greedy: (B,) int32 greedy actions, for `policy_churn` at the next probe.
  """
  layers, projected, predicted, logits = _run(network, params, probe_states)
  penultimate = layers['projection']  # (B, hidden)
  q = jnp.sum(jax.nn.softmax(logits) * support, axis=-1)  # (B, A), as learner
  metrics = tagged('DormantFraction', dormant_fractions(layers, tau))
  metrics.update(tagged('SRank', {
      'penultimate': srank(penultimate, delta),
      'spr_projection': srank(projected, delta),
      'spr_prediction': srank(predicted, delta),
  }))
  metrics[f'{PREFIX}/FeatureNorm'] = feature_norm(penultimate)
  metrics.update(tagged('ParamNorm', parameter_norms(params)))
  metrics.update({f'{PREFIX}/{k}': v for k, v in q_statistics(q).items()})
  greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)  # (B,)
  return metrics, greedy
