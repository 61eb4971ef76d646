# coding=utf-8
"""Records one evaluation episode of a run's checkpoint as a video.

    python -m bbf_dopamine.record --base_dir runs/demo --out pong.mp4
      [--checkpoint N] [--max_steps S] [--fps 30] [--max_noops M]
      [--seed 0] [--gin_bindings ...]

The agent and its environment are restored by `evaluate.restore_run` (the
run's config.gin, the checkpoint through the agent's `unbundle`), and the
episode is played by `evaluation.evaluate`, as an evaluation episode: same
policy, evaluation epsilon, random no-ops at the start, cut at `max_steps`
agent steps (these two default to the run's, as in `evaluate.py`).

The video holds one frame per agent step, the ALE's RGB screen (210x160)
after the step; the no-ops are not shown. An agent step is 4 emulator frames
(Dopamine's frame skip), so the game runs in real time at 15 frames per
second and the default of 30 plays it at twice the speed.

`.mp4` is written through OpenCV (`cv2.VideoWriter`, mp4v codec), `.gif`
through Pillow; both are written frame by frame as the episode runs, so a
long episode needs no memory for its frames (GIFs of whole games are still
large files: prefer MP4 for them).
"""

import os
from typing import Sequence

from absl import app
from absl import flags
import cv2
import numpy as np
from PIL import GifImagePlugin
from PIL import Image

from bbf_dopamine import evaluate
from bbf_dopamine import evaluation

EXTENSIONS = ('.mp4', '.gif')


class _Mp4Writer(object):
  """Frames to an MP4 through OpenCV; opened at the first frame (its size)."""

  def __init__(self, path, fps):
    self._path, self._fps, self._writer = path, fps, None
    self.frames = 0

  def write(self, rgb):
    self.frames += 1
    if self._writer is None:
      height, width = rgb.shape[:2]
      self._writer = cv2.VideoWriter(self._path,
                                     cv2.VideoWriter_fourcc(*'mp4v'),
                                     float(self._fps), (width, height))
      if not self._writer.isOpened():
        raise evaluate.EvaluationError(
            f'OpenCV cannot write {self._path} (no mp4v encoder in this '
            'OpenCV build?); try a .gif.')
    self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

  def close(self):
    if self._writer is not None:
      self._writer.release()


class _GifWriter(object):
  """Frames to an animated GIF, one GIF frame per frame written.

  Pillow's `Image.save(save_all=True)` needs every frame at once, and it
  merges identical consecutive frames into one longer frame, which would
  break one frame per agent step (Pong's screen often stands still). Its
  frame-level GIF encoder (`getheader` / `getdata`) writes each frame as it
  comes, full size with its own palette.
  """

  def __init__(self, path, fps):
    self._file = open(path, 'wb')
    self._duration_ms = 1000.0 / fps
    self._started = False
    self.frames = 0

  def write(self, rgb):
    self.frames += 1
    # An Atari screen has far fewer than 256 colours: quantizing is exact.
    frame = Image.fromarray(np.ascontiguousarray(rgb)).quantize(256)
    if not self._started:
      header, _ = GifImagePlugin.getheader(frame, info={'loop': 0})
      self._file.write(b''.join(header))
      self._started = True
    for chunk in GifImagePlugin.getdata(frame, duration=self._duration_ms,
                                        include_color_table=True):
      self._file.write(chunk)

  def close(self):
    if self._started:
      self._file.write(b';')  # GIF trailer.
    self._file.close()


def _ale_of(env):
  inner = getattr(env, 'environment', None)
  ale = getattr(getattr(inner, 'unwrapped', None), 'ale', None)
  if ale is None:
    raise evaluate.EvaluationError(
        'Recording needs an Atari (ALE) environment; this run has '
        f'{type(env).__name__}.')
  return ale


class _RecordingEnvironment(object):
  """Plays the no-ops in reset() and writes the screen after each step.

  `evaluation.evaluate` is given max_noops=0 and this environment does the
  no-ops itself, so that only agent steps are recorded while the episode is
  still played by the evaluation code.
  """

  def __init__(self, env, writer, rng, max_noops):
    self._env, self._ale, self._writer = env, _ale_of(env), writer
    self._rng, self._max_noops = rng, max_noops

  @property
  def game_over(self):
    return self._env.game_over

  def reset(self):
    return evaluation.start_episode(self._env, self._rng, self._max_noops)

  def step(self, action):
    result = self._env.step(action)
    self._writer.write(self._ale.getScreenRGB())
    return result


def record_episode(base_dir, out, checkpoint=None, max_steps=None, fps=30,
                   max_noops=None, gin_bindings=(), seed=0):
  """Plays one evaluation episode of a checkpoint and saves it as a video.

  Args:
    base_dir: the run directory.
    out: the video file, `.mp4` or `.gif`.
    checkpoint: N of checkpoints/ckpt.N; None for the newest complete one.
    max_steps: the episode is cut at this many agent steps; None: the run's
      max_steps_per_episode.
    fps: frames (agent steps) per second of the video.
    max_noops: up to this many random no-ops before the first agent step;
      None: the run's.
    gin_bindings: extra gin bindings applied after the run's config.gin.
    seed: seed of the no-ops, the environment and the evaluation epsilon.

  Returns:
    dict with the episode's `return`, its `length` in agent steps, the
    number of `frames` written, the `path` and the `checkpoint`.

  Raises:
    evaluate.EvaluationError: bad arguments or an unusable run directory.
  """
  extension = os.path.splitext(out)[1].lower()
  if extension not in EXTENSIONS:
    raise evaluate.EvaluationError(
        f'--out {out}: the name must end in {" or ".join(EXTENSIONS)}.')
  evaluate.check_integer('max_steps', max_steps, 1)
  evaluate.check_integer('fps', fps, 1)
  run = evaluate.restore_run(base_dir, checkpoint, gin_bindings, 1, seed,
                             max_noops, max_steps)
  _ale_of(run.environments[0])  # Fails before the file is created.
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  writer = (_Mp4Writer if extension == '.mp4' else _GifWriter)(out, fps)
  rng = np.random.default_rng([seed, 2])  # As evaluate_restored's no-ops.
  env = _RecordingEnvironment(run.environments[0], writer, rng,
                              run.max_noops)
  try:
    results = evaluation.evaluate(
        run.agent, [env], 1, rng, max_noops=0,
        max_steps_per_episode=run.max_steps_per_episode)
  except BaseException:
    writer.close()
    if os.path.exists(out):
      os.remove(out)  # No half-written video that looks like a result.
    raise
  writer.close()
  return {'return': float(results['returns'][0]),
          'length': int(results['lengths'][0]), 'frames': writer.frames,
          'path': out, 'checkpoint': run.checkpoint}


def _define_flags():
  evaluate.define_restore_flags()
  flags.adopt_module_key_flags(evaluate)  # Listed by --help too.
  flags.DEFINE_string('out', None, 'Video file to write: .mp4 or .gif.')
  flags.DEFINE_integer('max_steps', None,
                       'The episode is cut at this many agent steps (default: '
                       'the run\'s Atari100kRunner.max_steps_per_episode, '
                       'else 27,000).')
  flags.DEFINE_integer('fps', 30, 'Video frames (agent steps) per second; '
                       'real time is 15.')
  flags.mark_flag_as_required('out')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  fl = flags.FLAGS
  result = evaluate.call_or_exit(
      record_episode, base_dir=fl.base_dir, out=fl.out,
      checkpoint=fl.checkpoint, max_steps=fl.max_steps, fps=fl.fps,
      max_noops=fl.max_noops, gin_bindings=fl.gin_bindings, seed=fl.seed)
  print(f'checkpoint {result["checkpoint"]}: return {result["return"]} in '
        f'{result["length"]} agent steps, {result["frames"]} frames')
  print(f'saved: {result["path"]}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
