# coding=utf-8
"""SoftMoE head (moe.py) and BBFNetwork's head_type='softmoe'.

  * SoftMoE against a brute-force numpy SoftMoE (loops over slots and
    tokens) with the layer's own parameters: dispatch weights, combine
    weights, outputs; with and without jit, with and without normalisation;
  * output shapes and parameter counts, of the layer and of a whole
    BBFNetwork, against counts by hand;
  * tokenisation against loops over positions and channels;
  * one expert: the network's projection is the one-expert layer on the
    tokens, flattened; with one slot every token gets the same output;
  * BBF's train step (SPR on), a shrink-and-perturb reset, optimiser
    partitions and plasticity diagnostics with the SoftMoE head;
  * bad values, from gin, raise ValueError naming the parameter;
  * the three MinAtar SoftMoE gin files train through Dopamine's train
    binary and write the plasticity tags of the SoftMoE projection.
"""

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_dopamine import diagnostics
from bbf_dopamine import learner
from bbf_dopamine import moe
from bbf_dopamine import networks
from bbf_dopamine import optimizers
from bbf_dopamine import resets
from test_end_to_end import ROOT
from test_end_to_end import tensorboard_tags
from test_learner import _batch
from test_learner import ACTIONS
from test_learner import JUMPS
from test_learner import STACK
from test_minatar import train_minatar

MINATAR_DIR = ROOT / 'gin_configs' / 'minatar'


# Brute-force reference --------------------------------------------------------


def _softmax(v):
  e = np.exp(v - np.max(v))
  return e / e.sum()


def _reference(tokens, params, n, p, normalize):
  """SoftMoE of one example, slot by slot and token by token (float64).

  Args:
    tokens: (T, d) array.
    params: the layer's parameters ({'phi', 'expert_kernel_0', ...}).
    n, p: experts, slots per expert.
    normalize: l2-normalised tokens and Phi columns, Phi scaled.

  Returns:
    dispatch (T, S), combine (T, S), output (T, d_out).
  """
  x = np.asarray(tokens, np.float64)
  phi = np.asarray(params['phi'], np.float64)
  num_tokens, num_slots = x.shape[0], n * p
  if normalize:
    x_logit = np.array([t / (np.linalg.norm(t) + 1e-6) for t in x])
    phi = float(params['scale']) * np.stack(
        [phi[:, s] / (np.linalg.norm(phi[:, s]) + 1e-6)
         for s in range(num_slots)], axis=1)
  else:
    x_logit = x
  logits = np.zeros((num_tokens, num_slots))
  for t in range(num_tokens):
    for s in range(num_slots):
      logits[t, s] = np.dot(x_logit[t], phi[:, s])
  dispatch = np.zeros_like(logits)
  for s in range(num_slots):  # each slot: a distribution over tokens
    dispatch[:, s] = _softmax(logits[:, s])
  combine = np.zeros_like(logits)
  for t in range(num_tokens):  # each token: a distribution over slots
    combine[t] = _softmax(logits[t])
  slot_out = []
  for s in range(num_slots):
    e = s // p  # slots [e * p, (e + 1) * p) belong to expert e
    slot_in = sum(dispatch[t, s] * x[t] for t in range(num_tokens))
    w1 = np.asarray(params['expert_kernel_0'][e], np.float64)
    b1 = np.asarray(params['expert_bias_0'][e], np.float64)
    w2 = np.asarray(params['expert_kernel_1'][e], np.float64)
    b2 = np.asarray(params['expert_bias_1'][e], np.float64)
    slot_out.append(np.maximum(slot_in @ w1 + b1, 0.0) @ w2 + b2)
  output = np.stack([sum(combine[t, s] * slot_out[s]
                         for s in range(num_slots))
                     for t in range(num_tokens)])
  return dispatch, combine, output


def _random_params(layer, tokens, seed):
  """The layer's parameters, with non-zero biases and a scale != 1."""
  params = layer.init(jax.random.PRNGKey(seed), tokens)['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32), params)


@pytest.mark.parametrize('normalize', [False, True])
@pytest.mark.parametrize('jit', [False, True])
def test_softmoe_matches_brute_force(normalize, jit):
  n, p, width, d_out = 3, 2, 5, 4
  tokens = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
  layer = moe.SoftMoE(num_experts=n, expert_width=width, slots_per_expert=p,
                      output_dim=d_out, normalize=normalize)
  params = _random_params(layer, tokens, seed=1)
  maybe_jit = jax.jit if jit else (lambda f: f)
  output = maybe_jit(lambda t: layer.apply({'params': params}, t))(tokens)
  dispatch, combine = maybe_jit(moe.routing_weights)(
      tokens, params['phi'], params['scale'] if normalize else None)
  assert output.shape == (2, 7, d_out)
  for b in range(2):
    want_d, want_c, want_y = _reference(tokens[b], params, n, p, normalize)
    np.testing.assert_allclose(dispatch[b], want_d, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(combine[b], want_c, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(output[b], want_y, rtol=1e-5, atol=1e-6)
  # Columns of D (over tokens) and rows of C (over slots) sum to one.
  np.testing.assert_allclose(np.sum(dispatch, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.sum(combine, axis=2), 1.0, rtol=1e-6)


@pytest.mark.parametrize('normalize', [False, True])
def test_layer_shape_and_parameter_count(normalize):
  batch, tokens, d, n, p, width, d_out = 2, 6, 5, 3, 4, 7, 2
  layer = moe.SoftMoE(num_experts=n, expert_width=width, slots_per_expert=p,
                      output_dim=d_out, normalize=normalize)
  x = jnp.ones((batch, tokens, d))
  variables = layer.init(jax.random.PRNGKey(0), x)
  assert layer.apply(variables, x).shape == (batch, tokens, d_out)
  by_hand = (d * n * p  # Phi
             + n * (d * width + width)  # experts' first layers
             + n * (width * d_out + d_out)  # experts' second layers
             + (1 if normalize else 0))  # Phi's learned scale
  assert networks.count_parameters(variables) == by_hand
  # Default slots: ceil(T / n) = 2; default d_out: the token size.
  default = moe.SoftMoE(num_experts=n, expert_width=width)
  variables = default.init(jax.random.PRNGKey(0), x)
  assert variables['params']['phi'].shape == (d, n * 2)
  assert default.apply(variables, x).shape == (batch, tokens, d)


def test_tokenize_against_loops():
  latent = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
  batch, height, width, channels = latent.shape
  per_position = np.zeros((batch, height * width, channels))
  per_feature = np.zeros((batch, channels, height * width))
  for b in range(batch):
    for i in range(height):
      for j in range(width):
        for c in range(channels):
          per_position[b, i * width + j, c] = latent[b, i, j, c]
          per_feature[b, c, i * width + j] = latent[b, i, j, c]
  np.testing.assert_array_equal(moe.tokenize(latent, 'per_position'),
                                per_position)
  np.testing.assert_array_equal(moe.tokenize(latent, 'per_feature'),
                                per_feature)
  with pytest.raises(ValueError, match='tokenization'):
    moe.tokenize(latent, 'per_row')


# The whole network --------------------------------------------------------


def _conv(k, cin, cout):
  return k * k * cin * cout + cout


@pytest.mark.parametrize('tokenization', ['per_position', 'per_feature'])
def test_network_parameter_count_by_hand(tokenization):
  """Impala (3 stages, width 0.25) on 10x10x4 frames: latent 2x2x8."""
  actions, atoms, n, width, d_out = 3, 5, 2, 6, 3
  net = networks.BBFNetwork(
      num_actions=actions, num_atoms=atoms, width_scale=0.25,
      head_type='softmoe', tokenization=tokenization, num_experts=n,
      expert_width=width, expert_output_dim=d_out)
  x = jnp.zeros((1, 10, 10, 4))
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  encoder, c_in = 0, 4
  for c in (4, 8, 8):  # 16, 32, 32 channels x 0.25
    encoder += _conv(3, c_in, c) + 2 * 2 * _conv(3, c, c)  # conv, 2 blocks
    c_in = c
  transition = _conv(3, 8 + actions, 8) + _conv(3, 8, 8)
  tokens, d = {'per_position': (4, 8), 'per_feature': (8, 4)}[tokenization]
  slots = n * -(-tokens // n)
  projection = (d * slots + n * (d * width + width)
                + n * (width * d_out + d_out))
  features = tokens * d_out  # flattened output tokens
  predictor = features * features + features
  head = (features * actions * atoms + actions * atoms  # advantage
          + features * atoms + atoms)  # value
  count = lambda tree: sum(int(np.prod(l.shape))
                           for l in jax.tree_util.tree_leaves(tree))
  params = shapes['params']
  assert {m: count(params[m]) for m in networks.MODULE_NAMES} == {
      'encoder': encoder, 'transition_model': transition,
      'projection': projection, 'predictor': predictor, 'head': head}
  variables = net.init(jax.random.PRNGKey(0), x)
  latent = net.apply(variables, x, method=net.encode)
  projected = net.apply(variables, latent, method=net.project)
  assert projected.shape == (1, features)
  assert net.apply(variables, projected, method=net.predict).shape == (
      1, features)
  assert net.apply(variables, latent, method=net.q_logits).shape == (
      1, actions, atoms)


def test_one_expert_is_the_tokenised_layer():
  net = networks.BBFNetwork(num_actions=2, num_atoms=3, width_scale=0.25,
                            head_type='softmoe', num_experts=1,
                            expert_width=8)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 10, 10, 4))
  variables = net.init(jax.random.PRNGKey(0), x)
  latent = net.apply(variables, x, method=net.encode)  # (3, 2, 2, 8)
  projected = net.apply(variables, latent, method=net.project)
  layer_params = variables['params']['projection']['softmoe']
  tokens = moe.tokenize(latent, 'per_position')  # (3, 4, 8)
  single = moe.SoftMoE(num_experts=1, expert_width=8)
  expected = single.apply({'params': layer_params}, tokens)
  np.testing.assert_allclose(projected, expected.reshape(3, -1), rtol=1e-6)
  # One expert with one slot: every token's combine weight is 1 on it, so
  # all output tokens are f(sum_t D_t x_t), one vector.
  one_slot = moe.SoftMoE(num_experts=1, expert_width=8, slots_per_expert=1)
  params = one_slot.init(jax.random.PRNGKey(2), tokens)
  out = one_slot.apply(params, tokens)  # (3, 4, 8)
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape),
                             rtol=1e-6)
  assert not np.allclose(out[0], out[1])


# Training, resets, optimiser, diagnostics ----------------------------------


def _softmoe_net(**kwargs):
  return networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                             head_type='softmoe', num_experts=2,
                             expert_width=16, expert_output_dim=4, **kwargs)


def _leaves_by_module(tree):
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    out.setdefault(networks.module_name(path), []).append(np.asarray(leaf))
  return out


def test_train_step_with_spr_and_a_reset():
  net = _softmoe_net()
  init = lambda seed: net.init(jax.random.PRNGKey(seed),
                               jnp.zeros((1, 84, 84, STACK)))
  params, fresh = init(0), init(1)
  optimizer = optimizers.create_scaling_optimizer(learning_rate=1e-3,
                                                  encoder_learning_rate=1e-3)
  config = learner.LearnerConfig(network=net, optimizer=optimizer,
                                 stack_size=STACK, jumps=JUMPS,
                                 spr_weight=5.0)
  # The SoftMoE's parameters are in the 'head' partition of the optimiser.
  labels = _leaves_by_module(optimizers._labels(params))  # pylint: disable=protected-access
  assert {str(l) for l in labels['projection']} == {'head'}
  before = jax.tree_util.tree_map(np.array, params)
  state = learner.initial_state(params, optimizer, jax.random.PRNGKey(2))
  state, metrics, _ = learner.train(state, _batch(3), jnp.int32(3),
                                    jnp.float32(0.97), config=config)
  for name in ('Loss', 'DQNLoss', 'SPRLoss'):
    assert np.all(np.isfinite(metrics[name])), name
  assert float(metrics['SPRLoss'][0]) > 0.0  # SPR is on and has a gradient
  assert float(metrics['Plasticity/GradNorm/projection'][0]) > 0.0
  for old, new in zip(_leaves_by_module(before)['projection'],
                      _leaves_by_module(state.online_params)['projection']):
    assert not np.array_equal(old, new)

  # BBF's reset: encoder and transition model shrunk and perturbed, the
  # SoftMoE (projection) re-initialised with the rest of the head.
  trained = jax.tree_util.tree_map(np.array, state.online_params)
  reset = resets.shrink_perturb(trained, fresh,
                                ('encoder', 'transition_model'), 0.5, 0.5)
  got, old, new = (_leaves_by_module(t) for t in (reset, trained, fresh))
  for a, b in zip(got['projection'], new['projection']):
    np.testing.assert_array_equal(a, b)
  for a, o, f in zip(got['encoder'], old['encoder'], new['encoder']):
    np.testing.assert_allclose(a, 0.5 * o + 0.5 * np.asarray(f), rtol=1e-6)
  opt_state = resets.reset_optimizer_state(state.opt_state,
                                           ('encoder', 'transition_model'))
  state = state._replace(online_params=reset, opt_state=opt_state)
  _, metrics, _ = learner.train(state, _batch(4), jnp.int32(3),
                                jnp.float32(0.97), config=config)
  for name in ('Loss', 'DQNLoss', 'SPRLoss'):
    assert np.all(np.isfinite(metrics[name])), name


def test_plasticity_diagnostics_read_the_softmoe_projection():
  net = _softmoe_net()
  x = jax.random.uniform(jax.random.PRNGKey(3), (8, 84, 84, STACK))
  params = net.init(jax.random.PRNGKey(0), x[:1])
  layers = diagnostics.activations(net, params, x)
  latent = net.apply(params, x, method=net.encode)
  projected = net.apply(params, latent, method=net.project)  # (8, 121 * 4)
  assert projected.shape == (8, 121 * 4)
  np.testing.assert_allclose(layers['projection'], jax.nn.relu(projected),
                             rtol=1e-6)
  support = jnp.linspace(-10.0, 10.0, 51)
  metrics, greedy = jax.jit(functools.partial(diagnostics.probe, net))(
      params, x, support)
  for tag in ('DormantFraction/projection', 'DormantFraction/all',
              'SRank/penultimate', 'SRank/spr_projection',
              'SRank/spr_prediction', 'ParamNorm/projection', 'FeatureNorm',
              'QMean'):
    value = float(metrics[f'{diagnostics.PREFIX}/{tag}'])
    assert np.isfinite(value), tag
  assert float(metrics['Plasticity/SRank/penultimate']) >= 1
  assert greedy.shape == (8,)


# Bad values -------------------------------------------------------------------


@pytest.mark.parametrize('binding, name', [
    ("BBFNetwork.head_type = 'moe'", 'head_type'),
    ("BBFNetwork.tokenization = 'per_row'", 'tokenization'),
    ('BBFNetwork.num_experts = 0', 'num_experts'),
    ('BBFNetwork.slots_per_expert = 0', 'slots_per_expert'),
    ('BBFNetwork.expert_width = -4', 'expert_width'),
    ('BBFNetwork.expert_output_dim = 0', 'expert_output_dim'),
    ('BBFNetwork.noisy = True', 'noisy'),
])
def test_bad_gin_values_name_the_parameter(binding, name, clean_gin):  # pylint: disable=unused-argument
  gin.parse_config(['import bbf_dopamine.networks',
                    "BBFNetwork.head_type = 'softmoe'", binding])
  net = networks.BBFNetwork(num_actions=3, width_scale=0.25)  # rest from gin
  with pytest.raises(ValueError, match=name):
    jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 4)))


# MinAtar gin files ------------------------------------------------------------

# The MinAtar SoftMoE files; test_minatar_gin_configs.py checks that each is
# minatar/bbf.gin plus its declared bindings and uses all of them.
MINATAR_FILES = ('bbf_softmoe4.gin', 'bbf_softmoe8.gin', 'bbf_tokenized1.gin')


@pytest.mark.parametrize('name', MINATAR_FILES)
def test_minatar_file_trains_through_the_train_binary(name, tmp_path):
  final = train_minatar(tmp_path, MINATAR_DIR / name, [
      'Atari100kRunner.num_iterations = 1',
      'Atari100kRunner.training_steps = 150',
      # One minibatch per jitted call: half the unrolled step to compile.
      'BBFAgent.batches_to_group = 1'])
  assert final['domain'] == 'minatar' and final['env_steps'] == 150
  tags = tensorboard_tags(str(tmp_path))
  for tag in ('Agent/Loss', 'Agent/SPRLoss', 'Plasticity/DormantFraction/all',
              'Plasticity/DormantFraction/projection',
              'Plasticity/SRank/penultimate', 'Plasticity/ParamNorm/projection',
              'Plasticity/GradNorm/projection'):
    assert tag in tags, (tag, sorted(tags))
