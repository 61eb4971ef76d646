# coding=utf-8
"""BBF's annealing schedules (paper section 3, "Receding update horizon" and
"Increasing discount factor") and the reset calendar.

Plain Python on the host: their values enter the jitted step as traced
arguments, so changing them never recompiles.
"""



def update_horizon_at(step, max_update_horizon, update_horizon, cycle_steps):
  """n(t) = round(n_max * (n_min / n_max)^(t / T)) for t < T, then n_min.

  t counts gradient steps since the start or since the last reset; with BBF's
  values n(t) = round(10 * 0.3^(t / 10000)).
  """
  if cycle_steps <= 0 or step >= cycle_steps:
    return int(update_horizon)
  fraction = step / cycle_steps
  ratio = update_horizon / max_update_horizon
  return int(round(max_update_horizon * ratio ** fraction))


def gamma_at(step, min_gamma, gamma, cycle_steps):
  """1 - gamma(t) decays geometrically from 1 - min_gamma to 1 - gamma.

  gamma(t) = 1 - (1 - g_min) * ((1 - g) / (1 - g_min))^(t / T); with BBF's
  values gamma(t) = 1 - 0.03 * 0.1^(t / 10000).
  """
  if cycle_steps <= 0 or step >= cycle_steps:
    return float(gamma)
  fraction = step / cycle_steps
  return float(1.0 - (1.0 - min_gamma) *
               ((1.0 - gamma) / (1.0 - min_gamma)) ** fraction)


def is_reset_step(env_step, reset_every, no_resets_after):
  """True if a reset happens once `env_step` agent steps have been taken.

  A reset is made only if a whole interval still fits before
  `no_resets_after`: with 20k / 100k that is at 20k, 40k, 60k and 80k.
  `reset_every <= 0` never arises here: the agent rejects it up front.
  """
  return (env_step > 0 and env_step % reset_every == 0 and
          env_step + reset_every <= no_resets_after)


def validate_schedule(max_update_horizon, update_horizon, min_gamma, gamma):
  if not 1 <= update_horizon <= max_update_horizon:
    raise ValueError(
        f'Need 1 <= update_horizon ({update_horizon}) <= max_update_horizon '
        f'({max_update_horizon}).')
  if not 0.0 <= min_gamma <= gamma < 1.0:
    raise ValueError(
        f'Need 0 <= min_gamma ({min_gamma}) <= gamma ({gamma}) < 1.')
