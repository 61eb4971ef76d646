# coding=utf-8
"""Tests of bbf_dopamine/diagnostics.py against hand-computed values and numpy.

Dormancy, srank, norms, churn, Q statistics and returns are checked on tiny
hand-made inputs (expected values worked out in the comments) and against
numpy references written here; `activations` and `probe` on a tiny BBFNetwork
(width_scale 0.25, hidden_dim 16, 3 actions, 5 atoms, 84x84x4 input), with the
first encoder layer recomputed by a numpy convolution and max-pool.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import diagnostics
from bbf_dopamine import networks

JIT_MODES = [False, True]
SUPPORT = jnp.linspace(-10.0, 10.0, 5)


def _maybe_jit(fn, jit, **kwargs):
  return jax.jit(fn, **kwargs) if jit else fn


# ---------------------------------------------------------------------------
# numpy references.
# ---------------------------------------------------------------------------


def ref_srank(features, delta):
  sigma = np.linalg.svd(np.asarray(features, np.float64), compute_uv=False)
  if sigma.sum() == 0:
    return 0
  running = 0.0
  for k, s in enumerate(sigma, start=1):
    running += s
    if running / sigma.sum() >= 1.0 - delta:
      return k
  return len(sigma)


def ref_conv_same_3x3(x, kernel, bias):
  """(B, H, W, C) * (3, 3, C, O), stride 1, zero padding 1."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  height, width = x.shape[1:3]
  out = np.zeros(x.shape[:3] + kernel.shape[-1:], np.float64)
  for di in range(3):
    for dj in range(3):
      out += xp[:, di:di + height, dj:dj + width] @ kernel[di, dj]
  return out + bias


def ref_conv_valid(x, kernel, bias, stride):
  size = kernel.shape[0]
  out_h = (x.shape[1] - size) // stride + 1
  out_w = (x.shape[2] - size) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]), np.float64)
  for i in range(out_h):
    for j in range(out_w):
      patch = x[:, i * stride:i * stride + size, j * stride:j * stride + size]
      out[:, i, j] = np.einsum('bhwc,hwco->bo', patch, kernel)
  return out + bias


def ref_max_pool_same(x):
  """3x3 window, stride 2, TF 'SAME' padding (before = total // 2)."""
  height, width = x.shape[1:3]
  out_h, out_w = -(-height // 2), -(-width // 2)
  top = max((out_h - 1) * 2 + 3 - height, 0) // 2
  left = max((out_w - 1) * 2 + 3 - width, 0) // 2
  out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
  for i in range(out_h):
    for j in range(out_w):
      r0, c0 = max(2 * i - top, 0), max(2 * j - left, 0)
      r1, c1 = min(2 * i - top + 3, height), min(2 * j - left + 3, width)
      out[:, i, j] = x[:, r0:r1, c0:c1].max(axis=(1, 2))
  return out


def ref_discounted_returns(rewards, terminals, gamma):
  """Forward sums G_t = sum_{k=t}^{end(t)} gamma^(k-t) r_k, complete only."""
  out = []
  for t in range(len(rewards)):
    total, ended = 0.0, False
    for k in range(t, len(rewards)):
      total += gamma**(k - t) * rewards[k]
      if terminals[k]:
        ended = True
        break
    if not ended:
      break
    out.append(total)
  return np.asarray(out)


# ---------------------------------------------------------------------------
# Dormant neurons.
# ---------------------------------------------------------------------------

# Dense layer, batch 2, 4 units; mean |h| = [0, 0.25, 1.25, 2.5] (signs test
# the absolute value), layer mean 1.0, so scores = [0, 0.25, 1.25, 2.5].
DENSE = np.array([[0.0, 0.5, -1.0, 2.0],
                  [0.0, 0.0, 1.5, -3.0]], np.float32)


@pytest.mark.parametrize('jit', JIT_MODES)
@pytest.mark.parametrize('tau, expected', [
    (0.0, [True, False, False, False]),
    (0.1, [True, False, False, False]),
    (0.25, [True, True, False, False]),  # s <= tau: the boundary is dormant
    (0.5, [True, True, False, False]),
    (1.25, [True, True, True, False]),
])
def test_dormant_dense_hand(jit, tau, expected):
  scores = _maybe_jit(diagnostics.neuron_scores, jit)(DENSE)
  np.testing.assert_allclose(scores, [0.0, 0.25, 1.25, 2.5], rtol=1e-6)
  mask = _maybe_jit(diagnostics.dormant_mask, jit)(DENSE, tau)
  np.testing.assert_array_equal(mask, expected)
  fraction = _maybe_jit(diagnostics.dormant_fraction, jit)(DENSE, tau)
  assert float(fraction) == pytest.approx(np.mean(expected))


@pytest.mark.parametrize('jit', JIT_MODES)
def test_dormant_conv_averages_batch_and_space(jit):
  # (batch 2, 3, 3, 2 channels): channel 0 is 1 everywhere (mean 1); channel 1
  # is 9 at one position of one example (mean 9 / 18 = 0.5). Layer mean 0.75:
  # scores [4/3, 2/3]. Neither is dormant at tau 0 (channel 1 fires once).
  h = np.zeros((2, 3, 3, 2), np.float32)
  h[..., 0] = 1.0
  h[1, 2, 0, 1] = 9.0
  scores = _maybe_jit(diagnostics.neuron_scores, jit)(h)
  np.testing.assert_allclose(scores, [4 / 3, 2 / 3], rtol=1e-6)
  reference = np.abs(h).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(scores, reference / reference.mean(), rtol=1e-6)
  fraction = _maybe_jit(diagnostics.dormant_fraction, jit)
  assert float(fraction(h, 0.0)) == 0.0
  assert float(fraction(h, 0.6)) == 0.0
  assert float(fraction(h, 0.7)) == 0.5  # 2/3 <= 0.7


@pytest.mark.parametrize('jit', JIT_MODES)
def test_dormant_overall_weighted_by_neuron_count(jit):
  # Layer 'a': DENSE, 1 of 4 dormant at tau 0. Layer 'b': conv, 2 channels,
  # all zero: layer mean 0, both dormant. Overall 3 / 6 = 0.5, not the mean
  # of the fractions (0.25 + 1) / 2 = 0.625.
  layers = {'a': DENSE, 'b': np.zeros((2, 3, 3, 2), np.float32)}
  fractions = _maybe_jit(diagnostics.dormant_fractions, jit)(layers, 0.0)
  assert set(fractions) == {'a', 'b', 'all'}
  assert float(fractions['a']) == 0.25
  assert float(fractions['b']) == 1.0
  assert float(fractions['all']) == 0.5
  masks = diagnostics.dormant_masks(layers, 0.0)
  np.testing.assert_array_equal(masks['a'], [True, False, False, False])
  np.testing.assert_array_equal(masks['b'], [True, True])


# ---------------------------------------------------------------------------
# Effective rank.
# ---------------------------------------------------------------------------


def _with_singular_values(rng, rows, sigma):
  u, _ = np.linalg.qr(rng.normal(size=(rows, len(sigma))))
  v, _ = np.linalg.qr(rng.normal(size=(len(sigma), len(sigma))))
  return (u * sigma) @ v.T


@pytest.mark.parametrize('jit', JIT_MODES)
def test_srank_known_singular_values(jit):
  # sigma = [10, 1, 0.05, 0], sum 11.05; cumulative fractions
  # [0.9050, 0.99548, 1.0, 1.0]. delta 0.01 (1 - delta = 0.99): k = 2;
  # delta 0.001 (0.999): k = 3; delta 0.1 (0.9): k = 1.
  phi = _with_singular_values(np.random.default_rng(0), 6,
                              np.array([10.0, 1.0, 0.05, 0.0]))
  np.testing.assert_allclose(np.linalg.svd(phi, compute_uv=False),
                             [10.0, 1.0, 0.05, 0.0], atol=1e-9)
  srank = _maybe_jit(diagnostics.srank, jit)
  phi = phi.astype(np.float32)
  assert int(srank(phi, 0.01)) == 2 == ref_srank(phi, 0.01)
  assert int(srank(phi, 0.001)) == 3 == ref_srank(phi, 0.001)
  assert int(srank(phi, 0.1)) == 1 == ref_srank(phi, 0.1)
  assert int(srank(phi)) == 2  # default delta = 0.01


@pytest.mark.parametrize('jit', JIT_MODES)
def test_srank_identity_rank_one_zero_random(jit):
  srank = _maybe_jit(diagnostics.srank, jit)
  # diag(3, 1), delta 0.25: cumulative [0.75, 1.0] (exact in binary); 0.75
  # reaches 1 - delta = 0.75 exactly, so k = 1 (the boundary counts).
  assert int(srank(np.diag([3.0, 1.0]).astype(np.float32), 0.25)) == 1
  # Identity of size 8: cumulative k / 8; k = 7 gives 0.875 < 0.99, so 8.
  assert int(srank(np.eye(8, dtype=np.float32), 0.01)) == 8
  rng = np.random.default_rng(1)
  rank_one = np.outer(rng.normal(size=16), rng.normal(size=5))
  assert int(srank(rank_one.astype(np.float32), 0.01)) == 1
  assert int(srank(np.zeros((4, 3), np.float32), 0.01)) == 0
  for _ in range(3):
    phi = rng.normal(size=(32, 12)) * rng.uniform(0.01, 3.0, size=12)
    assert int(srank(phi.astype(np.float32), 0.01)) == ref_srank(phi, 0.01)


# ---------------------------------------------------------------------------
# Norms, churn, Q statistics, returns.
# ---------------------------------------------------------------------------


def _tree(rng):
  leaf = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {'params': {
      'encoder': {'Conv_0': {'kernel': leaf(3, 3, 4, 2), 'bias': leaf(2)},
                  'ResidualBlock_0': {'Conv_0': {'kernel': leaf(3, 3, 2, 2)}}},
      'projection': {'kernel': leaf(8, 5), 'bias': leaf(5)},
      'head': {'value': {'kernel': leaf(5, 3)}},
  }}


@pytest.mark.parametrize('jit', JIT_MODES)
@pytest.mark.parametrize('fn', ['parameter_norms', 'gradient_norms'])
def test_norms_per_module(jit, fn):
  tree = _tree(np.random.default_rng(2))
  norms = _maybe_jit(getattr(diagnostics, fn), jit)(tree)
  assert set(norms) == {'encoder', 'projection', 'head', 'total'}
  squares = {}
  for module, sub in tree['params'].items():
    squares[module] = sum(float(np.sum(np.square(x.astype(np.float64))))
                          for x in jax.tree_util.tree_leaves(sub))
    np.testing.assert_allclose(norms[module], np.sqrt(squares[module]),
                               rtol=1e-5)
  np.testing.assert_allclose(norms['total'], np.sqrt(sum(squares.values())),
                             rtol=1e-5)


@pytest.mark.parametrize('jit', JIT_MODES)
def test_feature_norm_churn_q_statistics(jit):
  features = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]], np.float32)
  # Norms 5, 0, 10: mean 5.
  assert float(_maybe_jit(diagnostics.feature_norm, jit)(features)) == 5.0
  churn = _maybe_jit(diagnostics.policy_churn, jit)
  assert float(churn(np.array([0, 1, 2, 3]), np.array([0, 2, 2, 0]))) == 0.5
  assert float(churn(np.array([1, 1]), np.array([1, 1]))) == 0.0
  # V(s) = max_a Q = [2, 3, 0]: mean 5/3, max 3.
  stats = _maybe_jit(diagnostics.q_statistics, jit)(
      np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]], np.float32))
  assert float(stats['QMean']) == pytest.approx(5 / 3)
  assert float(stats['QMax']) == 3.0


def test_discounted_returns_hand_and_loop():
  # gamma 0.5. Episode 1 (steps 0-2): G2 = 2, G1 = 0 + 0.5 * 2 = 1,
  # G0 = 1 + 0.5 * 1 = 1.5. Episode 2 (steps 3-4): G4 = 1, G3 = 1.5.
  # Step 5 belongs to an unfinished episode: dropped.
  rewards = [1.0, 0.0, 2.0, 1.0, 1.0, 5.0]
  terminals = [0, 0, 1, 0, 1, 0]
  returns = diagnostics.discounted_returns(rewards, terminals, 0.5)
  np.testing.assert_allclose(returns, [1.5, 1.0, 2.0, 1.5, 1.0])
  assert diagnostics.discounted_returns([1.0, 2.0], [0, 0], 0.9).shape == (0,)
  rng = np.random.default_rng(3)
  rewards = rng.normal(size=200)
  terminals = rng.uniform(size=200) < 0.05
  np.testing.assert_allclose(
      diagnostics.discounted_returns(rewards, terminals, 0.97),
      ref_discounted_returns(rewards, terminals, 0.97), rtol=1e-12)


@pytest.mark.parametrize('jit', JIT_MODES)
def test_overestimation(jit):
  # Q - G = [0.5, 0, 1]: mean 0.5.
  value = _maybe_jit(diagnostics.overestimation, jit)(
      np.array([2.0, 1.0, 3.0]), np.array([1.5, 1.0, 2.0]))
  assert float(value) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Activations and probe on a tiny BBFNetwork.
# ---------------------------------------------------------------------------

IMPALA_LAYERS = {  # width 0.25: channels 4, 8, 8 at 42, 21, 11
    'encoder_conv0': (42, 42, 4), 'encoder_block0_conv0': (42, 42, 4),
    'encoder_block0': (42, 42, 4), 'encoder_block1_conv0': (42, 42, 4),
    'encoder_conv1': (21, 21, 8), 'encoder_block2_conv0': (21, 21, 8),
    'encoder_block2': (21, 21, 8), 'encoder_block3_conv0': (21, 21, 8),
    'encoder_conv2': (11, 11, 8), 'encoder_block4_conv0': (11, 11, 8),
    'encoder_block4': (11, 11, 8), 'encoder_block5_conv0': (11, 11, 8),
    'encoder_block5': (11, 11, 8), 'projection': (16,)}
NATURE_LAYERS = {  # width 0.25: channels 8, 16, 16
    'encoder_conv0': (20, 20, 8), 'encoder_conv1': (9, 9, 16),
    'encoder_conv2': (7, 7, 16), 'projection': (16,)}
BATCH = 8


@functools.lru_cache(maxsize=None)
def _tiny(encoder_type):
  """Tiny network; parameters drawn in numpy on `init`'s shapes.

  (Compiling `net.init` takes several seconds on CPU; `eval_shape` does not.)
  Weights ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2).
  """
  net = networks.BBFNetwork(num_actions=3, num_atoms=5, hidden_dim=16,
                            width_scale=0.25, encoder_type=encoder_type)
  rng = np.random.default_rng(4)
  x = rng.uniform(size=(BATCH, 84, 84, 4)).astype(np.float32)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  def draw(leaf):
    scale = 0.1 if len(leaf.shape) == 1 else 1 / np.sqrt(
        np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(size=leaf.shape) * scale, leaf.dtype)
  return net, jax.tree_util.tree_map(draw, shapes), jnp.asarray(x)


_activations = jax.jit(diagnostics.activations, static_argnames='network')


@pytest.mark.parametrize('encoder_type, expected',
                         [('impala', IMPALA_LAYERS), ('nature', NATURE_LAYERS)])
def test_activations_layers(encoder_type, expected):
  net, params, x = _tiny(encoder_type)
  layers = _activations(net, params, x)
  assert sorted(layers) == sorted(expected)  # jit returns keys sorted
  for name, shape in expected.items():
    assert layers[name].shape == (BATCH,) + shape, name
    assert np.all(np.asarray(layers[name]) >= 0.0), name

  # First layer against a numpy convolution (and max-pool for Impala).
  conv = params['params']['encoder']['Conv_0']
  x64 = np.asarray(x, np.float64)
  kernel = np.asarray(conv['kernel'], np.float64)
  bias = np.asarray(conv['bias'], np.float64)
  if encoder_type == 'impala':
    pre = ref_max_pool_same(ref_conv_same_3x3(x64, kernel, bias))
  else:
    pre = ref_conv_valid(x64, kernel, bias, stride=4)
  np.testing.assert_allclose(layers['encoder_conv0'], np.maximum(pre, 0.0),
                             atol=1e-4)

  # Last encoder layer is the encoder's output; projection is what the head
  # sees: relu(project(encode(x))).
  last = 'encoder_block5' if encoder_type == 'impala' else 'encoder_conv2'
  encoded = net.apply(params, x, method=lambda m, x: m.encoder(x))
  np.testing.assert_allclose(layers[last], encoded, atol=1e-6)
  latent = net.apply(params, x, method=net.encode)
  projected = net.apply(params, latent, method=net.project)
  np.testing.assert_allclose(layers['projection'], np.maximum(projected, 0.0),
                             atol=1e-6)


def _zero_channel(params, path, channel):
  """Zeroes the incoming kernel slice and bias of one conv output channel."""
  def zero(leaf_path, leaf):
    keys = [entry.key for entry in leaf_path]
    if keys[:-1] == ['params'] + list(path):
      return leaf.at[..., channel].set(0.0)
    return leaf
  return jax.tree_util.tree_map_with_path(zero, params)


@pytest.mark.parametrize('encoder_type, path, layer', [
    ('impala', ('encoder', 'Conv_1'), 'encoder_conv1'),
    ('impala', ('encoder', 'ResidualBlock_3', 'Conv_0'),
     'encoder_block3_conv0'),
    ('nature', ('encoder', 'Conv_1'), 'encoder_conv1'),
])
def test_zeroed_neuron_is_dormant(encoder_type, path, layer):
  net, params, x = _tiny(encoder_type)
  before = np.asarray(diagnostics.dormant_mask(
      _activations(net, params, x)[layer], 0.0))
  channel = int(np.flatnonzero(~before)[0])  # an active neuron
  zeroed = _zero_channel(params, path, channel)
  after_layers = _activations(net, zeroed, x)
  after = np.asarray(diagnostics.dormant_mask(after_layers[layer], 0.0))
  expected = before.copy()
  expected[channel] = True
  np.testing.assert_array_equal(after, expected)
  units = before.size
  rise = (diagnostics.dormant_fraction(after_layers[layer], 0.0) -
          np.mean(before))
  assert float(rise) == pytest.approx(1.0 / units, abs=1e-6)


@pytest.mark.parametrize('encoder_type', ['impala', 'nature'])
def test_probe_under_jit(encoder_type):
  net, params, x = _tiny(encoder_type)
  frames = (np.asarray(x) * 255).astype(np.uint8)
  metrics, greedy = diagnostics.probe(net, params, frames, SUPPORT, 0.0, 0.01)
  x = jnp.asarray(frames, jnp.float32) / 255.0  # what the probe sees

  expected_layers = IMPALA_LAYERS if encoder_type == 'impala' else NATURE_LAYERS
  assert set(metrics) == (
      {f'Plasticity/DormantFraction/{n}' for n in expected_layers} |
      {'Plasticity/DormantFraction/all', 'Plasticity/SRank/penultimate',
       'Plasticity/SRank/spr_projection', 'Plasticity/SRank/spr_prediction',
       'Plasticity/FeatureNorm', 'Plasticity/QMean', 'Plasticity/QMax'} |
      {f'Plasticity/ParamNorm/{m}' for m in networks.MODULE_NAMES + ('total',)})

  latent = net.apply(params, x, method=net.encode)
  projected = np.asarray(net.apply(params, latent, method=net.project))
  penultimate = np.maximum(projected, 0.0)
  predicted = np.asarray(net.apply(params, projected, method=net.predict))
  assert int(metrics['Plasticity/SRank/penultimate']) == ref_srank(
      penultimate, 0.01)
  assert int(metrics['Plasticity/SRank/spr_projection']) == ref_srank(
      projected, 0.01)
  assert int(metrics['Plasticity/SRank/spr_prediction']) == ref_srank(
      predicted, 0.01)
  np.testing.assert_allclose(metrics['Plasticity/FeatureNorm'],
                             np.linalg.norm(penultimate, axis=1).mean(),
                             rtol=1e-5)

  logits = np.asarray(net.apply(params, latent, method=net.q_logits),
                      np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  q = probs @ np.asarray(SUPPORT, np.float64)  # (B, A)
  np.testing.assert_allclose(metrics['Plasticity/QMean'], q.max(1).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics['Plasticity/QMax'], q.max(), rtol=1e-5)
  np.testing.assert_array_equal(greedy, q.argmax(1))

  fractions = diagnostics.dormant_fractions(
      _activations(net, params, x), 0.0)
  for name, value in fractions.items():
    assert float(metrics[f'Plasticity/DormantFraction/{name}']) == (
        pytest.approx(float(value), abs=1e-6))
  total = np.sqrt(sum(np.sum(np.square(np.asarray(p, np.float64)))
                      for p in jax.tree_util.tree_leaves(params)))
  np.testing.assert_allclose(metrics['Plasticity/ParamNorm/total'], total,
                             rtol=1e-5)


def test_tagged():
  assert diagnostics.tagged('GradNorm', {'encoder': 1.0, 'total': 2.0}) == {
      'Plasticity/GradNorm/encoder': 1.0, 'Plasticity/GradNorm/total': 2.0}


def test_probe_srank_reads_each_representation():
  # Projection biases of 12 of the 16 units at -5: the ReLU silences them, so
  # the penultimate representation has at most 4 live columns (srank <= 4)
  # while the projection output keeps all 16. A rank-1 predictor kernel with
  # zero bias makes the SPR prediction rank 1.
  net, params, x = _tiny('nature')
  rng = np.random.default_rng(5)
  tree = jax.tree_util.tree_map(np.array, params)
  tree['params']['projection']['bias'][:12] = -5.0
  tree['params']['predictor']['kernel'] = np.outer(
      rng.normal(size=16), rng.normal(size=16)).astype(np.float32)
  tree['params']['predictor']['bias'][:] = 0.0
  metrics, _ = diagnostics.probe(net, tree, x, SUPPORT, 0.0, 0.01)
  ranks = {k: int(metrics[f'Plasticity/SRank/{k}'])
           for k in ('penultimate', 'spr_projection', 'spr_prediction')}
  latent = net.apply(tree, x, method=net.encode)
  projected = np.asarray(net.apply(tree, latent, method=net.project))
  predicted = np.asarray(net.apply(tree, projected, method=net.predict))
  assert ranks == {'penultimate': ref_srank(np.maximum(projected, 0), 0.01),
                   'spr_projection': ref_srank(projected, 0.01),
                   'spr_prediction': ref_srank(predicted, 0.01)}
  assert ranks['spr_prediction'] == 1
  assert ranks['penultimate'] <= 4 < ranks['spr_projection']
