# coding=utf-8
"""Multi-step returns, bootstrap indices, SPR masks and frame stacks, computed
on the accelerator from a window of replay slots.

A replay slot s holds (o_s, a_s, r_s, d_s, e_s): the newest frame of the state
the agent acted in, the action, the (clipped) reward that followed, d_s = 1 if
the environment terminated after a_s (a life loss counts, as in BBF), and
e_s = 1 if the episode ended after a_s for any reason (terminal or time limit).

For a sample at slot t the replay returns the window of slots
t-(S-1) .. t+H, where S is the stack size and H = max(max_update_horizon, K).
Everything below takes that window for ONE sample; `jax.vmap` batches it.
n and gamma are traced values, so the annealing schedule never recompiles.
"""

import jax
import jax.numpy as jnp


def n_step_return(rewards, terminals, n, gamma, legacy=False):
  """n-step return G, bootstrap discount and bootstrap position for one sample.

  Correct form (Sutton & Barto eq. 7.1):
    G_t = sum_{k<n} gamma^k r_{t+k} prod_{j<k} (1 - d_{t+j})
    target = G_t + gamma^n prod_{j<n} (1 - d_{t+j}) Q(s_{t+n})
  `legacy=True` reproduces the official BBF buffer (google-research#1851): it
  bootstraps from s_{t+n-1} and checks only d_t .. d_{t+n-2}, still with
  gamma^n (for n = 1 the "next" state is the state itself).

  Args:
    rewards: (H,) float, r_t .. r_{t+H-1}.
    terminals: (H,) float/bool, d_t .. d_{t+H-1}.
    n: int scalar (traced), 1 <= n <= H.
    gamma: float scalar (traced).
    legacy: static bool.

  Returns:
    (G, discount, bootstrap_offset): the return, the factor multiplying the
    bootstrap value, and the offset k of the bootstrap state s_{t+k}.
  """
  horizon = rewards.shape[0]
  steps = jnp.arange(horizon)
  not_done = 1.0 - terminals.astype(jnp.float32)
  # alive[k] = prod_{j<k} (1 - d_{t+j}), k = 0..H.
  alive = jnp.concatenate([jnp.ones((1,)), jnp.cumprod(not_done)])
  discounts = jnp.power(gamma, steps.astype(jnp.float32))
  ret = jnp.sum(jnp.where(steps < n, discounts * rewards * alive[:-1], 0.0))
  n = jnp.asarray(n, jnp.int32)
  offset = n - 1 if legacy else n
  discount = jnp.power(gamma, n.astype(jnp.float32)) * alive[offset]
  return ret, discount, offset


def spr_mask(terminals, jumps, legacy=False):
  """Validity of SPR's predicted latents for steps 1..K of one sample.

  Correct: mask_k = prod_{j<k} (1 - d_{t+j}): the state after step k exists
  in the same episode iff no terminal happened before it.
  `legacy=True` gives the official product over d_t .. d_{t+k} (one step too
  many); its batch-row-0 defect is reproduced by `spr_mask_batch`.

  Args:
    terminals: (H,) with H >= K.
    jumps: static K.
    legacy: static bool.

  Returns:
    (K,) float mask.
  """
  not_done = 1.0 - terminals[:jumps].astype(jnp.float32)
  cum = jnp.cumprod(not_done)  # cum[k-1] = prod_{j<k} (1 - d_{t+j})
  if legacy:
    return jnp.concatenate([cum[1:], cum[-1:] * (1.0 - terminals[jumps])])
  return cum


def spr_mask_batch(terminals, jumps, legacy=False):
  """(B, H) -> (B, K); in legacy mode batch row 0 is never masked."""
  masks = jax.vmap(lambda d: spr_mask(d, jumps, legacy))(terminals)
  if legacy:
    masks = masks.at[0].set(1.0)
  return masks


def frame_stacks(frames, episode_ends, positions, stack_size):
  """Frame stacks at the given window positions, zeroed before episode start.

  Frame j (0 = oldest) of the stack of s_{t+p} is slot t+p-(S-1)+j; it belongs
  to the same episode iff no episode ended in slots t+p-(S-1)+j .. t+p-1.
  This matches what Dopamine's agent sees when acting: `begin_episode` clears
  the stack, also after a life loss.

  Args:
    frames: (S-1+H+1, h, w) or (S-1+H+1, h, w, C) uint8 window; index i is
      slot t-(S-1)+i.
    episode_ends: (S-1+H+1,) e flags of the same slots.
    positions: (P,) int offsets p (state s_{t+p}); may be traced.
    stack_size: static S.

  Returns:
    (P, h, w, S) (or (P, h, w, C, S)) uint8 stacks, oldest frame first
    (Dopamine's layout).
  """
  idx = positions[:, None] + jnp.arange(stack_size)[None, :]  # (P, S)
  stacked = frames[idx]  # (P, S, h, w[, C])
  not_end = 1 - episode_ends[idx][:, :-1].astype(jnp.uint8)  # (P, S-1)
  # valid[:, j] = prod_{m=j}^{S-2} (1 - e): reversed cumulative product.
  valid = jnp.cumprod(not_end[:, ::-1], axis=1)[:, ::-1]
  valid = jnp.concatenate(
      [valid, jnp.ones((valid.shape[0], 1), valid.dtype)], axis=1)
  stacked = stacked * valid.reshape(valid.shape + (1,) * (frames.ndim - 1))
  return jnp.moveaxis(stacked, 1, -1)
