"""generator.understanding: frame sampling, the built-in describer and its question answering,
prompt/caption agreement, the describer registry, and a tiny random SmolVLM loaded from a local
folder through the same path a real SmolVLM2 checkpoint takes."""
from __future__ import annotations

import json
import random
import tracemalloc

import numpy as np
import pytest

from generator.builtin import world
from generator.encode import decode_video, encode_video
from generator.interface import Cancelled
from generator.postprocess import source_clip
from generator.understanding import DescribeError, UnknownDescriber, VideoTooLarge, get_describer, sample_frames
from generator.understanding.agreement import attribute_agreement, prompt_caption_agreement, semantic_agreement
from generator.understanding.builtin import analyse_scene, parse_scene
from tests.support.video_bombs import mp4_declaring
from tests.tiny_vlm import save_tiny_smolvlm


def render(scene, frames=12, size=64) -> np.ndarray:
    video = world.render([scene], frames, size)[0]
    return ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def through_mp4(frames) -> np.ndarray:
    return decode_video(encode_video(frames, 8))[0]


def motion(colour="red", shape="circle", direction="right", x0=20.0, y0=32.0, speed=1.5):
    return world.ShapeMotion(colour, shape, direction, 8, x0, y0, speed)


# ------------------------------------------------------------------ frames
def test_sample_frames_picks_evenly_spaced_frames_from_a_video():
    levels = np.arange(20) * 12
    frames = np.repeat(levels.astype(np.uint8)[:, None, None, None], 32, axis=1).repeat(32, 2).repeat(3, 3)
    sampled = sample_frames(encode_video(frames, 8), count=8)
    assert sampled.shape == (8, 32, 32, 3)
    expected = levels[np.linspace(0, 19, 8).round().astype(int)]
    assert np.abs(sampled.reshape(8, -1).mean(1) - expected).max() < 4  # H.264 keeps flat greys close


def test_sample_frames_of_a_webm_whose_frame_count_is_not_stated():
    levels = np.arange(20) * 12
    frames = np.repeat(levels.astype(np.uint8)[:, None, None, None], 32, axis=1).repeat(32, 2).repeat(3, 3)
    sampled = sample_frames(encode_video(frames, 8, fmt="webm"), count=8)
    expected = levels[np.linspace(0, 19, 8).round().astype(int)]
    assert np.abs(sampled.reshape(8, -1).mean(1) - expected).max() < 6


def test_a_small_mp4_declaring_huge_frames_is_refused_before_any_decoding():
    bomb = mp4_declaring(8192, 8192)  # 1.5 KB; decoding a frame would take 100 MB, the old describer > 100 GB
    assert len(bomb) < 4096
    tracemalloc.start()
    try:
        with pytest.raises(VideoTooLarge, match="8192x8192 have more than 16777216 pixels"):
            sample_frames(bomb, max_frame_pixels=4096 * 4096)
        with pytest.raises(ValueError, match="8192x8192 have more than"):  # a video-to-video source
            source_clip(bomb, 9, (64, 64), max_frame_pixels=4096 * 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_sample_frames_scales_frames_down_while_decoding():
    frames = np.zeros((6, 1024, 1536, 3), np.uint8)
    frames[:, 256:768, 512:1024] = (220, 40, 40)  # a red block in the middle
    video = encode_video(frames, 8)
    tracemalloc.start()
    try:
        sampled = sample_frames(video, count=6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sampled.shape == (6, 341, 512, 3)  # the longer side at DESCRIBE_MAX_SIDE, aspect kept
    assert peak < 6 * 1024 * 1536 * 3 // 2, peak  # the old decode held every frame at full size (28 MB)
    assert (sampled[:, 170, 256] > (180, 0, 0)).all() and (sampled[:, 170, 256, 1:] < 80).all()
    assert source_clip(video, 3, (32, 48)).shape == (3, 32, 48, 3)  # straight at a v2v job's size


def test_sample_frames_of_a_long_video_without_a_stated_count_holds_a_few_frames():
    count = 600
    levels = (np.arange(count) * 255 // (count - 1)).astype(np.uint8)
    video = encode_video((np.full((48, 64, 3), level, np.uint8) for level in levels), 30, fmt="webm")
    tracemalloc.start()
    try:
        sampled = sample_frames(video, count=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    held = 48 * 64 * 3
    assert peak < 64 * held, peak / held  # at most 32 frames held (the old decode kept all 600)
    means = sampled.reshape(8, -1).mean(1)
    assert means[0] < 10 and means[-1] > 200 and (np.diff(means) > 10).all(), means  # spread over the video
    with pytest.raises(VideoTooLarge, match="more than 100 frames of 64x48"):  # counted while decoding
        sample_frames(video, max_total_pixels=100 * 64 * 48)


def test_sample_frames_refuses_a_file_that_is_not_a_video():
    with pytest.raises(DescribeError, match="not a readable video"):
        sample_frames(b"GIF89a this is not a video at all" * 10)


# ------------------------------------------------------------------ built-in describer
def test_builtin_describer_reads_every_colour_shape_and_direction_through_mp4():
    describer = get_describer("builtin")
    starts = {"right": (14.0, 32.0), "left": (50.0, 32.0), "down": (32.0, 14.0), "up": (32.0, 50.0)}
    for colour in world.COLOURS:
        for shape, direction in zip(world.SHAPES * 2, ["right", "up", "left", "down", "up", "right"]):
            scene = [motion(colour, shape, direction, *starts[direction])]
            description = describer.describe(through_mp4(render(scene)))
            assert description.attributes == [{"colour": colour, "shape": shape, "direction": direction}], \
                (colour, shape, direction, description.caption)
            assert parse_scene(description.caption) == description.attributes  # captions read back


def test_builtin_describer_finds_two_shapes_and_a_still_one():
    scene = [motion("red", "square", "right", 14.0, 14.0), motion("blue", "circle", "down", 48.0, 20.0, 1.0)]
    found = {(o["colour"], o["shape"], o["direction"]) for o in analyse_scene(through_mp4(render(scene)))}
    assert found == {("red", "square", "right"), ("blue", "circle", "down")}
    still = get_describer("builtin").describe(render([motion(speed=0.0)]))
    assert still.caption == "a red circle standing still"
    empty = get_describer("builtin").describe(np.full((4, 32, 32, 3), 20, dtype=np.uint8))
    assert empty.caption == "an empty dark background" and empty.attributes == []


@pytest.mark.parametrize("question, answer", [
    ("What colour is the shape?", "yellow"),
    ("what shape is it", "triangle"),
    ("Which direction is it moving?", "left"),
    ("How many shapes are there?", "1"),
    ("Is the triangle yellow?", "yes"),
    ("Is it moving to the left?", "yes"),
    ("Is it a blue circle?", "no, it shows a yellow triangle moving to the left"),
])
def test_builtin_describer_answers_attribute_questions(question, answer):
    frames = render([motion("yellow", "triangle", "left", 50.0, 32.0)])
    description = get_describer("builtin").describe(frames, question=question)
    assert description.answer == answer
    assert description.caption == "a yellow triangle moving to the left"


def test_builtin_describer_stops_when_cancelled():
    with pytest.raises(Cancelled):
        get_describer("builtin").describe(render([motion()]), should_cancel=lambda: True)


def test_parse_scene_reads_every_phrasing_of_the_world():
    rng = random.Random(3)
    for i in range(300):
        scene = world.sample_scene(rng, 16, two_shapes_prob=0.5)
        text = world.caption(scene, rng, held_out=i % 2 == 0)
        assert sorted(tuple(o.values()) for o in parse_scene(text)) == \
            sorted((m.colour, m.shape, m.direction) for m in scene), text


# ------------------------------------------------------------------ agreement
def test_attribute_agreement_counts_matching_attributes():
    same = attribute_agreement("a red circle drifting to the left side", "a red circle moving to the left")
    assert same["score"] == 1.0
    wrong_way = attribute_agreement("a red circle drifting to the left side", "a red circle moving to the right")
    assert wrong_way["score"] == pytest.approx(2 / 3, abs=1e-3) and wrong_way["direction"] == 0.0
    two = attribute_agreement("a red circle rising and a blue square falling",
                              "a blue square moving down and a red triangle moving up")
    assert two["score"] == pytest.approx(5 / 6, abs=1e-3) and two["shape"] == 0.5


def test_semantic_agreement_ranks_paraphrases_above_other_scenes():
    prompt = "watch a green square drift to the right side"
    assert semantic_agreement(prompt, prompt) == pytest.approx(1.0, abs=1e-4)
    paraphrase = semantic_agreement(prompt, "a green square moving to the right")
    other = semantic_agreement(prompt, "a white circle moving up")
    assert paraphrase > other + 0.1
    report = prompt_caption_agreement(prompt, "a green square moving to the right")
    assert report["attributes"]["score"] == 1.0 and report["semantic"] == pytest.approx(paraphrase, abs=1e-4)


# ------------------------------------------------------------------ registry + SmolVLM
def test_unknown_describer_is_a_clear_error():
    with pytest.raises(UnknownDescriber, match="unknown describer 'gpt-vision'.*builtin"):
        get_describer("gpt-vision")


def test_describer_configuration_with_a_misspelt_key_is_refused(tmp_path, monkeypatch):
    config = tmp_path / "describers.json"
    config.write_text(json.dumps({"vlm": {"kind": "smolvlm", "path": str(tmp_path), "max_new_token": 5}}))
    monkeypatch.setenv("VIDEO_DESCRIBERS_CONFIG", str(config))
    with pytest.raises(DescribeError, match="unknown keys \\['max_new_token'\\]"):
        get_describer("vlm")


@pytest.fixture(scope="module")
def tiny_smolvlm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smolvlm")
    save_tiny_smolvlm(folder / "checkpoint")
    config = folder / "describers.json"
    config.write_text(json.dumps({"tiny-smolvlm": {"kind": "smolvlm", "path": str(folder / "checkpoint"),
                                                   "device": "cpu", "dtype": "float32", "max_new_tokens": 6}}))
    return config


def test_tiny_random_smolvlm_returns_a_gibberish_caption_through_the_local_checkpoint_path(tiny_smolvlm, monkeypatch):
    from transformers import SmolVLMForConditionalGeneration

    monkeypatch.setenv("VIDEO_DESCRIBERS_CONFIG", str(tiny_smolvlm))
    describer = get_describer("tiny-smolvlm")
    assert isinstance(describer.model, SmolVLMForConditionalGeneration)
    steps = []
    frames = sample_frames(encode_video(render([motion()], frames=20), 8))
    description = describer.describe(frames, progress=lambda step, total: steps.append((step, total)))
    assert isinstance(description.caption, str) and description.caption  # random weights: any words
    assert description.answer is None and description.describer == "tiny-smolvlm"
    assert steps[-1] == (6, 6)
    asked = describer.describe(frames, question="what colour is the circle?")
    assert isinstance(asked.answer, str) and asked.caption == ""


def test_tiny_random_smolvlm_stops_generating_when_cancelled(tiny_smolvlm, monkeypatch):
    monkeypatch.setenv("VIDEO_DESCRIBERS_CONFIG", str(tiny_smolvlm))
    with pytest.raises(Cancelled):
        get_describer("tiny-smolvlm").describe(render([motion()]), should_cancel=lambda: True)


def test_smolvlm_describer_with_a_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    config = tmp_path / "describers.json"
    config.write_text(json.dumps({"absent-vlm": {"kind": "smolvlm", "path": str(tmp_path / "nowhere")}}))
    monkeypatch.setenv("VIDEO_DESCRIBERS_CONFIG", str(config))
    with pytest.raises(DescribeError, match="not a folder holding a checkpoint"):
        get_describer("absent-vlm")
