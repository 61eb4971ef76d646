"""bbf-dopamine: the BBF agent as a gin-configurable plugin for Dopamine.

`pip install .` installs everything that can be declared. Two packages cannot
be declared here and are installed by `scripts/install.sh` (what the README's
commands and CI run):
  * baselines==0.1.5, imported by Dopamine 4.1.2's atari_lib at module level
    but not declared by it (google/dopamine#227); its own declared
    dependencies (gym[mujoco,robotics], mpi4py) do not install, so it must be
    installed with --no-deps.
  * tfp-nightly must overwrite the files of tensorflow-probability 0.25.0,
    which Dopamine requires and which fails to import on JAX >= 0.5
    (jax.interpreters.xla.pytype_aval_mappings is gone). Both distributions
    own the same `tensorflow_probability` package, so the nightly is forced
    over the release after everything else is installed.
"""

import setuptools

setuptools.setup(
    name='bbf-dopamine',
    version='0.1.0',
    description='BBF (Bigger, Better, Faster) as a plugin for Dopamine.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    # Namespace packages too, so the data folders (no __init__.py) count as
    # packages: setuptools warns about (and will drop) data folders that
    # are not listed as packages.
    packages=setuptools.find_namespace_packages(
        include=['bbf_dopamine', 'bbf_dopamine.*'],
        exclude=['*.__pycache__']),
    python_requires='>=3.10',
    install_requires=[
        # The Dopamine release this plugin is written and tested against; its
        # create_agent / Runner internals are what plugin.py wraps.
        'dopamine-rl==4.1.2',
        'jax>=0.6',
        'flax>=0.10',
        'optax>=0.2.4',
        'gin-config>=0.5',
        'numpy>=1.26',
        'absl-py',
        'tensorflow>=2.16',
        # Flax's and Dopamine's TensorBoard writers need it; TF 2.21 no longer
        # pulls it in.
        'tensorboard',
        # Atari ROMs ship inside ale-py >= 0.9.
        'ale-py>=0.9',
        'gymnasium>=1.0',
        'opencv-python',
        # MinAtar (Young and Tian, 2019): the CPU-scale testbed
        # (bbf_dopamine/minatar_env.py, gin_configs/minatar/).
        'minatar>=1.0.15',
        # Aggregate metrics and plots of the comparison report
        # (bbf_dopamine/analyze.py).
        'rliable==1.2.0',
        # rliable's dependency `arch` fails to import with pandas 3.
        'pandas<3',
        'matplotlib',
    ],
    # Reference scores used by bbf_dopamine/scores.py (see data/SOURCES.md).
    package_data={'bbf_dopamine': ['data/*.csv', 'data/*.md',
                                   'data/published/*.csv',
                                   'data/peers/*.json']},
    include_package_data=True,
    extras_require={
        # Ray: tests/test_sweep.py runs a sweep on a local Ray instance.
        # filelock: JAX locks the compilation cache that scripts/run_tests.py
        # shares between test processes with it (and refuses without it).
        'test': ['pytest>=8', 'ray[default]>=2.9', 'filelock>=3'],
        # `python -m bbf_dopamine.sweep --ray ...` (local sweeps need nothing).
        'sweep': ['ray[default]>=2.9'],
    },
)
