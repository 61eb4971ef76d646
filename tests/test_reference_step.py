# coding=utf-8
"""The optimised training step equals a plain, unoptimised reference step.

`learner.train` batches every network call, builds states on the device,
unrolls the minibatch group and donates its buffers. The reference below does
the same mathematics the slow, obvious way: one example at a time, frame
stacks and n-step returns from Python loops, the SPR rollout as a loop of
single-example transition calls, Dopamine's own C51 projection, then one
`jax.grad` and optax update per minibatch. Same inputs, same parameters,
float32: losses and updated parameters must agree.
"""

from dopamine.jax.agents.rainbow import rainbow_agent
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bbf_dopamine import learner
from bbf_dopamine import networks

STACK, JUMPS, HORIZON, BATCH, GROUP, ACTIONS = 4, 3, 5, 3, 2, 3
WINDOW = STACK - 1 + HORIZON + 1
N, GAMMA, SPR_WEIGHT, TAU = 3, 0.9, 2.0, 0.1


def _batch():
  rng = np.random.default_rng(7)
  ends = np.zeros((GROUP, BATCH, WINDOW), np.uint8)
  dones = np.zeros((GROUP, BATCH, HORIZON), np.float32)
  ends[0, 1, 2] = 1  # stack of s_t starts inside the window
  dones[1, 0, 1] = 1  # terminal after a_{t+1}: SPR steps 2, 3 masked
  ends[1, 0, STACK - 1 + 1] = 1
  return learner.Batch(
      frames=rng.integers(0, 256, (GROUP, BATCH, WINDOW, 84, 84), np.uint8),
      episode_ends=ends,
      actions=rng.integers(0, ACTIONS, (GROUP, BATCH, HORIZON)).astype(
          np.int32),
      rewards=rng.normal(size=(GROUP, BATCH, HORIZON)).astype(np.float32),
      terminals=dones,
      probabilities=rng.uniform(0.01, 0.2, (GROUP, BATCH)).astype(np.float32))


def _stack(frames, ends, p):
  out = np.zeros((84, 84, STACK), np.float32)
  for j in range(STACK):
    if all(ends[m] == 0 for m in range(p + j, p + STACK - 1)):
      out[..., j] = frames[p + j]
  return out / 255.0


def _reference_step(net, optimizer, online, target, opt_state, mb):
  support = jnp.linspace(-10.0, 10.0, 51)
  encode = lambda p, x: net.apply(p, x[None], method=net.encode)
  q = lambda p, latent: net.apply(p, latent, method=net.q_logits)[0]
  samples = []
  for b in range(BATCH):
    frames, ends = mb.frames[b], mb.episode_ends[b]
    rewards, dones = mb.rewards[b], mb.terminals[b]
    ret, alive = 0.0, 1.0
    for k in range(N):
      ret += GAMMA ** k * rewards[k] * alive
      alive *= 1.0 - dones[k]
    boot = _stack(frames, ends, N)
    next_q = (jax.nn.softmax(q(online, encode(online, boot))) * support).sum(-1)
    probs = jax.nn.softmax(q(target, encode(target, boot))[int(np.argmax(
        next_q))])
    projected = rainbow_agent.project_distribution(
        ret + GAMMA ** N * alive * support, probs, support)
    spr_targets = []
    for k in range(1, JUMPS + 1):
      future = encode(target, _stack(frames, ends, k))
      spr_targets.append(net.apply(target, future, method=net.project)[0])
    # mask_k = prod_{j<k} (1 - d_{t+j}).
    mask = [float(np.prod(1.0 - dones[:k])) for k in range(1, JUMPS + 1)]
    samples.append((_stack(frames, ends, 0), projected, spr_targets, mask))
  weights = 1.0 / np.sqrt(mb.probabilities + 1e-10)
  weights = weights / weights.max()

  def loss_fn(params):
    total, dqn_losses, spr_losses = 0.0, [], []
    for b, (state, projected, spr_targets, mask) in enumerate(samples):
      latent = encode(params, state)
      logits = q(params, latent)[mb.actions[b, 0]]
      dqn = -jnp.sum(projected * jax.nn.log_softmax(logits))
      spr, z = 0.0, latent
      for k in range(JUMPS):
        z = net.apply(params, z, mb.actions[b, k:k + 1],
                      method=net.transition)
        pred = net.apply(params, net.apply(params, z, method=net.project),
                         method=net.predict)[0]
        tgt = spr_targets[k]
        cos = jnp.dot(pred, tgt) / (jnp.linalg.norm(pred) *
                                    jnp.linalg.norm(tgt))
        spr += mask[k] * (2.0 - 2.0 * cos) / JUMPS
      total += weights[b] * (dqn + SPR_WEIGHT * spr) / BATCH
      dqn_losses.append(dqn)
      spr_losses.append(spr)
    return total, (jnp.stack(dqn_losses), jnp.stack(spr_losses))

  (loss, (dqn, spr)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      online)
  updates, opt_state = optimizer.update(grads, opt_state, online)
  online = optax.apply_updates(online, updates)
  target = jax.tree_util.tree_map(lambda t, o: (1 - TAU) * t + TAU * o,
                                  target, online)
  return online, target, opt_state, (loss, dqn.mean(), spr.mean())


def test_optimised_step_equals_reference_step():
  net = networks.BBFNetwork(num_actions=ACTIONS, width_scale=0.25,
                            hidden_dim=16)
  online = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, STACK)))
  target = net.init(jax.random.PRNGKey(1), jnp.zeros((1, 84, 84, STACK)))
  optimizer = optax.adamw(1e-3, eps=1.5e-4, weight_decay=0.1)
  batch = _batch()
  copy = lambda tree: jax.tree_util.tree_map(np.array, tree)
  ref_online, ref_target = copy(online), copy(target)
  ref_opt = optimizer.init(ref_online)
  ref_metrics = []
  for g in range(GROUP):
    mb = jax.tree_util.tree_map(lambda x, g=g: x[g], batch)
    ref_online, ref_target, ref_opt, metrics = _reference_step(
        net, optimizer, ref_online, ref_target, ref_opt, mb)
    ref_metrics.append(metrics)

  config = learner.LearnerConfig(
      network=net, optimizer=optimizer, stack_size=STACK, jumps=JUMPS,
      spr_weight=SPR_WEIGHT, target_update_tau=TAU, data_augmentation=False)
  state = learner.TrainState(online, target, optimizer.init(online),
                             jax.random.PRNGKey(3))
  state, metrics, _ = learner.train(state, batch, jnp.int32(N),
                                    jnp.float32(GAMMA), config=config)
  for g in range(GROUP):
    for i, name in enumerate(('Loss', 'DQNLoss', 'SPRLoss')):
      np.testing.assert_allclose(metrics[name][g], ref_metrics[g][i],
                                 rtol=2e-4, atol=1e-6, err_msg=name)
  assert float(ref_metrics[1][2]) > 0.0
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-6)
  jax.tree_util.tree_map(close, state.online_params, ref_online)
  jax.tree_util.tree_map(close, state.target_params, ref_target)
