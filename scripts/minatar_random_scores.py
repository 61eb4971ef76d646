# coding=utf-8
r"""Measures the uniform-random policy's return on MinAtar's five games.

  python scripts/minatar_random_scores.py --episodes 1000 --seed 0 \
      > bbf_dopamine/data/minatar_random.csv

The protocol is the one of gin_configs/minatar/*.gin: MinAtar's sticky
actions (probability 0.1), difficulty ramping on, episodes cut at 27,000
agent steps, every episode from a fresh reset of one environment seeded once
with --seed (bbf_dopamine.minatar_env). Prints CSV: game, episodes, mean,
std, stderr, seed, minatar version. These are the random scores of
bbf_dopamine/scores.py's random-normalised MinAtar score.
"""

import argparse
import sys
from importlib import metadata

import numpy as np

from bbf_dopamine import minatar_env

MAX_STEPS = 27_000  # Atari100kRunner.max_steps_per_episode of the gin files.


def random_returns(game: str, episodes: int, seed: int) -> np.ndarray:
  """(episodes,) returns of uniform random actions."""
  env = minatar_env.MinAtarEnvironment(game, sticky_action_prob=0.1)
  env.seed(seed)
  rng = np.random.RandomState(seed)
  returns = np.zeros(episodes)
  for i in range(episodes):
    env.reset()
    for _ in range(MAX_STEPS):
      _, reward, terminal, _ = env.step(rng.randint(env.action_space.n))
      returns[i] += reward
      if terminal:
        break
  return returns


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--episodes', type=int, default=1000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--games', default=','.join(minatar_env.GAMES))
  args = parser.parse_args(argv)
  version = metadata.version('minatar')
  print('game,episodes,mean,std,stderr,seed,minatar_version')
  for game in args.games.split(','):
    r = random_returns(game, args.episodes, args.seed)
    print(f'{game},{len(r)},{r.mean():.4f},{r.std(ddof=1):.4f},'
          f'{r.std(ddof=1) / np.sqrt(len(r)):.4f},{args.seed},{version}')
    sys.stdout.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main())
