"""generator.metrics on synthetic clips from the built-in world (no model, no download), plus the
local-CLIP embedder on a tiny randomly initialised CLIP saved like a real checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

from generator import metrics
from generator.builtin import world
from generator.encode import encode_video


def clip(colour="red", shape="circle", direction="right", speed=1.5, frames=12, size=64, x0=20.0, y0=32.0):
    motion = world.ShapeMotion(colour, shape, direction, 8, x0, y0, speed)
    video = world.render([[motion]], frames, size)[0]  # 3 x T x H x W in [-1, 1]
    return ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def test_identical_frames_have_consistency_one():
    frames = np.repeat(clip(speed=0)[:1], 6, axis=0)
    assert metrics.temporal_consistency(frames) == pytest.approx(1.0, abs=1e-9)
    assert metrics.temporal_consistency(clip()) < 0.999  # a moving shape is not "identical"


def test_shuffled_frames_are_less_consistent_and_less_smooth_than_steady_motion():
    steady = clip()
    shuffled = steady[[0, 3, 1, 5, 2, 7, 4, 9, 6, 11, 8, 10]]
    assert metrics.temporal_consistency(shuffled) < metrics.temporal_consistency(steady)
    assert metrics.motion_smoothness(shuffled) < metrics.motion_smoothness(steady)


def test_still_clip_is_smoothest_and_not_dynamic():
    still, moving, fast = clip(speed=0), clip(speed=1.0), clip(speed=2.5, x0=12.0)
    assert metrics.motion_smoothness(still) == pytest.approx(1.0)
    assert metrics.motion_smoothness(still) > metrics.motion_smoothness(moving)
    assert metrics.dynamic_degree(still) == 0.0 and not metrics.is_dynamic(still)
    assert metrics.is_dynamic(moving)
    assert metrics.dynamic_degree(fast) > metrics.dynamic_degree(moving) > 0.0


def test_subject_consistency_drops_when_the_subject_changes():
    steady = clip()
    changing = np.concatenate([clip(shape="circle")[:6], clip(shape="square", colour="blue")[6:]])
    assert metrics.subject_consistency(steady) > 0.97
    assert metrics.subject_consistency(changing) < metrics.subject_consistency(steady) - 0.05


def test_background_consistency_drops_when_the_background_flickers():
    steady = clip()
    flicker = steady.copy()
    flicker[1::2] = np.clip(flicker[1::2].astype(int) + [60, 0, 30], 0, 255).astype(np.uint8)
    assert metrics.background_consistency(steady) > 0.999  # only anti-aliased edge pixels stay behind
    assert metrics.background_consistency(flicker) < 0.97


def _set(colours, shapes, directions, **kw):
    return [clip(c, s, d, **kw) for c in colours for s in shapes for d in directions]


def test_fvd_is_zero_for_a_set_with_itself_and_grows_with_difference():
    reds = _set(["red", "blue"], ["circle", "square"], ["right", "down"])
    nudged = _set(["red", "blue"], ["circle", "square"], ["right", "down"], x0=22.0)
    others = _set(["green", "white"], ["triangle", "square"], ["left", "up"])
    assert metrics.fvd(reds, reds) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < metrics.fvd(reds, nudged) < metrics.fvd(reds, others)
    assert metrics.fvd(reds, others) == pytest.approx(metrics.fvd(others, reds), rel=1e-4)


def test_frechet_distance_matches_closed_form_for_gaussians():
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) \
        == pytest.approx(4.0 + 1.0)


def test_fvd_needs_two_videos_per_set():
    with pytest.raises(ValueError, match="at least two"):
        metrics.fvd([clip()], [clip(), clip(speed=0)])


def test_frames_of_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="T x H x W x 3"):
        metrics.video_metrics(np.zeros((4, 8, 8), dtype=np.uint8))


def test_cli_prints_a_table_and_fvd_against_a_reference_folder(tmp_path, capsys):
    videos = []
    for i, (colour, direction) in enumerate([("red", "right"), ("blue", "down")]):
        path = tmp_path / f"gen{i}.mp4"
        encode_video(clip(colour, direction=direction), 8, str(path))
        videos.append(str(path))
    reference = tmp_path / "reference"
    reference.mkdir()
    for i, colour in enumerate(["green", "white", "yellow"]):
        encode_video(clip(colour, "triangle", "left", x0=44.0), 8, str(reference / f"ref{i}.mp4"))
    metrics.main(videos + ["--reference-dir", str(reference)])
    out = capsys.readouterr().out
    assert "| gen0.mp4 |" in out and "motion_smoothness" in out and "FVD (2 videos vs 3" in out
    report = metrics.main(videos + ["--reference-dir", str(reference), "--json"])
    assert json.loads(capsys.readouterr().out)["fvd"] == report["fvd"] > 0


def test_cli_refuses_a_file_that_is_not_a_video(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    with pytest.raises(SystemExit, match="not a readable video"):
        metrics.main([str(bogus)])


def test_local_clip_embedder_from_a_saved_tiny_checkpoint(tmp_path, monkeypatch):
    """A randomly initialised tiny CLIP, saved with save_pretrained and named by the env var, is
    loaded from that folder only; identical frames still give 1.0."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8)
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip")
    monkeypatch.setenv(metrics.CLIP_PATH_ENV, str(tmp_path / "clip"))
    embed = metrics.default_embedder()
    assert isinstance(embed, metrics.ClipEmbedder)
    frames = clip()
    assert embed(frames).shape == (len(frames), 8)
    assert metrics.temporal_consistency(np.repeat(frames[:1], 4, axis=0)) == pytest.approx(1.0, abs=1e-5)
    assert metrics.temporal_consistency(frames) < 1.0


def test_missing_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="VIDEO_METRICS_CLIP_PATH"):
        metrics.ClipEmbedder(str(tmp_path / "nowhere"))


def test_video_metrics_of_large_frames_match_their_downscaled_copy():
    small = clip(size=128)
    large = small.repeat(3, axis=1).repeat(3, axis=2)  # 384x384: averaged back down by 2 -> 192x192
    big, ref = metrics.video_metrics(large), metrics.video_metrics(small)
    assert big["dynamic"] == ref["dynamic"] and big["dynamic_degree"] == pytest.approx(ref["dynamic_degree"], abs=0.01)
    assert big["motion_smoothness"] == pytest.approx(ref["motion_smoothness"], abs=0.005)
