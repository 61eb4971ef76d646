# coding=utf-8
"""BBF's network sizes and shapes, latent renormalisation, and the optimiser.

Big models are only traced (`jax.eval_shape`), never allocated. Parameter
counts are checked against the official BBF model's counts and against a
layer-by-layer hand count.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbf_dopamine import networks
from bbf_dopamine import optimizers

OBS = (84, 84, 4)


def _shapes(num_actions, width_scale=4.0, hidden_dim=2048, **kwargs):
  net = networks.BBFNetwork(num_actions=num_actions, width_scale=width_scale,
                            hidden_dim=hidden_dim, **kwargs)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1,) + OBS, jnp.float32))
  return net, params


def _conv(k, cin, cout):
  return k * k * cin * cout + cout


def _dense(nin, nout):
  return nin * nout + nout


def _hand_counts(num_actions, width, hidden=2048, atoms=51, stack=4):
  """Per-module counts from the architecture (Impala 16/32/32 x width)."""
  channels = [int(round(c * width)) for c in (16, 32, 32)]
  encoder, cin = 0, stack
  for c in channels:
    encoder += _conv(3, cin, c) + 2 * 2 * _conv(3, c, c)  # stem + 2 blocks
    cin = c
  flat = 11 * 11 * channels[-1]
  return {
      'encoder': encoder,
      'transition_model': (_conv(3, cin + num_actions, cin) +
                           _conv(3, cin, cin)),
      'projection': _dense(flat, hidden),
      'predictor': _dense(hidden, hidden),
      'head': _dense(hidden, num_actions * atoms) + _dense(hidden, atoms),
  }


def _module_counts(params):
  return {name: networks.count_parameters(sub)
          for name, sub in params['params'].items()}


def test_official_parameter_counts():
  _, params = _shapes(4)
  counts = _module_counts(params)
  assert counts == {
      'encoder': 1_552_192,
      'projection': 31_721_472,
      'predictor': 4_196_352,
      'transition_model': 299_776,
      'head': 522_495,
  }
  assert counts == _hand_counts(4, 4.0)
  assert networks.count_parameters(params) == 38_292_287
  assert params['params']['projection']['kernel'].shape == (15488, 2048)
  assert params['params']['projection']['kernel'].shape[0] == 11 * 11 * 128

  _, params18 = _shapes(18)
  assert networks.count_parameters(params18) == 39_771_401
  assert _module_counts(params18) == _hand_counts(18, 4.0)

  _, params18_w1 = _shapes(18, width_scale=1.0)
  assert networks.count_parameters(params18_w1) == 14_235_161
  assert _module_counts(params18_w1) == _hand_counts(18, 1.0)


def test_encode_shape_at_width_4():
  net, params = _shapes(4)
  x = jax.ShapeDtypeStruct((3,) + OBS, jnp.float32)
  latent = jax.eval_shape(
      lambda p, x: net.apply(p, x, method=networks.BBFNetwork.encode),
      params, x)
  assert latent.shape == (3, 11, 11, 128)
  logits = jax.eval_shape(
      lambda p, x: net.apply(
          p, net.apply(p, x, method=networks.BBFNetwork.encode),
          method=networks.BBFNetwork.q_logits), params, x)
  assert logits.shape == (3, 4, 51)


def test_renormalised_latents_small_network():
  net = networks.BBFNetwork(num_actions=4, width_scale=0.25, hidden_dim=32)
  raw_net = networks.BBFNetwork(num_actions=4, width_scale=0.25,
                                hidden_dim=32, renormalize=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(3,) + OBS).astype(np.float32))
  params = net.init(jax.random.PRNGKey(0), x[:1])
  encode = jax.jit(lambda n, p, x: n.apply(
      p, x, method=networks.BBFNetwork.encode), static_argnums=0)
  latent = np.asarray(encode(net, params, x))
  raw = np.asarray(encode(raw_net, params, x)).astype(np.float64)
  assert latent.shape == (3, 11, 11, 8)  # round(32 * 0.25) channels
  for b in range(3):
    assert latent[b].min() == 0.0
    assert 1.0 - 1e-4 < latent[b].max() <= 1.0
    assert raw[b].max() > raw[b].min()  # a non-degenerate example
    expected = (raw[b] - raw[b].min()) / (raw[b].max() - raw[b].min() + 1e-5)
    np.testing.assert_allclose(latent[b], expected, rtol=1e-5, atol=1e-6)


def test_renormalize_hand_computed():
  x = jnp.array([[[1.0, 3.0], [5.0, 2.0]], [[-2.0, -2.0], [0.0, 2.0]]])
  out = np.asarray(networks.renormalize(x))
  np.testing.assert_allclose(
      out[0], np.array([[0.0, 2.0], [4.0, 1.0]]) / (4.0 + 1e-5), rtol=1e-6)
  np.testing.assert_allclose(
      out[1], np.array([[0.0, 0.0], [2.0, 4.0]]) / (4.0 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize('width', [0, 0.0, -1.0, 0.01])
def test_width_too_small_raises(width):
  with pytest.raises(ValueError, match='width_scale'):
    _shapes(4, width_scale=width)


# Optimiser --------------------------------------------------------------


@pytest.fixture(scope='module')
def small_params():
  net = networks.BBFNetwork(num_actions=4, width_scale=0.25, hidden_dim=32)
  return net.init(jax.random.PRNGKey(1), jnp.zeros((1,) + OBS))


def _leaves(params):
  return [(jax.tree_util.keystr(path), np.asarray(leaf, np.float64))
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)]


def _is_encoder(path):
  return "['encoder']" in path or "['transition_model']" in path


def _step(optimizer, params, grads):
  state = optimizer.init(params)
  updates, _ = jax.jit(optimizer.update)(grads, state, params)
  return optax.apply_updates(params, updates)


def test_zero_gradient_step_is_decoupled_weight_decay(small_params):
  lr, enc_lr, wd = 1e-2, 3e-2, 0.1
  optimizer = optimizers.create_scaling_optimizer(
      learning_rate=lr, encoder_learning_rate=enc_lr, weight_decay=wd)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, small_params)
  new = _step(optimizer, small_params, zeros)
  old_l, new_l = _leaves(small_params), _leaves(new)
  num_kernels = num_biases = 0
  for (path, old), (_, value) in zip(old_l, new_l):
    if old.ndim > 1:
      num_kernels += 1
      rate = enc_lr if _is_encoder(path) else lr
      np.testing.assert_allclose(value, (1.0 - rate * wd) * old, rtol=1e-6,
                                 atol=1e-9, err_msg=path)
      assert np.abs(value - old).max() > 0, path
    else:
      num_biases += 1
      np.testing.assert_array_equal(value, old, err_msg=path)
  assert num_kernels == num_biases == 21  # one kernel and bias per layer


def test_zero_gradient_no_weight_decay_changes_nothing(small_params):
  optimizer = optimizers.create_scaling_optimizer(learning_rate=1e-2,
                                                  weight_decay=0.0)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, small_params)
  new = _step(optimizer, small_params, zeros)
  for (path, old), (_, value) in zip(_leaves(small_params), _leaves(new)):
    np.testing.assert_array_equal(value, old, err_msg=path)


def test_first_adamw_step_by_hand(small_params):
  # Step 1 of Adam: mu_hat = g, nu_hat = g^2, so the update is
  # -lr * (g / (|g| + eps) + wd * theta * [theta is not rank-1]).
  lr, enc_lr, wd, eps = 1e-3, 2e-3, 0.1, 1.5e-4
  optimizer = optimizers.create_scaling_optimizer(
      learning_rate=lr, encoder_learning_rate=enc_lr, eps=eps,
      weight_decay=wd)
  rng = np.random.default_rng(3)
  grads = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.normal(size=p.shape) * 1e-3, jnp.float32),
      small_params)
  new = _step(optimizer, small_params, grads)
  for (path, old), (_, g), (_, value) in zip(
      _leaves(small_params), _leaves(grads), _leaves(new)):
    rate = enc_lr if _is_encoder(path) else lr
    decay = wd * old if old.ndim > 1 else 0.0
    expected = old - rate * (g / (np.abs(g) + eps) + decay)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7,
                               err_msg=path)


def test_slice_max_pool_equals_flax_max_pool():
  """The select-based pool is a drop-in for nn.max_pool, odd sizes included."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  for shape in ((2, 84, 84, 3), (2, 21, 21, 5), (1, 11, 7, 2)):
    x = jax.random.normal(jax.random.PRNGKey(shape[1]), shape)
    expected = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    np.testing.assert_array_equal(networks.max_pool_3x3_s2(x), expected)
    grad = lambda f: jax.grad(lambda v: jnp.sum(f(v) ** 2))(x)
    np.testing.assert_allclose(
        grad(networks.max_pool_3x3_s2),
        grad(lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding='SAME')),
        rtol=1e-6)
