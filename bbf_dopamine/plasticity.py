# coding=utf-8
"""When and on what the agent measures its plasticity (`diagnostics.py`).

A fixed probe batch of states is drawn from replay once (the first time a
measurement is due), with its own RNG so that drawing it never changes the
training stream, and kept for the whole run (and in checkpoints): dormancy,
srank, norms and Q statistics are comparable over time, and policy churn
(Schaul et al. 2022) compares greedy actions on the same states. A
measurement runs every `every` gradient steps and right before and after
every reset, with the reset marked on the same time axis
(`Plasticity/Reset`), so a plot shows what each reset does.

Over-estimation: the Q value of every action taken in training (under the
acting parameters, rewards as the agent sees them) against the discounted
Monte-Carlo return of its episode (with the discount of the Q targets at the
episode's end), over the episodes completed since the last measurement;
episodes cut by the time limit have no Monte-Carlo return and are skipped.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bbf_dopamine import diagnostics
from bbf_dopamine import returns


@functools.partial(jax.jit, static_argnames=('stack_size',))
def replay_states(frames, episode_ends, stack_size):
  """(B, W, h, w[, C]) replay windows -> (B, h, w[, C], S) states s_t."""
  return jax.vmap(lambda f, e: returns.frame_stacks(
      f, e, jnp.zeros((1,), jnp.int32), stack_size)[0])(frames, episode_ends)


class PlasticityMonitor(object):
  """Owns the probe batch and the previous greedy actions."""

  def __init__(self, network, support, stack_size, every, batch_size, seed,
               tau=diagnostics.DEFAULT_TAU, delta=diagnostics.DEFAULT_DELTA):
    self._network = network
    self._support = jnp.asarray(support)
    self._stack_size = stack_size
    self.every = int(every)
    self._batch_size = int(batch_size)
    self._rng = np.random.default_rng([int(seed), 7])
    self._tau, self._delta = float(tau), float(delta)
    self.probe_states = None  # (B, h, w[, C], S) uint8
    self.previous_greedy = None  # (B,) int32
    self._episode = []  # (Q(s_t, a_t), r_t) of the episode in flight
    self._gap = [0.0, 0]  # sum of Q - G and its count since the last probe

  def record(self, q, reward, terminal=False, episode_end=False, gamma=None):
    """One training transition; at an episode's end, its Q - G gaps."""
    if self.every <= 0:
      return
    self._episode.append((q, float(reward)))
    if episode_end:
      if terminal:
        qs, rewards = (np.asarray(x) for x in zip(*self._episode))
        ends = np.zeros(len(rewards), bool)
        ends[-1] = True
        mc = diagnostics.discounted_returns(rewards, ends, gamma)
        self._gap[0] += float(np.sum(qs - mc))
        self._gap[1] += len(mc)
      self._episode = []

  def due(self, previous_step, step):
    return self.every > 0 and step // self.every > previous_step // self.every

  def measure(self, params, replay):
    """{tag: float} on the probe batch (drawn from `replay` on first use)."""
    if self.probe_states is None:
      indices, _ = replay.sample(self._batch_size, self._rng)
      window = replay.gather(indices)
      self.probe_states = np.asarray(replay_states(
          window['frames'], window['episode_ends'], self._stack_size))
    metrics, greedy = diagnostics.probe(
        self._network, params, self.probe_states, self._support,
        jnp.float32(self._tau), jnp.float32(self._delta))
    values = {k: float(v) for k, v in metrics.items()}
    greedy = np.asarray(greedy)
    if self.previous_greedy is not None:
      values[f'{diagnostics.PREFIX}/PolicyChurn'] = float(
          diagnostics.policy_churn(self.previous_greedy, greedy))
    self.previous_greedy = greedy
    if self._gap[1]:
      values[f'{diagnostics.PREFIX}/Overestimation'] = (
          self._gap[0] / self._gap[1])
      self._gap = [0.0, 0]
    return values

  def bundle(self):
    return {'probe_states': self.probe_states,
            'previous_greedy': self.previous_greedy,
            'rng': self._rng.bit_generator.state,
            'episode': list(self._episode), 'gap': list(self._gap)}

  def unbundle(self, saved):
    self.probe_states = saved['probe_states']
    self.previous_greedy = saved['previous_greedy']
    self._rng.bit_generator.state = saved['rng']
    self._episode = list(saved.get('episode', []))
    self._gap = list(saved.get('gap', [0.0, 0]))
