# coding=utf-8
"""The BBF agent (Schwarzer et al., 2023) for Dopamine's Runner.

Components (paper section 3): SPR self-prediction with a convolutional
transition model and EMA targets; an Impala encoder scaled by `width_scale`;
C51 with dueling and double DQN; shrink-and-perturb resets every
`reset_every` agent steps; an update horizon annealed from
`max_update_horizon` to `update_horizon` and a discount annealed from
`min_gamma` to `gamma` over `cycle_steps` gradient steps, both restarting at
every reset; AdamW; an EMA target network used for bootstrapping and acting;
DrQ augmentation; prioritised replay at `replay_ratio / batch_size` gradient
steps per agent step.

The pure computations live in `learner.py` (gradient step), `returns.py`,
`losses.py`, `resets.py` and `schedules.py`; replay batches come from
`prefetch.py` (optionally drawn while the previous call trains); this class
owns the state and drives them from Dopamine's `begin_episode / step /
end_episode` contract.
"""

import functools

from absl import logging
from dopamine.jax.agents.dqn import dqn_agent
from dopamine.metrics import statistics_instance
import gin
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from bbf_dopamine import agent_checkpoint
from bbf_dopamine import learner
from bbf_dopamine import networks
from bbf_dopamine import numerics
from bbf_dopamine import optimizers
from bbf_dopamine import plasticity
from bbf_dopamine import prefetch
from bbf_dopamine import pruning
from bbf_dopamine import redo
from bbf_dopamine import replay as replay_lib
from bbf_dopamine import resets
from bbf_dopamine import schedules

REPLAY_FILE = agent_checkpoint.REPLAY_FILE


def _positive(name, value):
  if value <= 0:
    raise ValueError(f'BBFAgent.{name} must be positive, got {value!r}.')


@gin.configurable
class BBFAgent(agent_checkpoint.CheckpointMixin, dqn_agent.JaxDQNAgent):
  """BBF. Subclasses JaxDQNAgent so Dopamine's Runner passes it terminals.

  The parent constructor is not called: it builds a fixed-n replay buffer and
  a clock-seeded RNG that BBF replaces.
  """

  def __init__(self,
               num_actions,
               observation_shape=(84, 84),
               stack_size=4,
               network=networks.BBFNetwork,
               seed=0,
               summary_writer=None,
               debug_dir=None,
               eval_mode=False,
               # Dopamine's JaxDQNAgent knobs (official BBF.gin values).
               gamma=0.997,
               update_horizon=3,
               min_replay_history=2000,
               update_period=1,
               target_update_period=1,
               epsilon_fn=dqn_agent.linearly_decaying_epsilon,
               epsilon_train=0.0,
               epsilon_eval=0.001,
               epsilon_decay_period=2001,
               # BBF's knobs, named as in the official BBF.gin.
               noisy=False,
               dueling=True,
               double_dqn=True,
               distributional=True,
               num_atoms=51,
               v_max=10.0,
               max_update_horizon=10,
               min_gamma=0.97,
               cycle_steps=10_000,
               reset_every=20_000,
               no_resets_after=100_000,
               shrink_perturb_keys='encoder,transition_model',
               shrink_factor=0.5,
               perturb_factor=0.5,
               replay_ratio=64,
               batches_to_group=2,
               batch_size=32,
               replay_capacity=200_000,
               replay_scheme='prioritized',
               spr_weight=5.0,
               jumps=5,
               data_augmentation=True,
               target_update_tau=0.005,
               target_action_selection=True,
               learning_rate=1e-4,
               encoder_learning_rate=1e-4,
               half_precision=False,
               # Draw the next batch while the device trains (prefetch.py):
               # faster on an accelerator, priorities one group staler.
               prefetch_batches=False,
               log_every=100,
               diagnostics_every=1000,
               diagnostics_batch_size=256,
               # ReDo (Sokar et al., 2023; redo.py); redo_every = 0: off.
               redo_every=0,
               redo_tau=0.1,
               redo_layers='encoder,projection',
               redo_batch_size=256,
               # Gradual magnitude pruning (pruning.py); 0 sparsity: off.
               target_sparsity=0.0,
               pruning_start=0.2,
               pruning_end=0.8,
               pruning_frequency=1000,
               prune_layers='encoder,transition_model,projection,predictor,head',
               pruning_total_steps=100_000,
               pruning_on_reset='keep',
               # Compatibility with the official code's defects (see README).
               legacy_nstep=False,
               legacy_spr_mask=False,
               legacy_optimizer_reset=False):
    _positive('reset_every', reset_every)
    _positive('batch_size', batch_size)
    _positive('replay_ratio', replay_ratio)
    _positive('batches_to_group', batches_to_group)
    _positive('update_period', update_period)
    _positive('cycle_steps', cycle_steps)
    if replay_ratio % batch_size:
      raise ValueError(
          f'BBFAgent.replay_ratio={replay_ratio} is not a whole number of '
          f'gradient steps per agent step with batch_size={batch_size} '
          '(gradient steps per step = replay_ratio / batch_size).')
    num_updates = replay_ratio // batch_size
    if num_updates % batches_to_group:
      raise ValueError(
          f'BBFAgent: {num_updates} gradient steps per agent step cannot be '
          f'split into groups of batches_to_group={batches_to_group}.')
    if target_update_period != 1:
      raise ValueError('BBFAgent updates its EMA target every gradient step; '
                       f'target_update_period={target_update_period} is not '
                       'supported (use target_update_tau).')
    if not distributional:
      raise ValueError('BBFAgent is distributional (C51); distributional=False'
                       ' is not supported.')
    if replay_scheme not in ('prioritized', 'uniform'):
      raise ValueError(f'Unknown replay_scheme {replay_scheme!r}; expected '
                       "'prioritized' or 'uniform'.")
    if jumps < 0 or spr_weight < 0:
      raise ValueError(f'jumps ({jumps}) and spr_weight ({spr_weight}) must '
                       'be >= 0.')
    if not (0.0 < target_update_tau <= 1.0):
      raise ValueError(f'target_update_tau={target_update_tau} must be in '
                       '(0, 1].')
    schedules.validate_schedule(max_update_horizon, update_horizon, min_gamma,
                                gamma)
    if isinstance(shrink_perturb_keys, str):
      shrink_perturb_keys = tuple(
          k.strip() for k in shrink_perturb_keys.split(',') if k.strip())
    unknown = set(shrink_perturb_keys) - set(networks.MODULE_NAMES)
    if unknown:
      raise ValueError(f'Unknown shrink_perturb_keys {sorted(unknown)}; '
                       f'modules are {networks.MODULE_NAMES}.')

    self.num_actions = num_actions
    self.observation_shape = tuple(observation_shape)
    self.stack_size = stack_size
    self.eval_mode = eval_mode
    self.gamma = gamma
    self.update_horizon = update_horizon
    self.max_update_horizon = max_update_horizon
    self.min_gamma = min_gamma
    self.cycle_steps = cycle_steps
    self.min_replay_history = min_replay_history
    self.update_period = update_period
    self.epsilon_fn = epsilon_fn
    self.epsilon_train = epsilon_train
    self.epsilon_eval = epsilon_eval
    self.epsilon_decay_period = epsilon_decay_period
    self.reset_every = reset_every
    self.no_resets_after = no_resets_after
    self.shrink_perturb_keys = tuple(shrink_perturb_keys)
    self.shrink_factor = shrink_factor
    self.perturb_factor = perturb_factor
    self.batch_size = batch_size
    self.batches_to_group = batches_to_group
    self.num_updates_per_step = num_updates
    self.noisy = noisy
    self.target_action_selection = target_action_selection
    self.log_every = log_every
    self.legacy_optimizer_reset = legacy_optimizer_reset
    self._seed = int(seed)
    self.debug_dir = debug_dir
    self._environment = None
    self._prioritized = replay_scheme == 'prioritized'

    if isinstance(summary_writer, str):
      self.summary_writer = tf.summary.create_file_writer(summary_writer)
    else:
      self.summary_writer = summary_writer

    # half_precision: bf16 computation, float32 parameters and optimiser.
    self.network_def = network(
        num_actions=num_actions, num_atoms=num_atoms, dueling=dueling,
        noisy=noisy, dtype=jnp.bfloat16 if half_precision else jnp.float32)
    self.optimizer = optimizers.create_scaling_optimizer(
        learning_rate=learning_rate,
        encoder_learning_rate=encoder_learning_rate)
    self._config = learner.LearnerConfig(
        network=self.network_def,
        optimizer=self.optimizer,
        num_atoms=num_atoms,
        v_max=v_max,
        stack_size=stack_size,
        jumps=jumps,
        spr_weight=spr_weight,
        target_update_tau=target_update_tau,
        double_dqn=double_dqn,
        data_augmentation=data_augmentation,
        prioritized=self._prioritized,
        noisy=noisy,
        legacy_nstep=legacy_nstep,
        legacy_spr_mask=legacy_spr_mask)
    # The legacy SPR mask also reads d_{t+K}, one slot past the K steps.
    horizon = max(max_update_horizon, jumps + 1 if legacy_spr_mask else jumps)
    self._replay = replay_lib.SubsequenceReplayBuffer(
        horizon=horizon,
        observation_shape=self.observation_shape,
        stack_size=stack_size,
        replay_capacity=replay_capacity,
        prioritized=self._prioritized)
    self._prefetcher = prefetch.BatchPrefetcher(
        self._replay, batches_to_group, batch_size, prefetch_batches)

    # One seed: split into named streams (network init, learner, acting,
    # replay sampling). Nothing reads the clock.
    # Jitted once: eager init compiles each of ~90 small ops separately.
    self._jit_init = jax.jit(self.network_def.init)
    self._jit_reset = jax.jit(self._reset_state)
    key = jax.random.PRNGKey(self._seed)
    key_init, key_learn, self._rng, key_reset = jax.random.split(key, 4)
    self._reset_rng = key_reset
    self._np_rng = np.random.default_rng(self._seed)
    params = self._init_params(key_init)
    self._redo = redo.Recycler(redo_every, redo_tau, redo_layers,
                               redo_batch_size, self._seed)
    # Fails now, not at the first recycling, on a network without the layers.
    redo.recyclable_layers(self.network_def, params, self._redo.groups)
    self._pruner = pruning.Pruner(target_sparsity, pruning_start,
                                  pruning_end, pruning_frequency,
                                  prune_layers, pruning_total_steps,
                                  pruning_on_reset)
    self._pruner.warn_about_resets(reset_every, no_resets_after)
    self._state = learner.initial_state(
        params, self.optimizer, key_learn,
        masks=(pruning.initial_masks(params, self._pruner.layers)
               if self._pruner.enabled else None))

    self.training_steps = 0  # agent (environment) steps, Dopamine's name
    self.gradient_steps = 0
    self.cycle_start = 0  # gradient step of the last reset
    self.num_resets = 0
    self.state = np.zeros(self.observation_shape + (stack_size,), np.uint8)
    self._observation = None
    self._last_observation = None
    self.action = None
    self._q_taken = 0.0  # Q(s, a) of the last action chosen
    # Plasticity diagnostics every `diagnostics_every` gradient steps (0: off)
    # and around every reset; see plasticity.py.
    self._plasticity = plasticity.PlasticityMonitor(
        self.network_def, self._config.support, stack_size, diagnostics_every,
        diagnostics_batch_size, self._seed)
    logging.info('Created BBFAgent: %d parameters, %d gradient steps per '
                 'agent step, replay horizon %d, seed %d.',
                 networks.count_parameters(params), num_updates, horizon,
                 self._seed)

  # Parameters, resets and schedules -----------------------------------

  def _init_params(self, key):
    dummy = jnp.zeros((1,) + self.observation_shape + (self.stack_size,))
    return self._jit_init(key, dummy)

  @property
  def seed(self):
    return self._seed

  @property
  def online_params(self):
    return self._state.online_params

  @property
  def target_network_params(self):
    return self._state.target_params

  @property
  def optimizer_state(self):
    return self._state.opt_state

  def current_update_horizon(self):
    return schedules.update_horizon_at(
        self.gradient_steps - self.cycle_start, self.max_update_horizon,
        self.update_horizon, self.cycle_steps)

  def current_gamma(self):
    return schedules.gamma_at(self.gradient_steps - self.cycle_start,
                              self.min_gamma, self.gamma, self.cycle_steps)

  def _reset_state(self, state, key_online, key_target):
    """Pure: the TrainState after a shrink-and-perturb reset."""
    def reset(params, key):
      params = resets.shrink_perturb(
          params, self._init_params(key), self.shrink_perturb_keys,
          self.shrink_factor, self.perturb_factor)
      if masks is not None:  # 'keep': a reset keeps the pruned topology
        params = pruning.apply_masks(params, masks)
      return params
    masks = self._pruner.masks_after_reset(state.masks)
    return state._replace(
        masks=masks,
        online_params=reset(state.online_params, key_online),
        target_params=reset(state.target_params, key_target),
        opt_state=resets.reset_optimizer_state(
            state.opt_state, self.shrink_perturb_keys,
            legacy=self.legacy_optimizer_reset))

  def reset_networks(self):
    """Shrink-and-perturb reset of online and target networks (BBF 3).

    Each network gets its own fresh draw; the n / gamma cycle restarts.
    """
    self._reset_rng, key_online, key_target = jax.random.split(
        self._reset_rng, 3)
    self._state = self._jit_reset(self._state, key_online, key_target)
    self.cycle_start = self.gradient_steps
    self.num_resets += 1
    self._pruner.reset()
    logging.info('Reset %d at agent step %d (gradient step %d).',
                 self.num_resets, self.training_steps, self.gradient_steps)

  # Acting ---------------------------------------------------------------

  def _select_action(self):
    if self.eval_mode:
      epsilon = self.epsilon_eval
    else:
      epsilon = float(self.epsilon_fn(self.epsilon_decay_period,
                                      self.training_steps,
                                      self.min_replay_history,
                                      self.epsilon_train))
    params = (self._state.target_params if self.target_action_selection
              else self._state.online_params)
    self._rng, action, q = learner.select_action(
        self.network_def, params, self.state[None], self._rng,
        jnp.float32(epsilon), self.num_actions,
        self.noisy and not self.eval_mode, support=self._config.support)
    self.action = int(action)
    self._q_taken = float(q)  # for the over-estimation diagnostic
    return self.action

  def eval_actions(self, states):
    """Evaluation actions for (B, h, w, S) uint8 states in one call."""
    params = (self._state.target_params if self.target_action_selection
              else self._state.online_params)
    self._rng, actions = learner.select_actions(
        self.network_def, params, states, self._rng,
        jnp.float32(self.epsilon_eval), self.num_actions)
    return np.asarray(actions)

  def _record_observation(self, observation):
    self._observation = np.reshape(observation, self.observation_shape)
    self.state = np.roll(self.state, -1, axis=-1)
    self.state[..., -1] = self._observation

  def begin_episode(self, observation):
    self.state.fill(0)
    self._record_observation(observation)
    if not self.eval_mode:
      self._train_step()
    return self._select_action()

  def step(self, reward, observation):
    self._last_observation = self._observation
    self._record_observation(observation)
    if not self.eval_mode:
      self._replay.add(self._last_observation, self.action, reward, False,
                       False)
      self._plasticity.record(self._q_taken, reward)
      self._train_step()
    return self._select_action()

  def end_episode(self, reward, terminal=True):
    if not self.eval_mode:
      self._replay.add(self._observation, self.action, reward, terminal, True)
      self._plasticity.record(self._q_taken, reward, terminal,
                              episode_end=True, gamma=self.current_gamma())

  # Learning -------------------------------------------------------------

  def _sample_batch(self):
    """(indices (G*B,), learner.Batch) of the next call (prefetch.py)."""
    return self._prefetcher.take(self._np_rng)

  def _run_call(self, batch, n, gamma):
    """One jitted call of batches_to_group gradient steps.

    Returns its metrics and the priorities, read back to the host.
    """
    self._state, metrics, priorities = learner.train(
        self._state, batch, jnp.int32(n), jnp.float32(gamma),
        config=self._config)
    # The call runs asynchronously: draw the next batch meanwhile (if on).
    self._prefetcher.prepare(self._np_rng)
    return metrics, np.asarray(priorities)  # the call's one host sync

  def _train_step(self):
    """Runs this agent step's gradient steps, then any scheduled reset."""
    if (self._replay.add_count > self.min_replay_history and
        self.training_steps % self.update_period == 0):
      for _ in range(self.num_updates_per_step // self.batches_to_group):
        n = self.current_update_horizon()
        gamma = self.current_gamma()
        indices, batch = self._sample_batch()
        metrics, priorities = self._run_call(batch, n, gamma)
        numerics.check_finite(metrics, self.gradient_steps, self.training_steps,
                              self.debug_dir, indices, batch, n, gamma)
        self._replay.update_priorities(indices, priorities.reshape(-1))
        previous = self.gradient_steps
        self.gradient_steps += self.batches_to_group
        if self.gradient_steps // self.log_every > previous // self.log_every:
          self._log(metrics, n, gamma)
        if self._plasticity.due(previous, self.gradient_steps):
          self._measure_plasticity()
        if self._redo.due(previous, self.gradient_steps):
          self._recycle()
        sparsity = self._pruner.due(previous, self.gradient_steps,
                                    self.training_steps)
        if sparsity is not None:
          self._prune(sparsity)
    self.training_steps += 1
    if schedules.is_reset_step(self.training_steps, self.reset_every,
                               self.no_resets_after):
      reset = self._plasticity.every > 0 and self.gradient_steps > 0
      if reset:
        self._measure_plasticity()
      self.reset_networks()
      if reset:
        self._measure_plasticity({'Plasticity/Reset': 1.0})

  def _recycle(self):
    """ReDo on a replay batch (redo.py); logs the recycled fractions."""
    states = self._redo.sample_states(self._replay, functools.partial(
        plasticity.replay_states, stack_size=self.stack_size))
    fresh = self._init_params(self._redo.fresh_key())
    online, opt_state, fractions = redo.recycle_dormant(
        self.network_def, self._state.online_params, fresh,
        self._state.opt_state, states, jnp.float32(self._redo.tau),
        self._redo.groups)
    if self._state.masks is not None:
      online = pruning.apply_masks(online, self._state.masks)
    self._state = self._state._replace(online_params=online,
                                       opt_state=opt_state)
    self._write_scalars({f'Plasticity/Recycled/{k}': float(v)
                         for k, v in fractions.items()}, self.gradient_steps)

  def _prune(self, sparsity):
    """Magnitude pruning to `sparsity` (pruning.py); logs every layer's."""
    counts = pruning.num_pruned(self._state.masks, sparsity)
    self._state = pruning.prune(self._state, counts)
    self._pruner.pruned(sparsity)
    self._write_scalars({f'Plasticity/Sparsity/{k}': v for k, v in
                         pruning.sparsities(self._state.masks).items()},
                        self.gradient_steps)

  def _measure_plasticity(self, extra=None):
    values = self._plasticity.measure(self._state.online_params, self._replay)
    self._write_scalars(dict(values, **(extra or {})), self.gradient_steps)

  def _log(self, metrics, n, gamma):
    values = {k: float(np.mean(v)) for k, v in metrics.items()
              if not k.startswith('Finite')}
    values.update(UpdateHorizon=n, Gamma=gamma, NumResets=self.num_resets)
    # Plasticity/GradNorm/* keep their group; the rest are Agent/*.
    self._write_scalars({k if k.startswith('Plasticity/') else 'Agent/' + k: v
                         for k, v in values.items()}, self.gradient_steps)

  def _write_scalars(self, values, step):
    if self.summary_writer is not None:
      with self.summary_writer.as_default():
        for name, value in values.items():
          tf.summary.scalar(name, value, step=step)
    if hasattr(self, 'collector_dispatcher'):
      self.collector_dispatcher.write(
          [statistics_instance.StatisticsInstance(k, v, step)
           for k, v in values.items()],
          collector_allowlist=self._collector_allowlist)
