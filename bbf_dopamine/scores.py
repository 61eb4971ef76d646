# coding=utf-8
"""Reference scores shipped with the package, and normalisation.

Everything here reads `bbf_dopamine/data/` (see `data/SOURCES.md` for where
each file comes from), so an installed package needs no checkout:
  * `atari_100k_human_random.csv`: the human and random scores of the 26
    Atari 100k games (the same numbers as Dopamine's
    `dopamine/labs/atari_100k/normalization_utils.py`).
  * `published/<name>.csv`: the official BBF release's per-seed final scores
    (`RR8_BBF`, `RR2_BBF`, ablations), 55 games, lower-case game names.
  * `peers/<name>.json`: per-run final scores of SPR, DrQ(eps), EfficientZero
    and IRIS, as published with the rliable paper.
  * `minatar_random.csv`: the uniform-random policy's mean and std of the
    episode return on MinAtar's five games, measured by
    `scripts/minatar_random_scores.py` under the protocol of
    `gin_configs/minatar/` (MinAtar has no human reference).

Two domains, told apart by the game name:
  * Atari 100k games (`Pong`, any spelling): human-normalised score
    `(score - random) / (human - random)`.
  * MinAtar games, named `minatar-<game>` (`minatar-breakout`; the game part
    is the MinAtar name): random-normalised score
    `(score - random mean) / random std`, i.e. how many standard deviations
    of random play's episode returns the score lies above random play's
    mean. Random play scores 0; the scale is the game's own spread of returns
    under random play, so games with different return scales aggregate.

Game names are normalised to the camel-case spelling used by the ALE and by
Dopamine's gin files (`MsPacman`, `UpNDown`, `KungFuMaster`).
"""

import csv
import functools
import importlib.resources
import json
import re
from typing import Dict, List, Tuple

import numpy as np

# The 26 games of the Atari 100k benchmark (Kaiser et al. 2020), in the order
# of the shipped CSV.
ATARI_100K_GAMES: Tuple[str, ...] = (
    'Alien', 'Amidar', 'Assault', 'Asterix', 'BankHeist', 'BattleZone',
    'Boxing', 'Breakout', 'ChopperCommand', 'CrazyClimber', 'DemonAttack',
    'Freeway', 'Frostbite', 'Gopher', 'Hero', 'Jamesbond', 'Kangaroo',
    'Krull', 'KungFuMaster', 'MsPacman', 'Pong', 'PrivateEye', 'Qbert',
    'RoadRunner', 'Seaquest', 'UpNDown',
)

# MinAtar's games (Young and Tian 2019), as named by the `minatar` package.
MINATAR_GAMES: Tuple[str, ...] = ('asterix', 'breakout', 'freeway',
                                  'seaquest', 'space_invaders')
MINATAR_PREFIX = 'minatar-'  # Game ids: 'minatar-breakout'.

# Peer agents with per-run data in `data/peers/` (file stem = name).
PEER_NAMES: Tuple[str, ...] = ('DrQ_eps', 'EfficientZero', 'IRIS', 'SPR')

# Lower-case, separator-free key -> camel-case name. The published BBF files
# already use such keys (`mspacman`); everything else is reduced to one.
_GAME_KEYS: Dict[str, str] = {g.lower(): g for g in ATARI_100K_GAMES}


def _data_dir():
  """The shipped data folder as an importlib.resources Traversable."""
  return importlib.resources.files('bbf_dopamine') / 'data'


def _game_key(name: str) -> str:
  """Reduces an ALE id or any spelling of a game to a lookup key.

  `ALE/MsPacman-v5`, `MsPacmanNoFrameskip-v4`, `ms_pacman`, `Ms. Pac-Man` all
  become `mspacman`.
  """
  key = name.strip()
  key = re.sub(r'^ALE/', '', key, flags=re.IGNORECASE)
  key = re.sub(r'-v\d+$', '', key)
  key = re.sub(r'(NoFrameskip|Deterministic)$', '', key)
  return re.sub(r'[^a-z0-9]', '', key.lower())


def canonical_game(name: str) -> str:
  """The camel-case Atari 100k name of `name` (any spelling).

  Args:
    name: a game name such as `mspacman`, `ms_pacman`, `Ms Pacman`,
      `MsPacman` or `ALE/MsPacman-v5`.

  Returns:
    The name as spelled in `ATARI_100K_GAMES`, e.g. `MsPacman`.

  Raises:
    ValueError: `name` is not one of the 26 Atari 100k games.
  """
  game = _GAME_KEYS.get(_game_key(str(name)))
  if game is None:
    raise ValueError(
        f'Unknown Atari 100k game {name!r}; known games: '
        f'{", ".join(ATARI_100K_GAMES)}.')
  return game


def is_atari_100k_game(name: str) -> bool:
  """True if `name` (any spelling) is one of the 26 Atari 100k games."""
  return _game_key(str(name)) in _GAME_KEYS


@functools.cache
def reference_scores() -> Dict[str, Tuple[float, float]]:
  """Maps each of the 26 games to its (random, human) score."""
  text = (_data_dir() / 'atari_100k_human_random.csv').read_text()
  return {
      canonical_game(row['game']): (float(row['random']), float(row['human']))
      for row in csv.DictReader(text.splitlines())
  }


def human_normalized(game: str, score):
  """(score - random) / (human - random) for `game`.

  Args:
    game: any spelling of an Atari 100k game.
    score: a raw return, or an array of them.

  Returns:
    A float for a scalar `score`, else an array of the shape of `score`.
  """
  random_score, human_score = reference_scores()[canonical_game(game)]
  normalized = (np.asarray(score, dtype=np.float64) - random_score) / (
      human_score - random_score)
  return float(normalized) if normalized.ndim == 0 else normalized


def minatar_game(name: str) -> str:
  """The game id `minatar-<game>` of `breakout`, `minatar-breakout`, ...

  Raises:
    ValueError: not one of MinAtar's five games.
  """
  key = str(name).strip().lower().replace(' ', '_')
  key = key[len(MINATAR_PREFIX):] if key.startswith(MINATAR_PREFIX) else key
  key = key.replace('-', '_')
  if key not in MINATAR_GAMES:
    raise ValueError(f'Unknown MinAtar game {name!r}; MinAtar has '
                     f'{", ".join(MINATAR_GAMES)}.')
  return MINATAR_PREFIX + key


def minatar_env_name(game: str) -> str:
  """`minatar-breakout` -> `breakout`, the `minatar` package's name."""
  return minatar_game(game)[len(MINATAR_PREFIX):]


def is_minatar_game(name: str) -> bool:
  """True for a MinAtar game id `minatar-<game>` (any case)."""
  name = str(name).strip().lower()
  if not name.startswith(MINATAR_PREFIX):
    return False
  try:
    minatar_game(name)
  except ValueError:
    return False
  return True


def domain(game: str) -> str:
  """'atari' or 'minatar' for a game id; ValueError for anything else."""
  if is_minatar_game(game):
    return 'minatar'
  if is_atari_100k_game(game):
    return 'atari'
  raise ValueError(
      f'Unknown game {game!r}: neither one of the 26 Atari 100k games '
      f'({", ".join(ATARI_100K_GAMES)}) nor a MinAtar game '
      f'({", ".join(MINATAR_PREFIX + g for g in MINATAR_GAMES)}).')


def canonical_any(game: str) -> str:
  """The canonical id of an Atari 100k or MinAtar (`minatar-*`) game."""
  return minatar_game(game) if domain(game) == 'minatar' else canonical_game(
      game)


@functools.cache
def minatar_random_scores() -> Dict[str, Tuple[float, float]]:
  """Maps each `minatar-<game>` id to random play's (mean, std) return."""
  text = (_data_dir() / 'minatar_random.csv').read_text()
  return {minatar_game(row['game']): (float(row['mean']), float(row['std']))
          for row in csv.DictReader(text.splitlines())}


def random_normalized(game: str, score):
  """(score - random mean) / random std for a MinAtar game (module doc)."""
  mean, std = minatar_random_scores()[minatar_game(game)]
  normalized = (np.asarray(score, dtype=np.float64) - mean) / std
  return float(normalized) if normalized.ndim == 0 else normalized


def normalized(game: str, score):
  """Human-normalised (Atari) or random-normalised (MinAtar) score."""
  if domain(game) == 'minatar':
    return random_normalized(game, score)
  return human_normalized(game, score)


NORMALIZATION_TEXT = {
    'atari': ('human-normalised score (score - random) / (human - random), '
              'with the random and human scores of the 26 Atari 100k games '
              '(data/atari_100k_human_random.csv).'),
    'minatar': ('random-normalised score (score - random mean) / random std: '
                'standard deviations of random play\'s episode returns above '
                'random play\'s mean (data/minatar_random.csv, 2,000 random '
                'episodes per game under the protocol of gin_configs/minatar/'
                '). 0 is random play; MinAtar has no human reference, so the '
                'optimality gap\'s threshold 1 means one random-play standard '
                'deviation, not human level.'),
}


def normalization_name(game_domain: str) -> str:
  return {'atari': 'human-normalised',
          'minatar': 'random-normalised'}[game_domain]


def published_names() -> List[str]:
  """Names of the shipped published BBF score files (`RR8_BBF`, ...)."""
  return sorted(entry.name[:-len('.csv')]
                for entry in (_data_dir() / 'published').iterdir()
                if entry.name.endswith('.csv'))


@functools.cache
def _published(name: str) -> Dict[str, Tuple[float, ...]]:
  if name not in published_names():
    raise ValueError(f'Unknown published score file {name!r}; known: '
                     f'{", ".join(published_names())}.')
  text = (_data_dir() / 'published' / f'{name}.csv').read_text()
  per_game: Dict[str, List[float]] = {g: [] for g in ATARI_100K_GAMES}
  # Columns are named in the header but ordered differently across files
  # (the sticky-action sweeps put `game` and `seed` last), hence DictReader.
  # Rows stay in file order: "the first N runs" of a game means these.
  for row in csv.DictReader(text.splitlines()):
    if is_atari_100k_game(row['game']):  # The files cover 55 games.
      per_game[canonical_game(row['game'])].append(
          float(row['GameScoreAverage']))
  return {g: tuple(s) for g, s in per_game.items()}


def published_bbf(name: str) -> Dict[str, List[float]]:
  """Per-seed final scores of a published BBF variant on the 26 games.

  Args:
    name: a file stem from `published_names()`, e.g. `RR8_BBF`,
      `RR2_BBF-Resets`.

  Returns:
    Canonical game name -> list of raw final scores (each the mean return of
    one seed's final 100-episode evaluation), in file order.

  Raises:
    ValueError: unknown `name`.
  """
  return {g: list(s) for g, s in _published(name).items()}


def peer_names() -> List[str]:
  """Names of the shipped peer-agent score files."""
  return list(PEER_NAMES)


@functools.cache
def _peer(name: str) -> Dict[str, Tuple[float, ...]]:
  if name not in PEER_NAMES:
    raise ValueError(
        f'Unknown peer agent {name!r}; known: {", ".join(PEER_NAMES)}.')
  raw = json.loads((_data_dir() / 'peers' / f'{name}.json').read_text())
  per_game = {}
  for game, values in raw.items():
    values = values if isinstance(values, list) else [values]
    per_game[canonical_game(game)] = tuple(float(v) for v in values)
  return per_game


def peer_scores(name: str) -> Dict[str, List[float]]:
  """Per-run final raw scores of a peer agent on the 26 games.

  Args:
    name: one of `peer_names()`: `SPR`, `DrQ_eps`, `EfficientZero` (one
      number per game, the paper's table) or `IRIS`.

  Returns:
    Canonical game name -> list of raw final scores, one per run.

  Raises:
    ValueError: unknown `name`.
  """
  return {g: list(s) for g, s in _peer(name).items()}


def reference_agent_scores(name: str) -> Dict[str, List[float]]:
  """`published_bbf(name)` or `peer_scores(name)`, whichever knows `name`."""
  if name in PEER_NAMES:
    return peer_scores(name)
  if name in published_names():
    return published_bbf(name)
  raise ValueError(
      f'Unknown reference agent {name!r}; known published BBF files: '
      f'{", ".join(published_names())}; peers: {", ".join(PEER_NAMES)}.')
