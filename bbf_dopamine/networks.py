# coding=utf-8
"""BBF's network: Impala encoder, SPR transition model, projection, predictor and
a dueling C51 head.

Schwarzer et al. (2023), "Bigger, Better, Faster", section 3 and appendix A;
the SPR parts follow Schwarzer et al. (2021), "Data-Efficient Reinforcement
Learning with Self-Predictive Representations", figure 2.

Unlike Dopamine's networks (written for one example and vmapped), these modules
take a leading batch axis: XLA then sees one large convolution per layer
instead of a vmapped loop, which is what a CPU or GPU runs fastest.

Parameter tree (top-level keys are the names `shrink_perturb_keys` refers to):
  encoder           Impala CNN (or Nature CNN for SR-SPR / SPR)
  transition_model  two 3x3 convolutions applied per SPR step
  projection        first layer of the Q head and SPR projection:
                    Dense(hidden_dim) (head_type 'dense', BBF), or a SoftMoE
                    over the latent's tokens, flattened (head_type 'softmoe',
                    moe.py; Obando-Ceron, Sokar et al., 2024)
  predictor         SPR's online-only predictor: a dense layer as wide as the
                    projection's output
  head              dueling C51 value and advantage streams
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
from flax.linen import dtypes
import gin
import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import moe

MODULE_NAMES = ('encoder', 'transition_model', 'projection', 'predictor', 'head')

_xavier = nn.initializers.xavier_uniform()


def module_name(path):
  """The network module a pytree path lies in (one of MODULE_NAMES), or None.

  That is the key right after flax's 'params' root (parameter trees and Adam's
  mu / nu, which mirror them), or the path's first key for a tree without that
  root. Other keys that happen to spell a module name, such as the optimiser
  partition labels 'encoder' and 'head' of `optax.multi_transform`, are not
  modules: Adam's step counts lie under those labels but outside any module.
  """
  keys = [getattr(entry, 'key', None) for entry in path]
  if 'params' in keys:
    after = keys.index('params') + 1
    key = keys[after] if after < len(keys) else None
  else:
    key = keys[0] if keys else None
  return key if key in MODULE_NAMES else None


def parameter_key(path):
  """A parameter's keys below flax's 'params' root, e.g. ('head', 'value',
  'kernel'), for a parameter tree or Adam's mu / nu (which mirror it); None
  for a leaf outside any parameter tree (Adam's step count)."""
  keys = [getattr(entry, 'key', None) for entry in path]
  if 'params' not in keys:
    return None
  return tuple(keys[keys.index('params') + 1:])


def renormalize(x):
  """Min-max rescales each example to [0, 1] over all non-batch axes.

  SPR, section 2.2: keeps latents on a fixed scale so that the transition model
  can be rolled out for several steps without the latents drifting.

  Args:
    x: (batch, ...) array.

  Returns:
    array of the same shape.
  """
  axes = tuple(range(1, x.ndim))
  low = jnp.min(x, axis=axes, keepdims=True)
  high = jnp.max(x, axis=axes, keepdims=True)
  return (x - low) / (high - low + 1e-5)


def max_pool_3x3_s2(x):
  """3x3 max-pool, stride 2, SAME padding, as nine strided slices.

  Same values as `nn.max_pool(x, (3, 3), (2, 2), 'SAME')`, but its gradient is
  a chain of selects instead of XLA's select-and-scatter, which is about 5x
  slower on CPU (measured: 0.96 s vs 0.18 s for the first Impala stage of a
  BBF minibatch).

  Args:
    x: (batch, h, w, c).

  Returns:
    (batch, ceil(h / 2), ceil(w / 2), c).
  """
  _, height, width, _ = x.shape
  out_h, out_w = (height + 1) // 2, (width + 1) // 2
  pad_h = max((out_h - 1) * 2 + 3 - height, 0)
  pad_w = max((out_w - 1) * 2 + 3 - width, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
              constant_values=-jnp.inf)
  out = None
  for i in range(3):
    for j in range(3):
      window = x[:, i:i + 2 * (out_h - 1) + 1:2, j:j + 2 * (out_w - 1) + 1:2]
      out = window if out is None else jnp.maximum(out, window)
  return out


class ResidualBlock(nn.Module):
  """Impala residual block: x + conv(relu(conv(relu(x))))."""

  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(
        nn.Conv, self.channels, (3, 3), padding='SAME', kernel_init=_xavier,
        dtype=self.dtype)
    y = conv()(nn.relu(x))
    y = conv()(nn.relu(y))
    return x + y


@gin.configurable
class ImpalaCNN(nn.Module):
  """Impala CNN (Espeholt et al., 2018) with BBF's width scaling.

  84x84 -> 42 -> 21 -> 11 through three stride-2 max-pools; at width_scale 4
  the output is 11x11x128 = 15,488 features. For MinAtar's 10x10 frames the
  gin files use two stages (`stage_channels = (16, 32)`): 10 -> 5 -> 3.
  """

  width_scale: float = 1.0
  stage_channels: Sequence[int] = (16, 32, 32)
  num_blocks: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # x: (batch, 84, 84, stack)
    for channels in self.stage_channels:
      channels = scaled_channels(channels, self.width_scale)
      x = nn.Conv(channels, (3, 3), padding='SAME', kernel_init=_xavier,
                  dtype=self.dtype)(x)
      x = max_pool_3x3_s2(x)
      for _ in range(self.num_blocks):
        x = ResidualBlock(channels, dtype=self.dtype)(x)
    return nn.relu(x)  # (batch, 11, 11, C)


@gin.configurable
class NatureCNN(nn.Module):
  """Nature DQN torso (Mnih et al., 2015), the encoder of SPR and SR-SPR."""

  width_scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # x: (batch, 84, 84, stack)
    for channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
      x = nn.Conv(scaled_channels(channels, self.width_scale),
                  (kernel, kernel), strides=(stride, stride),
                  padding='VALID', kernel_init=_xavier, dtype=self.dtype)(x)
      x = nn.relu(x)
    return x  # (batch, 7, 7, 64)


def scaled_channels(channels, width_scale):
  scaled = int(round(channels * width_scale))
  if scaled < 1:
    raise ValueError(
        f'width_scale={width_scale!r} gives {scaled} channels for a '
        f'{channels}-channel layer; width_scale must be positive and large '
        'enough for at least one channel.')
  return scaled


class SameWidthDense(nn.Module):
  """Dense layer whose output is as wide as its input: SPR's predictor.

  The predictor's output is compared with a projection by cosine, so it must
  be as wide as the projection, whose width the SoftMoE head only fixes at
  the first call (T * d_out). Parameters and arithmetic are those of
  `nn.Dense(width)`: same names, initialisers, RNG stream and dot.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # x: (batch, width)
    width = x.shape[-1]
    kernel = self.param('kernel', _xavier, (width, width))
    bias = self.param('bias', nn.initializers.zeros_init(), (width,))
    x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + bias


class NoisyDense(nn.Module):
  """Factorised-Gaussian noisy linear layer (Fortunato et al., 2018, eq. 10-11).

  The noise key is an argument, not a module attribute, so the same parameters
  serve every call; `key=None` turns the noise off (evaluation, targets).
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key=None):  # x: (batch, in)
    fan_in = x.shape[-1]
    bound = 1.0 / np.sqrt(fan_in)
    uniform = lambda k, s: jax.random.uniform(k, s, minval=-bound, maxval=bound)
    sigma0 = lambda k, s: jnp.full(s, 0.5 * bound)  # sigma_0 = 0.5 (paper 3.2)
    w_mu = self.param('kernel_mu', uniform, (fan_in, self.features))
    w_sigma = self.param('kernel_sigma', sigma0, (fan_in, self.features))
    b_mu = self.param('bias_mu', uniform, (self.features,))
    b_sigma = self.param('bias_sigma', sigma0, (self.features,))
    x = x.astype(self.dtype)
    if key is None:
      return x @ w_mu.astype(self.dtype) + b_mu.astype(self.dtype)
    f = lambda e: jnp.sign(e) * jnp.sqrt(jnp.abs(e))
    key_in, key_out = jax.random.split(key)
    eps_in = f(jax.random.normal(key_in, (fan_in, 1)))
    eps_out = f(jax.random.normal(key_out, (1, self.features)))
    w = w_mu + w_sigma * (eps_in * eps_out)
    b = b_mu + b_sigma * eps_out[0]
    return x @ w.astype(self.dtype) + b.astype(self.dtype)


class TransitionModel(nn.Module):
  """SPR's convolutional transition model: one latent step per action."""

  num_actions: int
  renormalize: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latent, action):
    # latent: (batch, H, W, C); action: (batch,) int
    batch, height, width, channels = latent.shape
    one_hot = jax.nn.one_hot(action, self.num_actions, dtype=latent.dtype)
    one_hot = jnp.broadcast_to(one_hot[:, None, None, :],
                               (batch, height, width, self.num_actions))
    x = jnp.concatenate([latent, one_hot], axis=-1)
    conv = functools.partial(nn.Conv, channels, (3, 3), padding='SAME',
                             kernel_init=_xavier, dtype=self.dtype)
    x = nn.relu(conv()(x))
    x = nn.relu(conv()(x))
    return renormalize(x) if self.renormalize else x


class DuelingC51Head(nn.Module):
  """Dueling distributional head (Wang et al., 2016; Bellemare et al., 2017)."""

  num_actions: int
  num_atoms: int
  dueling: bool = True
  noisy: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, key=None):  # hidden: (batch, hidden_dim)
    if self.noisy:
      keys = (None, None) if key is None else tuple(jax.random.split(key))
      dense = lambda n, name, k: NoisyDense(n, self.dtype, name=name)(hidden,
                                                                      k)
    else:
      keys = (None, None)
      dense = lambda n, name, k: nn.Dense(
          n, kernel_init=_xavier, dtype=self.dtype, name=name)(hidden)
    adv = dense(self.num_actions * self.num_atoms, 'advantage', keys[0])
    adv = adv.reshape(-1, self.num_actions, self.num_atoms)
    if not self.dueling:
      return adv  # (batch, actions, atoms) logits
    value = dense(self.num_atoms, 'value', keys[1])[:, None, :]
    return value + adv - adv.mean(axis=1, keepdims=True)


HEAD_TYPES = ('dense', 'softmoe')


@gin.configurable
class BBFNetwork(nn.Module):
  """Encoder, SPR modules and Q head, exposed as separately callable methods.

  `__call__` (used only for initialisation) touches every module so that
  `init` creates the whole parameter tree.

  head_type selects the projection (the Q head's first layer, also SPR's
  projection): 'dense' is BBF's Dense(hidden_dim) on the flattened latent;
  'softmoe' tokenises the latent (`tokenization`), applies a SoftMoE of
  `num_experts` experts with `slots_per_expert` slots and `expert_width`
  hidden units each, and flattens its output tokens: (batch, T * d_out),
  d_out = `expert_output_dim` (None: the token size). hidden_dim is then
  unused. num_experts = 1 is the tokenised single expert of Sokar et al.
  (2024). Either way the head sees relu(projection), as in BBF, and the
  predictor is as wide as the projection's output. (The RL paper feeds the
  flattened tokens to its final layer without a ReLU; keeping BBF's keeps
  the projection a drop-in for SPR, resets and the plasticity diagnostics,
  whose penultimate layer is relu(projection).)
  """

  num_actions: int
  num_atoms: int = 51
  hidden_dim: int = 2048
  width_scale: float = 4.0
  encoder_type: str = 'impala'
  renormalize: bool = True
  dueling: bool = True
  noisy: bool = False
  head_type: str = 'dense'
  tokenization: str = 'per_position'
  num_experts: int = 4
  # None: ceil(T / num_experts), about one slot per token (capacity 1).
  slots_per_expert: Optional[int] = None
  expert_width: int = 512
  # None: the token size d (the RL paper's experts keep it).
  expert_output_dim: Optional[int] = None
  # Puigcerver et al.'s l2-normalised routing logits (moe.py); the RL paper's
  # code leaves it off.
  moe_normalize: bool = False
  # Computation dtype (bf16 for mixed precision); parameters stay float32.
  dtype: Any = jnp.float32

  def setup(self):
    if self.hidden_dim < 1:
      raise ValueError(f'hidden_dim must be positive, got {self.hidden_dim}.')
    if self.encoder_type == 'impala':
      self.encoder = ImpalaCNN(width_scale=self.width_scale, dtype=self.dtype)
    elif self.encoder_type == 'nature':
      self.encoder = NatureCNN(width_scale=self.width_scale, dtype=self.dtype)
    else:
      raise ValueError(f'Unknown encoder_type {self.encoder_type!r}; '
                       "expected 'impala' or 'nature'.")
    self.transition_model = TransitionModel(self.num_actions, self.renormalize,
                                            self.dtype)
    self.projection = self._make_projection()
    self.predictor = SameWidthDense(self.dtype)
    self.head = DuelingC51Head(self.num_actions, self.num_atoms, self.dueling,
                               self.noisy, self.dtype)

  def _make_projection(self):
    if self.head_type == 'dense':
      if self.noisy:
        return NoisyDense(self.hidden_dim, self.dtype)
      return nn.Dense(self.hidden_dim, kernel_init=_xavier, dtype=self.dtype)
    if self.head_type != 'softmoe':
      raise ValueError(f'Unknown head_type {self.head_type!r}; expected one '
                       f'of {HEAD_TYPES}.')
    if self.tokenization not in moe.TOKENIZATIONS:
      raise ValueError(f'Unknown tokenization {self.tokenization!r}; '
                       f'expected one of {moe.TOKENIZATIONS}.')
    for name in ('num_experts', 'slots_per_expert', 'expert_width',
                 'expert_output_dim'):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f'{name} must be positive, got {value!r}.')
    if self.noisy:
      # The experts' layers have no noisy variant (SPR's noisy nets).
      raise ValueError("noisy=True needs head_type='dense'.")
    return moe.TokenizedSoftMoE(
        num_experts=self.num_experts, expert_width=self.expert_width,
        tokenization=self.tokenization,
        slots_per_expert=self.slots_per_expert,
        output_dim=self.expert_output_dim, normalize=self.moe_normalize,
        dtype=self.dtype)

  def encode(self, x):
    """(batch, 84, 84, stack) float in [0, 1] -> (batch, h, w, c) latent.

    Multi-channel frames (MinAtar: (batch, 10, 10, C, stack)) are stacked
    along the channel axis: (batch, 10, 10, C * stack).
    """
    if x.ndim == 5:
      x = x.reshape(x.shape[:3] + (-1,))
    latent = self.encoder(x.astype(self.dtype))
    return renormalize(latent) if self.renormalize else latent

  def project(self, latent, key=None):
    """Latent -> (batch, width): the shared first Q-head layer, no ReLU.

    width is hidden_dim for the dense head, T * d_out for the SoftMoE head.
    """
    if self.head_type == 'softmoe':
      return self.projection(latent)
    flat = latent.reshape(latent.shape[0], -1)
    return self.projection(flat, key) if self.noisy else self.projection(flat)

  def predict(self, projected):
    return self.predictor(projected).astype(jnp.float32)

  def q_logits(self, latent, key=None):
    """Latent -> (batch, actions, atoms) C51 logits."""
    if key is not None:
      key_proj, key_head = jax.random.split(key)
    else:
      key_proj = key_head = None
    hidden = nn.relu(self.project(latent, key_proj))
    # Losses and action values are computed in float32.
    return self.head(hidden, key_head).astype(jnp.float32)

  def transition(self, latent, action):
    return self.transition_model(latent, action)

  def rollout(self, latent, actions):
    """Applies the transition model along actions (batch, K): SPR eq. (2).

    K is small (5), so the loop is unrolled; XLA fuses it as well as a scan.

    Returns:
      (K, batch, h, w, c) predicted latents for steps 1..K.
    """
    latents = []
    for k in range(actions.shape[1]):
      latent = self.transition_model(latent, actions[:, k])
      latents.append(latent)
    return jnp.stack(latents)

  def __call__(self, x, actions: Optional[jnp.ndarray] = None):
    latent = self.encode(x)
    if actions is None:
      actions = jnp.zeros((x.shape[0], 1), jnp.int32)
    self.predict(self.project(latent))
    self.rollout(latent, actions)
    return self.q_logits(latent)


def count_parameters(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
