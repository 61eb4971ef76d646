# coding=utf-8
"""Catch (Mnih et al., 2014, "Recurrent Models of Visual Attention") rendered
as 84x84 grey frames (or smaller, `size`): a tiny pixel environment for fast
learning tests.

A ball falls one row per step from a random column of the top row; the agent
moves a one-cell paddle on the bottom row (0 = left, 1 = stay, 2 = right).
Reward +1 for a catch and -1 for a miss, at the last step. The optimal return
is 1; a uniformly random policy scores about -0.5 on a 5-column board.
Same step/reset interface as Dopamine's AtariPreprocessing (gym-style
4-tuples, `game_over`), so Dopamine's Runner or a plain loop can drive it.
"""

import numpy as np

SIZE = 84


class Catch(object):
  """`rows` x `cols` board, each cell `cell` pixels (default: the rows fill
  the frame's height), drawn at `size`x`size`."""

  def __init__(self, rows=6, cols=5, cell=None, seed=0, size=SIZE):
    cell = size // rows if cell is None else cell
    assert rows * cell <= size and cols * cell <= size
    self.rows, self.cols, self.cell, self.size = rows, cols, cell, size
    self._rng = np.random.default_rng(seed)
    self.game_over = False
    self.num_actions = 3

  def _render(self):
    frame = np.zeros((self.size, self.size, 1), np.uint8)
    c = self.cell
    frame[self.ball_row * c:(self.ball_row + 1) * c,
          self.ball_col * c:(self.ball_col + 1) * c] = 255
    frame[(self.rows - 1) * c:self.rows * c,
          self.paddle * c:(self.paddle + 1) * c] = 128
    return frame

  def reset(self):
    self.ball_row = 0
    self.ball_col = int(self._rng.integers(self.cols))
    self.paddle = self.cols // 2
    self.game_over = False
    return self._render()

  def step(self, action):
    self.paddle = int(np.clip(self.paddle + int(action) - 1, 0, self.cols - 1))
    self.ball_row += 1
    reward = 0.0
    if self.ball_row == self.rows - 1:
      reward = 1.0 if self.paddle == self.ball_col else -1.0
      self.game_over = True
    return self._render(), reward, self.game_over, {}


def run_episode(agent, env):
  """Plays one episode with Dopamine's agent contract; returns the return."""
  observation = env.reset()
  action = agent.begin_episode(observation)
  total = 0.0
  while True:
    observation, reward, terminal, _ = env.step(action)
    total += reward
    if terminal:
      agent.end_episode(reward, True)
      return total
    action = agent.step(reward, observation)
