# coding=utf-8
"""The numerics guard: a run stops at the first non-finite loss, gradient or
parameter, before anything else is written, so no checkpoint ever holds
non-finite parameters. The offending batch is saved for debugging.
"""

import os

import numpy as np


def check_finite(metrics, gradient_steps, training_steps, debug_dir, indices,
                 batch, n, gamma):
  """Raises FloatingPointError if a Finite* flag of `metrics` is False.

  Args:
    metrics: the learner's metrics, {name: (G,)}, with FiniteLoss,
      FiniteGradients and FiniteParameters flags per gradient step.
    gradient_steps: gradient steps before this group.
    training_steps: the agent step.
    debug_dir: where to save the batch (the run's base_dir through the
      plugin), or None.
    indices, batch, n, gamma: the group's inputs, saved with the metrics.
  """
  for quantity in ('FiniteLoss', 'FiniteGradients', 'FiniteParameters'):
    flags = np.asarray(metrics[quantity])
    if flags.all():
      continue
    step = gradient_steps + int(np.argmin(flags)) + 1
    path = None
    if debug_dir:
      os.makedirs(debug_dir, exist_ok=True)
      path = os.path.join(debug_dir, f'nonfinite_step_{step}.npz')
      np.savez(path, indices=indices, n=n, gamma=gamma,
               **{k: np.asarray(v) for k, v in batch._asdict().items()},
               **{k: np.asarray(v) for k, v in metrics.items()})
    message = (f'Non-finite {quantity[len("Finite"):].lower()} at gradient '
               f'step {step} (agent step {training_steps}); training '
               'stopped before any checkpoint was written.')
    if path:
      message += f' The batch is saved in {path}.'
    raise FloatingPointError(message)
