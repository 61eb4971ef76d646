# coding=utf-8
"""BBFAgent's checkpoints: what Dopamine's Checkpointer stores for it.

A checkpoint holds the whole training state, so that a resumed run continues
exactly where an uninterrupted one would: the TrainState (parameters, EMA
target, optimiser, pruning masks), every RNG stream (acting, resets, replay
sampling, the plasticity probe, ReDo), the clocks, the frame stack, the ALE's
state and RNG, and the replay buffer in its own file next to `ckpt.N`.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

REPLAY_FILE = 'bbf_replay_ckpt.{}.npz'


class CheckpointMixin(object):
  """bundle_and_checkpoint / unbundle for BBFAgent (needs its attributes)."""

  def attach_environment(self, environment):
    """Lets checkpoints carry the environment's state and RNG.

    With sticky actions the ALE draws from its own RNG; without its state a
    resumed run would replay the seed's stream from the start and diverge
    from an uninterrupted one.
    """
    self._environment = environment

  def _ale(self):
    inner = getattr(self._environment, 'environment', self._environment)
    return getattr(getattr(inner, 'unwrapped', None), 'ale', None)

  @property
  def checkpoint_nbytes(self):
    """Upper bound of one checkpoint's size on disk (replay + state)."""
    state = sum(x.nbytes for x in jax.tree_util.tree_leaves(self._state))
    return self._replay.nbytes + state

  def bundle_and_checkpoint(self, checkpoint_dir, iteration_number):
    if not tf.io.gfile.exists(checkpoint_dir):
      return None
    self._replay.save(
        os.path.join(checkpoint_dir, REPLAY_FILE.format(iteration_number)))
    # Replay files whose checkpoint is gone (Dopamine's Checkpointer deletes
    # ckpt.N and its sentinel, not ours); Atari100kRunner prunes them itself.
    for name in os.listdir(checkpoint_dir):
      number = name[len('bbf_replay_ckpt.'):-len('.npz')]
      if (name.startswith('bbf_replay_ckpt.') and name.endswith('.npz') and
          number.isdigit() and int(number) < iteration_number and
          not os.path.exists(os.path.join(
              checkpoint_dir, f'sentinel_checkpoint_complete.{number}'))):
        os.remove(os.path.join(checkpoint_dir, name))
    to_host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)
    ale = self._ale()
    return {
        'bbf_version': 1,
        'train_state': to_host(self._state),
        'acting_rng': np.asarray(self._rng),
        'reset_rng': np.asarray(self._reset_rng),
        'numpy_rng': self._np_rng.bit_generator.state,
        'training_steps': self.training_steps,
        'gradient_steps': self.gradient_steps,
        'cycle_start': self.cycle_start,
        'num_resets': self.num_resets,
        'state': self.state.copy(),
        'ale_state': (pickle.dumps(ale.cloneState(include_rng=True))
                      if ale is not None else None),
        'plasticity': self._plasticity.bundle(),
        'redo': self._redo.bundle(),
        'pruning': self._pruner.bundle(),
        'prefetch': self._prefetcher.bundle(),
    }

  def unbundle(self, checkpoint_dir, iteration_number, bundle_dictionary):
    if bundle_dictionary is None or 'bbf_version' not in bundle_dictionary:
      raise ValueError(
          f'Checkpoint {iteration_number} in {checkpoint_dir} was not written '
          'by BBFAgent (no bbf_version entry).')
    replay_path = os.path.join(checkpoint_dir,
                               REPLAY_FILE.format(iteration_number))
    if not os.path.exists(replay_path):
      raise FileNotFoundError(
          f'Replay checkpoint {replay_path} is missing; cannot resume.')
    self._replay.load(replay_path)
    # A batch drawn ahead before the checkpoint (its random numbers are
    # spent).
    self._prefetcher.unbundle(bundle_dictionary.get('prefetch'))
    saved = bundle_dictionary['train_state']
    fresh = jax.tree_util.tree_structure(self._state)
    if jax.tree_util.tree_structure(saved) != fresh:
      raise ValueError(
          f'Checkpoint {iteration_number} in {checkpoint_dir} holds a network '
          'or optimiser of a different shape than this configuration.')
    self._state = jax.tree_util.tree_map(jnp.asarray, saved)
    self._rng = jnp.asarray(bundle_dictionary['acting_rng'])
    self._reset_rng = jnp.asarray(bundle_dictionary['reset_rng'])
    self._np_rng.bit_generator.state = bundle_dictionary['numpy_rng']
    for name in ('training_steps', 'gradient_steps', 'cycle_start',
                 'num_resets'):
      setattr(self, name, bundle_dictionary[name])
    self.state = bundle_dictionary['state']
    for name, owner in (('plasticity', self._plasticity),
                        ('redo', self._redo), ('pruning', self._pruner)):
      if name in bundle_dictionary:
        owner.unbundle(bundle_dictionary[name])
    ale = self._ale()
    if bundle_dictionary.get('ale_state') is not None and ale is not None:
      ale.restoreState(pickle.loads(bundle_dictionary['ale_state']))
    return True

