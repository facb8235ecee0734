"""`python manage.py generate`: a real subprocess, the way an operator runs it (a plain clip and the
refusals); the start-image and long-video options through the same command in this process, where the
model loads once instead of once per subprocess."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"


def _settings_module() -> str:
    match = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", MANAGE.read_text())
    assert match, "manage.py does not set DJANGO_SETTINGS_MODULE"
    return match.group(1)


def _generate(*args, timeout=240):
    # one torch thread: the test machines are small and often busy; oversubscribed threads
    # make CPU inference several times slower there
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=_settings_module(), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(MANAGE), "generate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _generate_here(*args) -> str:
    """The command in this process (call_command parses `args` as the command line does): its stdout."""
    out = io.StringIO()
    call_command("generate", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), fps


def test_generate_writes_a_playable_mp4(tmp_path):
    out = tmp_path / "clip.mp4"
    done = _generate("a blue triangle moving to the right", "--steps", "2", "--frames", "8",
                     "--width", "64", "--height", "64", "--seed", "5", "--fps", "10", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    frames, fps = _decode(out)
    assert frames.shape == (8, 64, 64, 3)
    assert fps == pytest.approx(10)
    assert str(out) in done.stdout and "seed 5" in done.stdout and "frames 8" in done.stdout
    assert "denoising" in done.stderr  # the progress bar


def test_generate_webm_with_a_start_image(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 8:28] = (30, 220, 40)
    Image.fromarray(image).save(tmp_path / "start.png")
    out = tmp_path / "clip.webm"
    _generate_here("a green square moving right", "--steps", "2", "--frames", "8", "--width", "96",
                   "--height", "64", "--image", str(tmp_path / "start.png"), "--output", str(out), "--verbosity", "0")
    frames, _ = _decode(out)
    assert frames.shape == (8, 64, 96, 3)


def test_generate_long_video_with_chunks_and_interpolation(tmp_path):
    from generator.shape import LongVideoOptions, final_shape

    out = tmp_path / "long.mp4"
    stdout = _generate_here("a blue triangle moving to the right", "--steps", "2", "--frames", "8",
                            "--width", "64", "--height", "64", "--seed", "5", "--fps", "8", "--num-chunks", "2",
                            "--interpolate", "2", "--output", str(out))
    expected = final_shape(LongVideoOptions(num_chunks=2, interpolate=2), 8, 64, 64, 8.0)
    frames, fps = _decode(out)
    assert frames.shape == (expected["num_frames"], 64, 64, 3) == ((2 * 8 - 4 - 1) * 2 + 1, 64, 64, 3)
    assert fps == pytest.approx(16)
    assert f"frames {expected['num_frames']}" in stdout and "chunks 2" in stdout


@pytest.mark.parametrize("args,messages", [
    (["--interpolate", "5", "--num-chunks", "9"],
     ["--interpolate: interpolate must be one of 1, 2, 3, 4, 6", "--num-chunks: num_chunks must be between 1 and 8"]),
    (["--width", "65", "--frames", "3", "--steps", "0"],  # every problem is listed at once
     ["--width: width must be a multiple of 16", "--frames: num_frames must be", "--steps: steps must be between"]),
    (["--model", "no-such-model"], ["unknown model 'no-such-model'", "known models:", "builtin"]),
    (["--image", "/nonexistent/start.png"], ["--image: no such file"]),
])
def test_generate_rejects_bad_arguments(tmp_path, args, messages):
    out = tmp_path / "never.mp4"
    done = _generate("a red circle moving left", "--steps", "2", "--frames", "8", *args, "--output", str(out),
                     timeout=120)
    assert done.returncode != 0
    for message in messages:
        assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr  # a clear message, not a crash
    assert not out.exists()
