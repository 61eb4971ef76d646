# coding=utf-8
"""Tests of bbf_dopamine/scores.py: names, normalisation, shipped data."""

import ast
import csv
import fnmatch
import importlib.resources
import os

import numpy as np
import pytest
import scipy.stats
import setuptools

from bbf_dopamine import scores

DATA = importlib.resources.files('bbf_dopamine') / 'data'


def test_games_match_shipped_csv():
  rows = list(csv.DictReader(
      (DATA / 'atari_100k_human_random.csv').read_text().splitlines()))
  assert tuple(r['game'] for r in rows) == scores.ATARI_100K_GAMES
  assert len(scores.ATARI_100K_GAMES) == 26
  assert set(scores.reference_scores()) == set(scores.ATARI_100K_GAMES)


@pytest.mark.parametrize('name,expected', [
    ('mspacman', 'MsPacman'), ('ms_pacman', 'MsPacman'),
    ('MsPacman', 'MsPacman'), ('Ms Pacman', 'MsPacman'),
    ('Ms. Pac-Man', 'MsPacman'), ('ALE/MsPacman-v5', 'MsPacman'),
    ('MsPacmanNoFrameskip-v4', 'MsPacman'), ('up_n_down', 'UpNDown'),
    ('kung_fu_master', 'KungFuMaster'), ('James Bond', 'Jamesbond'),
    ('private_eye', 'PrivateEye'), ('road runner', 'RoadRunner'),
    ('PONG', 'Pong'), ('battle_zone', 'BattleZone'),
])
def test_canonical_game(name, expected):
  assert scores.canonical_game(name) == expected
  assert scores.is_atari_100k_game(name)


def test_unknown_game_names_it_and_lists_known():
  with pytest.raises(ValueError) as error:
    scores.canonical_game('Montezuma Revenge')
  message = str(error.value)
  assert "'Montezuma Revenge'" in message
  assert 'MsPacman' in message and 'UpNDown' in message
  assert not scores.is_atari_100k_game('SpaceInvaders')


def test_human_normalized_by_hand():
  # Pong: random -20.7, human 14.6 (atari_100k_human_random.csv).
  assert scores.human_normalized('Pong', 14.6) == pytest.approx(1.0)
  assert scores.human_normalized('pong', -20.7) == pytest.approx(0.0)
  assert scores.human_normalized('Pong', -3.05) == pytest.approx(0.5)
  # Alien: random 227.8, human 7127.7.
  assert scores.human_normalized('Alien', 1000.0) == pytest.approx(
      (1000.0 - 227.8) / (7127.7 - 227.8))
  normalized = scores.human_normalized('Pong', np.array([[14.6, -20.7]]))
  assert normalized.shape == (1, 2)
  np.testing.assert_allclose(normalized, [[1.0, 0.0]], atol=1e-12)
  assert isinstance(scores.human_normalized('Pong', 0), float)


def test_published_names():
  names = scores.published_names()
  for name in ('RR8_BBF', 'RR2_BBF', 'RR2_BBF-Resets', 'RR8_BBF+gamma=0.99',
               'RR2_BBF+sticky_100k'):
    assert name in names
  assert len(names) == 25
  with pytest.raises(ValueError, match='RR8_BBF'):
    scores.published_bbf('RR4_BBF')


def test_published_bbf_is_per_seed_on_26_games():
  rr8 = scores.published_bbf('RR8_BBF')
  assert tuple(rr8) == scores.ATARI_100K_GAMES
  counts = [len(v) for v in rr8.values()]
  # published_scores/README.md: RR8_BBF has 52-60 runs per game.
  assert (min(counts), max(counts)) == (52, 60)
  # The first Alien row of RR8_BBF.csv: seed 11623, GameScoreAverage 1032.5.
  assert rr8['Alien'][0] == 1032.5
  # A file whose columns come in another order reads the same way.
  sticky = scores.published_bbf('RR2_BBF+sticky_100k')
  assert tuple(sticky) == scores.ATARI_100K_GAMES
  assert {len(v) for v in sticky.values()} == {18}


def test_published_normalized_column_matches_our_normalisation():
  text = (DATA / 'published' / 'RR8_BBF.csv').read_text().splitlines()
  rows = [r for r in csv.DictReader(text)
          if scores.is_atari_100k_game(r['game'])]
  ours = [scores.human_normalized(r['game'], float(r['GameScoreAverage']))
          for r in rows]
  np.testing.assert_allclose(
      ours, [float(r['GameScoreNormalized']) for r in rows], atol=1e-5)


# Expected numbers: the aggregates table of
# /work/shared/reference/published_scores/README.md (copied into
# bbf_dopamine/data/SOURCES.md): human-normalised over the 26 games, per-game
# means for mean and median, IQM = 25% trimmed mean of all runs x games,
# first N runs of each game where N is the smallest count.
@pytest.mark.parametrize('name,runs,mean,median,iqm', [
    ('RR8_BBF', 52, 2.236, 0.879, 1.033),
    ('RR8_BBF-Resets', 15, 0.739, 0.447, 0.398),
    ('RR8_BBF+sticky', 44, 2.120, 0.855, 1.003),
    ('RR2_BBF', 14, 2.175, 0.755, 0.940),
    ('RR2_BBF-WD', 28, 2.163, 0.783, 0.911),
    ('RR2_BBF+n=10', 21, 0.887, 0.473, 0.541),
])
def test_published_aggregates_match_readme(name, runs, mean, median, iqm):
  per_game = scores.published_bbf(name)
  n = min(len(v) for v in per_game.values())
  assert n == runs
  matrix = np.array([scores.human_normalized(g, per_game[g][:n])
                     for g in scores.ATARI_100K_GAMES]).T  # (runs, 26)
  game_means = matrix.mean(axis=0)  # (26,)
  assert np.mean(game_means) == pytest.approx(mean, abs=6e-4)
  assert np.median(game_means) == pytest.approx(median, abs=6e-4)
  assert scipy.stats.trim_mean(matrix, 0.25, axis=None) == pytest.approx(
      iqm, abs=6e-4)


def test_peer_scores():
  assert scores.peer_names() == ['DrQ_eps', 'EfficientZero', 'IRIS', 'SPR']
  expected_runs = {'SPR': 100, 'DrQ_eps': 100, 'EfficientZero': 1,
                   'IRIS': 5}
  for name, runs in expected_runs.items():
    per_game = scores.peer_scores(name)
    assert set(per_game) == set(scores.ATARI_100K_GAMES)
    assert {len(v) for v in per_game.values()} == {runs}
  # peer_scores/README.md: SPR mean 0.616, median 0.396; EfficientZero
  # mean 1.943, median 1.090 (per-game means of normalised scores).
  for name, mean, median in (('SPR', 0.616, 0.396),
                             ('EfficientZero', 1.943, 1.090)):
    per_game = scores.peer_scores(name)
    game_means = [np.mean(scores.human_normalized(g, v))
                  for g, v in per_game.items()]
    assert np.mean(game_means) == pytest.approx(mean, abs=6e-4)
    assert np.median(game_means) == pytest.approx(median, abs=6e-4)
  with pytest.raises(ValueError, match='SPR'):
    scores.peer_scores('DER')
  assert scores.reference_agent_scores('IRIS') == scores.peer_scores('IRIS')
  assert (scores.reference_agent_scores('RR2_BBF') ==
          scores.published_bbf('RR2_BBF'))


def test_every_data_file_is_installed_by_setup_py():
  """setup.py's package_data globs cover every file under data/."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, 'setup.py')) as f:
    tree = ast.parse(f.read())
  package_data = next(
      ast.literal_eval(k.value) for node in ast.walk(tree)
      if isinstance(node, ast.Call) for k in node.keywords
      if k.arg == 'package_data')
  globs = package_data['bbf_dopamine']
  package = os.path.join(root, 'bbf_dopamine')
  data_files = [os.path.relpath(os.path.join(d, f), package)
                for d, _, files in os.walk(os.path.join(package, 'data'))
                for f in files if f != '__pycache__']
  assert len(data_files) >= 1 + 25 + 4 + 1
  for path in data_files:
    assert any(fnmatch.fnmatch(path, g) and
               path.count('/') == g.count('/') for g in globs), path


def test_every_data_folder_is_a_package_in_setup_py():
  """setup.py's `packages` lists the data folders (they hold no __init__.py).

  setuptools warns that a folder with package data but absent from
  `packages` "would be ignored"; this evaluates setup.py's own `packages`
  expression in the repository root.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, 'setup.py')) as f:
    tree = ast.parse(f.read())
  expression = next(k.value for node in ast.walk(tree)
                    if isinstance(node, ast.Call) for k in node.keywords
                    if k.arg == 'packages')
  cwd = os.getcwd()
  os.chdir(root)
  try:
    packages = eval(compile(ast.Expression(expression), 'setup.py', 'eval'),  # pylint: disable=eval-used
                    {'setuptools': setuptools})
  finally:
    os.chdir(cwd)
  folders = {os.path.relpath(d, root).replace(os.sep, '.')
             for d, _, _ in os.walk(os.path.join(root, 'bbf_dopamine'))
             if '__pycache__' not in d}
  assert folders >= {'bbf_dopamine.data', 'bbf_dopamine.data.peers',
                     'bbf_dopamine.data.published'}
  assert set(packages) == folders
