# coding=utf-8
"""Everything we do about Dopamine 4.1.2 being broken on current JAX.

The fixes themselves are install steps (`scripts/install.sh`, see setup.py):
Dopamine's train binary imports `baselines` and tensorflow-probability's JAX
substrate before any of our code runs, so nothing at run time could repair
them. This module checks that the install worked and says how to fix it.
"""

FIX = 'Run `bash scripts/install.sh` from the bbf-dopamine checkout.'


def check_installation():
  """Imports what Dopamine's train binary imports; raises a clear error."""
  try:
    import baselines.common.atari_wrappers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError(
        'Dopamine 4.1.2 imports `baselines` without declaring it; install it '
        f'with `pip install --no-deps baselines==0.1.5`. {FIX}') from e
  try:
    from tensorflow_probability.substrates import jax as _  # pylint: disable=g-import-not-at-top
  except (AttributeError, ImportError) as e:
    raise ImportError(
        'tensorflow-probability does not import on this JAX (the 0.25.0 '
        'release needs JAX < 0.5); install `pip install --no-deps '
        f'--force-reinstall tfp-nightly==0.26.0.dev20261027`. {FIX}') from e
  from dopamine.discrete_domains import run_experiment  # pylint: disable=g-import-not-at-top,unused-import
  return True
