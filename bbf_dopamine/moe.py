# coding=utf-8
"""Soft mixture of experts over the tokens of a convolutional latent.

  SoftMoE   Puigcerver et al. (2024), "From Sparse to Soft Mixtures of
            Experts", ICLR 2024, section 2.1 (eq. 1 dispatch, eq. 2 combine).
  In RL     Obando-Ceron, Sokar et al. (2024), "Mixtures of Experts Unlock
            Parameter Scaling for Deep RL", ICML 2024: the SoftMoE replaces
            the penultimate dense layer; its output tokens are flattened and
            fed to the final layer. Sokar et al. (2024), "Don't flatten,
            tokenize!": one (wider) expert does as well; the gain comes from
            tokenising the encoder output instead of flattening it.

For one example with tokens X (T, d) and slot parameters Phi (d, S), S = n * p
(n experts, p slots each):
  logits  L = X Phi                                      (T, S)
  D = softmax of L over tokens (each column sums to 1)    eq. (1), dispatch
  slot inputs   X~ = D^T X                                (S, d)
  Y~_slots of expert i = f_i(X~_slots of expert i)        (S, d_out)
  C = softmax of L over slots (each row sums to 1)        eq. (2), combine
  output  Y = C Y~                                        (T, d_out)

Each expert f_i is Dense(expert_width) -> ReLU -> Dense(d_out), the expert of
the RL paper's released code (dopamine/labs/moes), where d_out is the token
size. Experts are stored as stacked tensors (not nn.Dense modules) so that all
experts run as one batched matmul.

Normalisation: Puigcerver et al. l2-normalise the tokens and each column of
Phi over d, and scale Phi by a learned scalar, before the logits, because
without it the logits grow with d and the softmaxes collapse to one-hot for
large d. The RL paper's released code has that option but leaves it off by
default; here `normalize=False` is the default and `normalize=True` adds it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

TOKENIZATIONS = ('per_position', 'per_feature')

# Each expert's (d, width) and (width, d_out) kernel is Xavier-initialised on
# its own fans, as a Dense layer of that shape would be: axis 0 indexes
# experts.
_expert_init = nn.initializers.xavier_uniform(batch_axis=(0,))


def tokenize(latent, mode):
  """(batch, h, w, c) latent -> (batch, T, d) tokens.

  Obando-Ceron, Sokar et al. (2024) call these "PerConv" and "PerFeat".

  Args:
    latent: (batch, h, w, c) encoder output.
    mode: 'per_position': one token per spatial position, its c channels as
      features: (batch, h * w, c). 'per_feature': one token per channel, its
      h * w feature map as features: (batch, c, h * w).

  Returns:
    (batch, T, d) tokens.
  """
  batch, height, width, channels = latent.shape
  tokens = latent.reshape(batch, height * width, channels)  # (B, h*w, c)
  if mode == 'per_position':
    return tokens
  if mode == 'per_feature':
    return tokens.transpose(0, 2, 1)  # (B, c, h*w)
  raise ValueError(f'Unknown tokenization {mode!r}; expected one of '
                   f'{TOKENIZATIONS}.')


def default_slots_per_expert(num_tokens, num_experts):
  """ceil(T / n): about one slot per token in all (capacity factor 1)."""
  return -(-num_tokens // num_experts)


def _l2_normalize(x, axis, eps=1e-6):
  return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True)) + eps)


def routing_weights(tokens, phi, scale=None):
  """Dispatch and combine weights of a SoftMoE: eq. (1) and (2).

  Args:
    tokens: (batch, T, d).
    phi: (d, S) slot parameters, S = experts * slots per expert.
    scale: None, or the learned scalar of Puigcerver et al.'s normalisation:
      tokens and the columns of phi are then l2-normalised over d and phi
      is multiplied by `scale`.

  Returns:
    dispatch: (batch, T, S), softmax over tokens (axis 1), eq. (1);
    combine: (batch, T, S), softmax over slots (axis 2), eq. (2);
    both float32, whatever the dtype of `tokens`.
  """
  x = tokens.astype(jnp.float32)
  phi = phi.astype(jnp.float32)
  if scale is not None:
    x = _l2_normalize(x, axis=-1)
    phi = scale * _l2_normalize(phi, axis=0)
  logits = jnp.einsum('btd,ds->bts', x, phi)  # (B, T, S)
  return jax.nn.softmax(logits, axis=1), jax.nn.softmax(logits, axis=2)


class SoftMoE(nn.Module):
  """Soft MoE layer: (batch, T, d) tokens -> (batch, T, d_out) tokens.

  Attributes:
    num_experts: n.
    slots_per_expert: p; None gives ceil(T / n) (the RL paper's capacity).
    expert_width: hidden units of each expert's MLP.
    output_dim: d_out; None keeps the token size d, as the RL paper does.
    normalize: Puigcerver et al.'s l2 normalisation of the logits' inputs.
    dtype: computation dtype; routing softmaxes are computed in float32.
  """

  num_experts: int
  expert_width: int
  slots_per_expert: int = None
  output_dim: int = None
  normalize: bool = False
  dtype: jnp.dtype = jnp.float32

  def slots(self, num_tokens):
    if self.slots_per_expert is None:
      return default_slots_per_expert(num_tokens, self.num_experts)
    return self.slots_per_expert

  @nn.compact
  def __call__(self, tokens):  # tokens: (batch, T, d)
    batch, num_tokens, dim = tokens.shape
    slots = self.slots(num_tokens)
    out_dim = dim if self.output_dim is None else self.output_dim
    n, width = self.num_experts, self.expert_width
    phi = self.param('phi', nn.initializers.lecun_normal(), (dim, n * slots))
    scale = (self.param('scale', nn.initializers.ones, ())
             if self.normalize else None)
    dispatch, combine = routing_weights(tokens, phi, scale)  # (B, T, S) each
    dispatch = dispatch.astype(self.dtype)
    combine = combine.astype(self.dtype)
    x = tokens.astype(self.dtype)
    slot_inputs = jnp.einsum('bts,btd->bsd', dispatch, x)  # (B, S, d): D^T X
    slot_inputs = slot_inputs.reshape(batch, n, slots, dim)  # (B, n, p, d)

    w1 = self.param('expert_kernel_0', _expert_init, (n, dim, width))
    b1 = self.param('expert_bias_0', nn.initializers.zeros, (n, width))
    w2 = self.param('expert_kernel_1', _expert_init, (n, width, out_dim))
    b2 = self.param('expert_bias_1', nn.initializers.zeros, (n, out_dim))
    cast = lambda p: p.astype(self.dtype)
    hidden = jnp.einsum('bnpd,ndw->bnpw', slot_inputs, cast(w1))
    hidden = nn.relu(hidden + cast(b1)[None, :, None, :])  # (B, n, p, width)
    slot_outputs = jnp.einsum('bnpw,nwo->bnpo', hidden, cast(w2))
    slot_outputs = slot_outputs + cast(b2)[None, :, None, :]  # (B, n, p, o)
    slot_outputs = slot_outputs.reshape(batch, n * slots, out_dim)  # (B, S, o)
    return jnp.einsum('bts,bso->bto', combine, slot_outputs)  # (B, T, d_out)


class TokenizedSoftMoE(nn.Module):
  """BBF's projection as a SoftMoE: latent -> tokens -> SoftMoE -> flatten.

  (batch, h, w, c) -> (batch, T * d_out). Flattening the output tokens and
  feeding them to the next layer is what the RL paper does (its networks
  reshape the SoftMoE output to one vector before the final layer).

  flax's `capture_intermediates` records outputs only for the layer types a
  filter names (diagnostics.py names Conv, Dense and the residual block), and
  the plasticity diagnostics read this module's output as BBF's projection;
  the module therefore records its output in 'intermediates' itself, under
  the key capture_intermediates would use. Outside such a call the
  collection is immutable and `sow` does nothing.
  """

  num_experts: int
  expert_width: int
  tokenization: str = 'per_position'
  slots_per_expert: int = None
  output_dim: int = None
  normalize: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, latent):  # latent: (batch, h, w, c)
    tokens = tokenize(latent, self.tokenization)  # (B, T, d)
    out = SoftMoE(self.num_experts, self.expert_width, self.slots_per_expert,
                  self.output_dim, self.normalize, self.dtype,
                  name='softmoe')(tokens)  # (B, T, d_out)
    flat = out.reshape(out.shape[0], -1)  # (B, T * d_out)
    self.sow('intermediates', '__call__', flat)
    return flat
