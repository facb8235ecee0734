"""diffusers backends (LTX-Video T2V+I2V, Wan 2.1 T2V and I2V, CogVideoX) on tiny random checkpoints.

The checkpoints are tiny instances of the real component classes saved as full pipeline folders
(tests/tiny_checkpoints.py); a model configuration file points at them and the models are reached
through exactly the operator's path: config file -> registry -> get_backend -> generate.
CPU only, a few seconds.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from generator import interface, model_config, registry_setup
from generator.interface import Cancelled, GenerationError, GenerationRequest
from generator.model_config import ConfigError, load_config, parse_entry
from tests.support.frames import level_difference
import tiny_checkpoints  # tests/ is on pytest's pythonpath (pyproject.toml)

NAMES = ("tiny-ltx", "tiny-ltx-bf16", "tiny-wan", "tiny-wan-i2v", "tiny-cogvideox")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    for kind in ("ltx", "wan", "wan-i2v", "cogvideox"):
        tiny_checkpoints.save_tiny_checkpoint(kind, str(root / kind))
    small = {"min_size": 32, "max_size": 128}
    config = {
        "tiny-ltx": {"path": "ltx", "pipeline": ["ltx", "ltx-i2v"], "dtype": "float32",
                     "defaults": {"steps": 2, "width": 64, "height": 64, "frames": 9, "fps": 8},
                     "limits": dict(small, max_frames=25),
                     "memory": {"cpu_offload": "model", "vae_tiling": False,
                                "cache": {"type": "first_block", "threshold": 0.05}},
                     "max_sequence_length": 16, "queue": "gpu-ltx"},
        "tiny-ltx-bf16": {"path": "ltx", "pipeline": ["ltx", "ltx-i2v"], "dtype": "bfloat16",
                          "vae_dtype": "float32", "defaults": {"steps": 2, "width": 64, "height": 64, "frames": 9},
                          "limits": dict(small, max_frames=25), "max_sequence_length": 16},
        "tiny-wan": {"path": "wan", "pipeline": "wan", "dtype": "float32",
                     "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9}, "limits": small,
                     "max_sequence_length": 16},
        "tiny-wan-i2v": {"path": "wan-i2v", "pipeline": "wan-i2v", "dtype": "float32",
                         "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9}, "limits": small,
                         "max_sequence_length": 16},
        "tiny-cogvideox": {"path": "cogvideox", "pipeline": "cogvideox", "dtype": "float32",
                           "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9}, "limits": small,
                           "max_sequence_length": 16},
    }
    config_file = root / "models.json"  # relative paths resolve against the config file's folder
    config_file.write_text(json.dumps(config))
    old = os.environ.get("VIDEO_MODELS_CONFIG")
    os.environ["VIDEO_MODELS_CONFIG"] = str(config_file)
    try:
        assert sorted(registry_setup.register_models(strict=True)) == sorted(NAMES)  # as the service starts
        yield config_file
    finally:
        for name in NAMES:
            backend = interface._resident.pop(name, None)
            if backend is not None:
                backend.unload()
            interface._factories.pop(name, None)
            interface._infos.pop(name, None)
        if old is None:
            os.environ.pop("VIDEO_MODELS_CONFIG", None)
        else:
            os.environ["VIDEO_MODELS_CONFIG"] = old


def _start_image(h=64, w=64):
    """A bright, saturated diagonal pattern: far from what random weights make on their own."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 255
    img[..., 1] = ((xx + yy) % 32 < 16) * 255
    return img


def test_configured_models_are_listed_with_their_limits(models):
    infos = {m.name: m for m in interface.list_models()}
    assert "builtin" in infos and set(NAMES) <= set(infos)
    ltx = infos["tiny-ltx"]
    assert (ltx.frame_multiple, ltx.frame_offset, ltx.size_multiple) == (8, 1, 32)
    assert ltx.supports_image and ltx.extra["queue"] == "gpu-ltx" and not ltx.extra["requires_image"]
    assert ltx.as_dict()["frame_rule"].startswith("8k+1")
    wan = infos["tiny-wan"]
    assert (wan.frame_multiple, wan.frame_offset, wan.size_multiple) == (4, 1, 16) and not wan.supports_image
    assert wan.extra["queue"] == "tiny-wan"
    assert infos["tiny-wan-i2v"].extra["requires_image"]
    assert (infos["tiny-cogvideox"].frame_multiple, infos["tiny-cogvideox"].size_multiple) == (8, 16)


def test_ltx_frames_progress_previews_and_frame_rule(models):
    backend = interface.get_backend("tiny-ltx")
    assert backend.applied["cpu_offload"] == "none"  # guarded: no accelerator on this host
    assert backend.applied.get("cache") == "first_block"
    calls = []
    result = backend.generate(GenerationRequest("a red ball moving right", num_frames=17, width=96, height=64,
                                                steps=3, seed=1),
                              progress=lambda step, total, preview: calls.append((step, total, preview)))
    assert result.frames.shape == (17, 64, 96, 3) and result.frames.dtype == np.uint8
    assert [(s, t) for s, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    for _, _, preview in calls:
        assert isinstance(preview, np.ndarray) and preview.dtype == np.uint8
        assert preview.ndim == 4 and preview.shape[0] == 3 and preview.shape[-1] == 3  # 17 frames -> 3 latent

    problems = backend.info.problems(10, 64, 64, 2, 3.0)
    assert problems and "8k+1" in problems[0][1]
    with pytest.raises(GenerationError, match="8k\\+1"):
        backend.generate(GenerationRequest("x", num_frames=10))
    with pytest.raises(GenerationError, match="multiple of 32"):
        backend.generate(GenerationRequest("x", width=80))


def test_configured_dtypes_hold_for_a_text_and_image_pair(models):
    """A T2V+I2V pair shares components; loading the second pipeline must not recast them (diffusers 0.42's
    from_pipe casts to float32 by default, which made a bf16 LTX-Video 8x slower on an H200)."""
    backend = interface.get_backend("tiny-ltx-bf16")
    backend.load()
    for kind, pipe in backend.pipes.items():
        dtypes = {name: {p.dtype for p in getattr(pipe, name).parameters()}
                  for name in ("transformer", "text_encoder", "vae")}
        assert dtypes == {"transformer": {torch.bfloat16}, "text_encoder": {torch.bfloat16},
                          "vae": {torch.float32}}, kind
    assert backend.pipes["ltx"].transformer is backend.pipes["ltx-i2v"].transformer
    result = backend.generate(GenerationRequest("a red ball moving right", seed=1), progress=lambda *a: None)
    assert result.frames.shape == (9, 64, 64, 3) and result.frames.std() > 0


def test_cancel_interrupts_and_backend_keeps_serving(models):
    backend = interface.get_backend("tiny-ltx")
    steps = []
    with pytest.raises(Cancelled):
        backend.generate(GenerationRequest("a cat", steps=4, seed=3),
                         progress=lambda s, t, p: steps.append(s), should_cancel=lambda: len(steps) >= 1)
    assert steps == [1]
    again = backend.generate(GenerationRequest("a cat", steps=2, seed=3))
    assert again.frames.shape == (9, 64, 64, 3)


def test_same_seed_same_frames(models):
    backend = interface.get_backend("tiny-ltx")
    a = backend.generate(GenerationRequest("a blue square", seed=7)).frames
    b = backend.generate(GenerationRequest("a blue square", seed=7)).frames
    c = backend.generate(GenerationRequest("a blue square", seed=8)).frames
    assert np.array_equal(a, b)
    assert level_difference(a, c) > 1.0, level_difference(a, c)  # measured: 61 levels


# Why not "the I2V first frame is closer to the start image than a T2V frame": with random weights
# the decoder maps every latent to nearly the same picture (measured on these tiny checkpoints over
# 3 seeds x 4 images: I2V/T2V distances equal within 0.6/255, either side), so that comparison
# is a coin flip. What is checkable without trained weights: the start image is written into
# the conditioned latent frame and kept there through denoising, and it changes the output.
def test_ltx_image_to_video_uses_the_start_image(models):
    backend = interface.get_backend("tiny-ltx")
    image, other = _start_image(), np.full((64, 64, 3), 30, np.uint8)

    def run(img, seed=5):
        previews = []
        result = backend.generate(GenerationRequest("a red ball", seed=seed, steps=3, image=img),
                                  progress=lambda s, t, p: previews.append(p))
        return result.frames, previews

    i2v, i2v_previews = run(image)
    t2v, t2v_previews = run(None)
    assert i2v.shape == t2v.shape == (9, 64, 64, 3)
    # the conditioned latent frame 0 is the start image's encoding and never moves ...
    assert all(np.array_equal(p[0], i2v_previews[0][0]) for p in i2v_previews)
    # ... while text-to-video denoises it like every other frame (measured differences: 5, 34, 23, 17 levels)
    assert level_difference(t2v_previews[0][0], t2v_previews[-1][0]) > 1.0, \
        level_difference(t2v_previews[0][0], t2v_previews[-1][0])
    assert level_difference(i2v_previews[0][0], t2v_previews[0][0]) > 1.0, \
        level_difference(i2v_previews[0][0], t2v_previews[0][0])
    # same seed + same image -> same video; another image -> another video
    again, _ = run(image)
    assert np.array_equal(again, i2v)
    changed, changed_previews = run(other)
    assert level_difference(changed[0], i2v[0]) > 1.0, level_difference(changed[0], i2v[0])
    assert level_difference(changed_previews[0][0], i2v_previews[0][0]) > 1.0, \
        level_difference(changed_previews[0][0], i2v_previews[0][0])


def test_wan_text_and_image_to_video(models):
    t2v_backend = interface.get_backend("tiny-wan")
    calls = []
    t2v = t2v_backend.generate(GenerationRequest("a dog", num_frames=13, seed=2),
                               progress=lambda s, t, p: calls.append((s, t, p)))
    assert t2v.frames.shape == (13, 32, 32, 3)
    assert [(s, t) for s, t, _ in calls] == [(1, 2), (2, 2)] and calls[0][2].shape[0] == 4
    with pytest.raises(GenerationError, match="4k\\+1"):
        t2v_backend.generate(GenerationRequest("a dog", num_frames=12))
    with pytest.raises(GenerationError, match="text-to-video only"):
        t2v_backend.generate(GenerationRequest("a dog", image=_start_image(32, 32)))

    i2v_backend = interface.get_backend("tiny-wan-i2v")
    assert not t2v_backend.pipes  # switching models unloaded the previous one
    with pytest.raises(GenerationError, match="needs a start image"):
        i2v_backend.generate(GenerationRequest("a dog"))
    image = _start_image(32, 32)
    i2v = i2v_backend.generate(GenerationRequest("a dog", num_frames=13, seed=2, image=image))
    assert i2v.frames.shape == (13, 32, 32, 3)
    # Wan 2.1 I2V conditions through extra transformer channels + CLIP image tokens, so with random
    # weights the only checkable effect is that the image changes the result (see the LTX test).
    other = i2v_backend.generate(GenerationRequest("a dog", num_frames=13, seed=2,
                                                   image=np.full((32, 32, 3), 30, np.uint8)))
    assert level_difference(other.frames, i2v.frames) > 1.0, level_difference(other.frames, i2v.frames)  # 31


def test_cogvideox_text_to_video(models):
    backend = interface.get_backend("tiny-cogvideox")
    calls = []
    result = backend.generate(GenerationRequest("the sea at night", num_frames=9, seed=4),
                              progress=lambda s, t, p: calls.append((s, t, p)))
    assert result.frames.shape == (9, 32, 32, 3) and result.frames.dtype == np.uint8
    assert [(s, t) for s, t, _ in calls] == [(1, 2), (2, 2)] and calls[0][2] is not None


def test_switching_models_keeps_one_resident(models):
    first = interface.get_backend("tiny-cogvideox")
    assert first.pipes
    second = interface.get_backend("tiny-ltx")
    assert not first.pipes and first.primary is None  # unloaded
    assert list(interface._resident) == ["tiny-ltx"] and second.pipes


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="vae_tilling"):
        parse_entry("m", {"path": "/x", "pipeline": "ltx", "memory": {"vae_tilling": True}})
    with pytest.raises(ConfigError, match="own entry"):
        parse_entry("m", {"path": "/x", "pipeline": ["cogvideox", "cogvideox-i2v"]})
    with pytest.raises(ConfigError, match="unknown pipeline kind"):
        parse_entry("m", {"path": "/x", "pipeline": "sora"})
    with pytest.raises(ConfigError, match="8k\\+1"):
        parse_entry("m", {"path": "/x", "pipeline": "ltx", "defaults": {"frames": 120}})
    with pytest.raises(ConfigError, match="Hub"):
        parse_entry("m", {"path": "/x", "pipeline": "wan", "memory": {"attention_backend": "flash_hub"}})
    toml = tmp_path / "models.toml"
    toml.write_text('[ltx]\npath = "ltx"\npipeline = ["ltx", "ltx-i2v"]\ndtype = "bfloat16"\n'
                    '[ltx.defaults]\nframes = 161\n')
    cfg = load_config(str(toml))["ltx"]
    assert cfg.path == str(tmp_path / "ltx") and cfg.kinds == ("ltx", "ltx-i2v")
    assert cfg.model_info().default_frames == 161
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ok": {"path": "/x", "pipeline": "wan"}, "broken": {"pipeline": "wan"}}))
    assert list(load_config(str(bad), strict=False)) == ["ok"]
    with pytest.raises(ConfigError, match="model 'broken': path: 'path' is required"):
        load_config(str(bad))


def test_published_json_schema_is_the_parsers():
    """docs/models.schema.json is what `python -m generator.model_config --schema` prints (regenerate it
    with that command when the entry models change)."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                           "models.schema.json")) as fh:
        assert json.load(fh) == model_config.json_schema()


@pytest.mark.parametrize("entry, field, words", [
    ({"defaults": {"steps": "ten"}}, "defaults.steps", "valid integer, got 'ten'"),
    ({"dtype": "float8"}, "dtype", "'bfloat16', 'float16' or 'float32'"),
    ({"memory": {"vae_tilling": True}}, "memory.vae_tilling", "unknown key"),
    ({"memory": {"cache": {"type": "first_block", "treshold": 0.1}}}, "memory.cache.treshold", "unknown key"),
    ({"pipeline": "sora"}, "pipeline", "unknown pipeline kind 'sora'"),
    ({"path": None}, "path", "'path' is required"),
    ({"path": "does-not-exist"}, "path", "does not exist"),
    ({"upsampler": "."}, "upsampler", "has no model_index.json"),
])
def test_a_bad_entry_names_the_model_and_field(tmp_path, entry, field, words):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model_index.json").write_text("{}")
    raw = {k: v for k, v in {"path": "ckpt", "pipeline": "ltx", **entry}.items() if v is not None}
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"good": {"path": "ckpt", "pipeline": "wan"}, "bad": raw}))
    good, bad = model_config.validate_config(str(path))
    assert list(good) == ["good"] and [(e.model, e.field) for e in bad] == [("bad", field)]
    assert words in bad[0].message and str(bad[0]).startswith(f"model 'bad': {field}: ")
