"""Built-in model v2: the two-object and sharpness evaluation, the streaming video-folder loader,
and video-to-video on the built-in backend. CPU only, small: the shipped weights at 64x64 x 8
frames with few steps, a handful of tiny MP4s."""
from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import pytest
import torch

from generator.builtin import world
from generator.encode import decode_video, encode_video
from generator.interface import GenerationRequest, get_info
from tests.support.frames import level_difference
from tests.test_generator import backend, one_torch_thread, text_encoder  # noqa: F401  (fixtures)


def mp4_round_trip(frames: np.ndarray, fps: float = 8.0) -> np.ndarray:
    return decode_video(encode_video(frames, fps))[0]


# ------------------------------------------------------------------ evaluation
def test_two_object_prompts_are_held_out_with_two_colours_and_their_own_seeds():
    from generator.evaluate import evaluation_prompts, two_object_prompts

    rng = random.Random(0)
    training = {world.caption(world.sample_scene(rng, 16, two_shapes_prob=1.0), rng) for _ in range(3000)}
    items = two_object_prompts(40, seed=1)
    assert all(len({o["colour"] for o in item["objects"]}) == 2 for item in items)
    assert not {item["prompt"] for item in items} & training
    assert any("; " in item["prompt"] for item in items) and any(", and " in item["prompt"] for item in items)
    assert not {item["seed"] for item in items} & {item["seed"] for item in evaluation_prompts(105, seed=1)}


def test_track_colours_reads_each_object_and_catches_a_duplicate_and_a_swapped_direction():
    from generator.evaluate import reference_clip, score_two_objects, track_colours, two_object_prompts

    right = []
    for item in two_object_prompts(12, seed=3):
        scored = score_two_objects(item, track_colours(mp4_round_trip(reference_clip(item["objects"], item["seed"],
                                                                                      16, 128))))
        right.append(scored["nothing_else"] and all(all(o.values()) for o in scored["objects"]))
    assert np.mean(right) >= 0.9, right

    item = {"objects": [{"colour": "red", "shape": "square", "direction": "left"},
                        {"colour": "blue", "shape": "circle", "direction": "up"}]}
    drawn = [world.ShapeMotion("red", "square", "left", 7, 50, 14, 1.5),
             world.ShapeMotion("red", "square", "left", 7, 50, 40, 1.5),  # the red square twice
             world.ShapeMotion("blue", "circle", "left", 7, 28, 27, 1.0)]  # moving the red one's way
    scored = score_two_objects(item, track_colours(world.to_uint8_frames(world.render([drawn], 16, 128)[0])))
    red, blue = scored["objects"]
    assert red == {"colour": True, "shape": True, "direction": True, "once": False}
    assert blue == {"colour": True, "shape": True, "direction": False, "once": True}
    assert scored["nothing_else"]
    green = [world.ShapeMotion("green", "triangle", "down", 7, 10, 10, 1.0)]
    assert not score_two_objects(item, track_colours(world.to_uint8_frames(world.render([drawn + green], 16, 128)[0])))[
        "nothing_else"]


def test_edge_sharpness_ranks_the_renderer_above_an_upscaled_and_a_blurred_clip():
    from generator.evaluate import edge_sharpness, reference_clip
    from generator.postprocess import resize_frames

    objects = [{"colour": "yellow", "shape": "square", "direction": "right"}]
    sharp = edge_sharpness(reference_clip(objects, 0, 8, 256))
    upscaled = edge_sharpness(resize_frames(reference_clip(objects, 0, 8, 64), (256, 256), sharpen=False))
    blurred = edge_sharpness(resize_frames(reference_clip(objects, 0, 8, 32), (256, 256), sharpen=False))
    assert sharp > 60 and upscaled < 0.6 * sharp and blurred < 0.7 * upscaled, (sharp, upscaled, blurred)


def test_evaluate_scores_both_kinds_and_sharpness_through_mp4(backend, tmp_path):
    from generator.evaluate import evaluate

    summary = evaluate(backend, n=2, seed=1, out_dir=str(tmp_path), two_objects=2, width=64, height=64,
                       num_frames=8, steps=4)
    rows = summary.pop("rows")
    assert [("objects" in r) for r in rows] == [False, False, True, True]
    assert set(rows[2]["ok"]) == {"objects", "nothing_else"} and len(rows[2]["ok"]["objects"]) == 2
    for key in ("two_colour_rate", "two_shape_rate", "two_direction_rate", "two_once_rate",
                "two_object_right_rate", "two_all_right_rate", "single_object_rate", "sharpness_ratio"):
        assert 0.0 <= summary[key] <= (1.0 if key != "sharpness_ratio" else 2.0), key
    assert summary["two_all_right_rate"] <= summary["two_object_right_rate"] + 1e-9
    assert summary["renderer_edge_sharpness"] > 0 and summary["renderer_two_all_right_rate"] >= 0.5
    assert json.load(open(tmp_path / "eval.json"))["summary"] == summary


# ------------------------------------------------------------ streaming loader
def _gradient_video(path, num_frames=40, height=48, width=96):
    """Red ramps across x, green down y, blue counts frames (5 per frame)."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0], frames[..., 1] = 255 * xs / width, 255 * ys / height
    frames[..., 2] = 5 * np.arange(num_frames)[:, None, None]
    encode_video(frames, 8, str(path))


def test_video_index_reads_txt_captions_and_csv_and_jsonl_manifests(tmp_path):
    from generator.builtin.train import video_index

    (tmp_path / "nested").mkdir()
    for name in ("a_red_clip.mp4", "nested/b.webm", "notes.md"):
        (tmp_path / name).write_bytes(b"")  # the index opens no video
    (tmp_path / "nested" / "b.txt").write_text("a blue clip\n")
    assert video_index(str(tmp_path)) == [(str(tmp_path / "a_red_clip.mp4"), "a red clip"),
                                          (str(tmp_path / "nested" / "b.webm"), "a blue clip")]
    (tmp_path / "list.csv").write_text('video,caption\na_red_clip.mp4,"red, moving"\nnested/b.webm,blue\n')
    assert video_index(str(tmp_path / "list.csv")) == [(str(tmp_path / "a_red_clip.mp4"), "red, moving"),
                                                       (str(tmp_path / "nested" / "b.webm"), "blue")]
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "a_red_clip.mp4", "text": "red"}) + "\n\n")
    assert video_index(str(tmp_path / "list.jsonl")) == [(str(tmp_path / "a_red_clip.mp4"), "red")]


def test_read_window_keeps_the_aspect_ratio_and_reads_consecutive_frames(tmp_path):
    from generator.builtin.train import read_window

    _gradient_video(tmp_path / "wide.mp4")
    decoded_blue = decode_video(str(tmp_path / "wide.mp4"))[0][..., 2].mean(axis=(1, 2))
    rng, starts = random.Random(0), set()
    for _ in range(6):
        window = read_window(str(tmp_path / "wide.mp4"), 8, 32, rng).astype(np.float32)
        assert window.shape == (8, 32, 32, 3)
        # 96x48 -> 64x32 then a 32x32 crop: red rises half as fast per pixel as green; squashed to
        # 32x32 both would rise alike
        red_slope = np.diff(window[0, 16, 4:28, 0]).mean()
        green_slope = np.diff(window[0, 4:28, 16, 1]).mean()
        assert green_slope / red_slope == pytest.approx(2.0, rel=0.15)
        # the window is 8 consecutive frames of the video (blue tells which)
        blue = window[..., 2].mean(axis=(1, 2))
        errors = [np.abs(decoded_blue[s:s + 8] - blue).max() for s in range(len(decoded_blue) - 7)]
        start = int(np.argmin(errors))
        assert errors[start] < 1.5, (blue, decoded_blue)
        starts.add(start)
    assert len(starts) >= 3 and max(starts) <= 32  # random windows, all inside the 40 frames
    assert read_window(str(tmp_path / "wide.mp4"), 41, 32, rng) is None  # too short


def test_loader_over_a_thousand_videos_starts_at_once(tmp_path):
    from generator.builtin.train import VideoFolderClips

    _gradient_video(tmp_path / "clip.mp4", num_frames=24)
    for i in range(1000):
        os.link(tmp_path / "clip.mp4", tmp_path / f"clip_{i:04d}.mp4")
    started = time.perf_counter()
    data = VideoFolderClips(str(tmp_path), num_frames=8, size=32, seed=0, workers=1)
    clips, captions = next(data.batches(4, start_step=0))
    seconds = time.perf_counter() - started
    assert clips.shape == (4, 3, 8, 32, 32) and clips.dtype == torch.float32
    assert -1.0 <= clips.min() and clips.max() <= 1.0 and len(captions) == 4
    assert seconds < 5.0, seconds  # nothing is decoded before the first batch but that batch


# ------------------------------------------------------------- video-to-video
def _source_clip():
    scene = [world.ShapeMotion("yellow", "triangle", "right", 9, 20, 40, 1.5)]
    return mp4_round_trip(world.to_uint8_frames(world.render([scene], 8, 64)[0]))


def _request(**kw):
    return GenerationRequest(**(dict(prompt="a yellow triangle moving to the right", num_frames=8, width=64,
                                     height=64, steps=10, seed=7) | kw))


def test_video_to_video_follows_the_source_closer_than_text_to_video(backend):
    source = _source_clip()
    text_only = backend.generate(_request()).frames
    redrawn = backend.generate(_request(video=source, strength=0.3)).frames
    assert redrawn.shape == source.shape

    def distance(frames):
        return float(np.abs(mp4_round_trip(frames).astype(np.float32) - source).mean())

    assert distance(redrawn) < 0.5 * distance(text_only), (distance(redrawn), distance(text_only))
    assert level_difference(redrawn, source) > 1.0, level_difference(redrawn, source)  # it did redraw
    ignored = backend.generate(_request(video=source, strength=1.0)).frames
    assert np.array_equal(ignored, text_only)  # strength 1: the source plays no part


def test_strength_zero_returns_the_source(backend):
    source = _source_clip()
    steps = []
    result = backend.generate(_request(video=source, strength=0.0), progress=lambda *a: steps.append(a))
    assert np.array_equal(result.frames, source) and steps == []
    assert np.abs(mp4_round_trip(result.frames).astype(int) - source).mean() < 2.0
    assert get_info("builtin").supports_video


# ------------------------------------------------------------- object tokens
def test_object_phrases_split_every_caption_of_the_world_into_its_objects():
    from generator.builtin.text import object_phrases

    rng = random.Random(4)
    for i in range(400):
        scene = world.sample_scene(rng, 16, two_shapes_prob=0.5)
        phrases = object_phrases(world.caption(scene, rng, held_out=i % 2 == 0))
        assert len(phrases) == len(scene), phrases
        for phrase, motion in zip(phrases, scene):
            assert motion.colour in phrase and motion.shape in phrase, phrases
    assert object_phrases("there is a red circle and it travels left") == ["there is a red circle and it travels left"]
    assert object_phrases("") == [""]


def test_object_attention_added_to_a_trained_model_starts_as_that_model_and_round_trips(tmp_path, text_encoder):
    from generator.builtin.model import VideoUNet
    from generator.builtin.train import parse_args, train

    base_dir, tuned_dir = tmp_path / "base", tmp_path / "tuned"
    tiny = ["--channels", "16", "32", "32", "--batch", "2", "--frames", "4", "--size", "32", "--warmup", "1",
            "--threads", "1", "--lr", "1e-3", "--ckpt-every", "2"]
    train(parse_args(["--out", str(base_dir), "--steps", "2", *tiny]))
    base = VideoUNet.from_pretrained(str(base_dir / "pipeline" / "unet"))
    assert not base.config.object_tokens and base.attn_mid.object_attn is None
    train(parse_args(["--out", str(tuned_dir), "--steps", "2", "--object-tokens", "--init-from",
                      str(base_dir / "pipeline"), *tiny]))
    tuned = VideoUNet.from_pretrained(str(tuned_dir / "pipeline" / "unet"))
    assert tuned.config.object_tokens and tuned.attn_mid.object_attn is not None

    text = text_encoder(["a red square moving left and a blue circle moving up", ""], objects=True)
    assert text[3].shape[:2] == (2, 2) and text[4].tolist() == [[True, True], [True, False]]
    fresh = VideoUNet.from_config(dict(tuned.config))
    missing = fresh.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(".object_attn." in key for key in missing)
    sample = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():  # the new attention's output layer starts at zero: the base model's outputs
        torch.testing.assert_close(fresh(sample, torch.tensor([500]), *text), base(sample, torch.tensor([500]), *text))
        assert not torch.equal(tuned(sample, torch.tensor([500]), *text), base(sample, torch.tensor([500]), *text))


# ------------------------------------------------------------------ upsampler
def test_upsampler_training_lowers_its_loss_and_the_pipeline_carries_it(tmp_path, text_encoder):
    from generator.builtin.model import FrameUpsampler
    from generator.builtin.sample import BuiltinPipeline, training_scheduler
    from generator.builtin.model import VideoUNet
    from generator.builtin.train_upsampler import batch, edge_l1, parse_args, train

    args = parse_args(["--out", str(tmp_path), "--steps", "120", "--batch", "4", "--hidden", "16", "--lr", "1e-2",
                       "--max-blur", "0", "--max-noise", "0", "--threads", "1"])
    low, high = batch(random.Random(99), 8, 4, args)  # frames the training never draws
    with torch.no_grad():
        before = edge_l1(FrameUpsampler(hidden=16)(low), high).item()  # untrained: nearest neighbour
    train(args)
    upsampler = FrameUpsampler.from_pretrained(str(tmp_path / "upsampler"))
    with torch.no_grad():
        after = edge_l1(upsampler(low), high).item()
    assert after < 0.97 * before, (before, after)  # learning (the shipped one trained 1,500 steps)
    assert upsampler.config.hidden == 16 and upsampler.config.scale == 4

    pipe = BuiltinPipeline(VideoUNet(channels=(16, 32, 32)), training_scheduler(), text_encoder, upsampler)
    pipe.save_pretrained(str(tmp_path / "pipeline"))
    loaded = BuiltinPipeline.from_pretrained(str(tmp_path / "pipeline"), text_encoder=text_encoder)
    low = world.render([[world.ShapeMotion("white", "square", "right", 8, 20, 30, 1.5)]], 2, 64)[0]
    assert loaded.upscale(low).shape == (3, 2, 256, 256)
    torch.testing.assert_close(loaded.upscale(low), pipe.upscale(low))


# ------------------------------------------------------------------ layers
def test_keep_one_object_paints_over_a_second_copy_and_leaves_one_object_as_drawn():
    from generator.builtin.sample import keep_one_object
    from generator.evaluate import analyse

    big = world.ShapeMotion("red", "square", "left", 9, 50, 14, 1.5)
    copy = world.ShapeMotion("red", "square", "left", 6, 50, 44, 1.5)
    twice = world.render([[big, copy]], 16, 64)[0]
    assert analyse(world.to_uint8_frames(twice))["objects"] == 2
    kept = keep_one_object(twice)
    torch.testing.assert_close(kept, world.render([[big]], 16, 64)[0], atol=1e-6, rtol=0)
    once = world.render([[world.ShapeMotion("blue", "triangle", "down", 7, 30, 10, 1.9)]], 16, 64)[0]
    assert torch.equal(keep_one_object(once), once)


def test_layers_composite_to_the_scene_the_renderer_draws():
    from generator.builtin.sample import composite_layers

    red = world.ShapeMotion("red", "circle", "right", 8, 12, 14, 1.5)
    blue = world.ShapeMotion("blue", "square", "up", 7, 50, 56, 1.5)  # never touching the red one
    layers = torch.stack([world.render([[red]], 16, 64)[0], world.render([[blue]], 16, 64)[0]])
    torch.testing.assert_close(composite_layers(layers), world.render([[red, blue]], 16, 64)[0], atol=1e-6, rtol=0)


def test_a_two_object_prompt_is_sampled_as_two_layers_in_one_batch(text_encoder):
    from generator.builtin.model import VideoUNet
    from generator.builtin.sample import BuiltinPipeline, training_scheduler

    torch.manual_seed(0)
    pipe = BuiltinPipeline(VideoUNet(channels=(16, 32, 32)), training_scheduler(), text_encoder)
    batches = []
    pipe.unet.register_forward_hook(lambda module, args, out: batches.append(out.shape[0]))
    run = dict(num_frames=4, height=32, width=32, steps=4, generator=torch.Generator().manual_seed(1))
    video = pipe("a red square moving left and a blue circle moving up", **run)
    assert video.shape == (3, 4, 32, 32) and batches == [4, 4, 2, 2]  # guided steps first (t >= 600)
    batches.clear()
    pipe("a red square moving left", **run)
    assert batches == [2, 2, 1, 1]
    batches.clear()  # a start frame already holds both objects: the prompt is drawn whole
    pipe("a red square moving left and a blue circle moving up", start_frames=torch.zeros(3, 1, 32, 32), **run)
    assert batches == [2, 2, 1, 1]
    batches.clear()  # seven objects asked: the world holds three (text.MAX_OBJECTS), three layers
    pipe("; ".join(f"a {colour} circle moving up" for colour in world.COLOURS), **run)
    assert batches == [6, 6, 3, 3]
