"""`python manage.py describe`: a real subprocess, the way an operator runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from generator.encode import encode_video
from tests.test_generator_cli import MANAGE, ROOT, _settings_module
from tests.test_understanding import motion, render


def describe(*args):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=_settings_module(), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(MANAGE), "describe", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_describe_prints_caption_agreement_and_metrics_as_json(tmp_path):
    video = tmp_path / "clip.mp4"
    encode_video(render([motion("cyan", "square", "down", 32.0, 14.0)], frames=16, size=128), 8, str(video))
    done = describe(str(video), "--prompt", "a cyan box sinks", "--metrics", "--json",
                    "--question", "what shape is it?")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["caption"] == "a cyan square moving down" and report["answer"] == "square"
    assert report["agreement"]["attributes"]["score"] == 1.0 and 0 < report["agreement"]["semantic"] < 1
    assert report["metrics"]["dynamic"] is True and report["metrics"]["motion_smoothness"] > 0.9


def test_describe_refuses_a_file_that_is_not_a_video_and_an_unknown_describer(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    done = describe(str(bogus))
    assert done.returncode == 1 and "not a readable video" in done.stderr
    video = tmp_path / "clip.mp4"
    encode_video(render([motion()]), 8, str(video))
    done = describe(str(video), "--model", "gpt-vision")
    assert done.returncode == 1 and "unknown describer 'gpt-vision' (known: builtin)" in done.stderr
