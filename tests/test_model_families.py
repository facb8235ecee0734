"""Every model family and task of generator.model_config on tiny random checkpoints of the real
diffusers / transformers classes (tests/tiny_checkpoints.py), configured like an operator's
models.json and generated through DiffusersBackend: frames of the requested count and size,
progress per step, cancel between steps, the pipeline class each task runs, LTX-2's sound track
through encode_video -> MP4 -> PyAV, Wan 2.2's two experts, video-to-video strength, few-step
presets and the configuration validator. CPU only.
"""
from __future__ import annotations

import functools
import io
import json
import os

import av
import numpy as np
import pytest
import torch

import tiny_checkpoints  # (tests/ is on pytest's pythonpath)
from tiny_checkpoints import one_torch_thread  # noqa: F401  (the fixture)

from generator import model_config as mc
from generator.diffusers_backend import DiffusersBackend
from generator.encode import decode_audio, decode_video, encode_video
from generator.interface import Cancelled, GenerationError, GenerationRequest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"min_size": 32, "max_size": 128}
DEFAULTS = {"steps": 2, "width": 32, "height": 32, "frames": 9, "fps": 8}
# model -> (checkpoint builder, pipeline kinds, extra entry keys)
MODELS = {
    "tiny-ltx": ("ltx", ["ltx", "ltx-i2v", "ltx-condition"], {}),
    "tiny-ltx2": ("ltx2", ["ltx2", "ltx2-i2v", "ltx2-condition", "ltx2-ic-lora"], {}),
    "tiny-ltx2-hdr": ("ltx2", "ltx2-hdr", {}),
    "tiny-ltx2-dfr": ("ltx2-dfr", "ltx2-dfr", {"preset": "ltx2-distilled", "defaults": {**DEFAULTS, "steps": 8}}),
    "tiny-hunyuan15": ("hunyuanvideo1.5", "hunyuanvideo1.5", {}),
    "tiny-hunyuan15-i2v": ("hunyuanvideo1.5-i2v", "hunyuanvideo1.5-i2v", {}),
    "tiny-wan22-ti2v": ("wan2.2-ti2v", ["wan2.2", "wan2.2-i2v"], {}),
    "tiny-wan22-a14b": ("wan2.2-a14b", ["wan", "wan-v2v"], {}),
    "tiny-vace": ("wan-vace", "wan-vace", {}),
    "tiny-skyreels": ("skyreels-v2", ["skyreels-v2", "skyreels-v2-i2v", "skyreels-v2-v2v"], {}),
    "tiny-lucy-edit": ("lucy-edit", "lucy-edit", {}),
    "tiny-sana-video": ("sana-video", ["sana-video", "sana-video-i2v"], {}),
    "tiny-motif-video": ("motif-video", ["motif-video", "motif-video-i2v"], {}),
    "tiny-helios": ("helios", "helios", {"pipeline_kwargs": {"num_latent_frames_per_chunk": 3}}),  # 9-frame chunks
    # three resolution stages: sizes are multiples of 64
    "tiny-helios-pyramid": ("helios-pyramid", "helios-pyramid", {"defaults": {**DEFAULTS, "width": 64, "height": 64}}),
    "tiny-framepack": ("framepack", "framepack", {}),
    # sections of 2 latent frames (8 frames): a 17-frame clip takes two
    "tiny-framepack-f1": ("framepack", "framepack-f1", {"pipeline_kwargs": {"latent_window_size": 2}}),
    # segments of 9 frames: a 17-frame clip takes two, the second continuing the first's last frame
    "tiny-wan-animate": ("wan-animate", "wan-animate", {"pipeline_kwargs": {"segment_frame_length": 9}}),
    "tiny-chronoedit": ("chronoedit", "chronoedit", {"defaults": {**DEFAULTS, "frames": 5}}),  # the image and its edit
    "tiny-kandinsky6": ("kandinsky6", "kandinsky6", {}),
}
# (model, task, pipeline class it runs, frames, steps, strength)
CASES = [
    ("tiny-ltx", "t2v", "LTXPipeline", 9, 2, None),
    ("tiny-ltx", "i2v", "LTXImageToVideoPipeline", 9, 2, None),
    ("tiny-ltx", "condition", "LTXConditionPipeline", 17, 2, None),
    ("tiny-ltx", "v2v", "LTXConditionPipeline", 9, 4, 0.5),
    ("tiny-ltx2", "t2v", "LTX2Pipeline", 9, 2, None),
    ("tiny-ltx2", "i2v", "LTX2ImageToVideoPipeline", 9, 2, None),
    ("tiny-ltx2", "condition", "LTX2ConditionPipeline", 17, 2, None),
    ("tiny-ltx2", "control", "LTX2InContextPipeline", 9, 2, None),  # the reference video the clip follows
    ("tiny-ltx2-hdr", "control", "LTX2HDRPipeline", 9, 2, None),  # the reference video re-made in HDR
    ("tiny-ltx2-dfr", "t2v", "LTX2DFRPipeline", 9, 2, None),  # 2 steps: sigmas of its own, not the distilled 8
    ("tiny-ltx2-dfr", "i2v", "LTX2DFRPipeline", 9, 8, None),
    ("tiny-ltx2-dfr", "condition", "LTX2DFRPipeline", 17, 8, None),
    ("tiny-hunyuan15", "t2v", "HunyuanVideo15Pipeline", 9, 2, None),
    ("tiny-hunyuan15-i2v", "i2v", "HunyuanVideo15ImageToVideoPipeline", 9, 2, None),
    ("tiny-wan22-ti2v", "t2v", "WanPipeline", 9, 2, None),
    ("tiny-wan22-ti2v", "i2v", "WanImageToVideoPipeline", 9, 2, None),
    ("tiny-wan22-a14b", "t2v", "WanPipeline", 9, 2, None),
    ("tiny-wan22-a14b", "v2v", "WanVideoToVideoPipeline", 9, 4, 0.5),
    ("tiny-vace", "t2v", "WanVACEPipeline", 9, 2, None),
    ("tiny-vace", "i2v", "WanVACEPipeline", 9, 2, None),
    ("tiny-vace", "v2v", "WanVACEPipeline", 9, 2, 0.5),
    ("tiny-vace", "condition", "WanVACEPipeline", 17, 2, None),
    ("tiny-skyreels", "t2v", "SkyReelsV2DiffusionForcingPipeline", 9, 2, None),
    ("tiny-skyreels", "i2v", "SkyReelsV2DiffusionForcingImageToVideoPipeline", 9, 2, None),
    ("tiny-skyreels", "condition", "SkyReelsV2DiffusionForcingVideoToVideoPipeline", 17, 2, None),
    ("tiny-lucy-edit", "v2v", "LucyEditPipeline", 9, 2, 0.5),
    ("tiny-sana-video", "t2v", "SanaVideoPipeline", 9, 2, None),
    ("tiny-sana-video", "i2v", "SanaImageToVideoPipeline", 9, 2, None),
    ("tiny-motif-video", "t2v", "MotifVideoPipeline", 9, 2, None),
    ("tiny-motif-video", "i2v", "MotifVideoImage2VideoPipeline", 9, 2, None),
    ("tiny-helios", "t2v", "HeliosPipeline", 9, 2, None),
    ("tiny-helios", "i2v", "HeliosPipeline", 9, 2, None),
    ("tiny-helios", "condition", "HeliosPipeline", 9, 2, None),
    ("tiny-helios", "t2v", "HeliosPipeline", 21, 2, None),  # three chunks of 9 frames, cut to 21
    ("tiny-helios-pyramid", "t2v", "HeliosPyramidPipeline", 9, 3, None),  # one step per stage
    ("tiny-helios-pyramid", "i2v", "HeliosPyramidPipeline", 9, 3, None),
    ("tiny-helios-pyramid", "condition", "HeliosPyramidPipeline", 9, 3, None),
    ("tiny-framepack", "i2v", "HunyuanVideoFramepackPipeline", 9, 2, None),
    ("tiny-framepack-f1", "i2v", "HunyuanVideoFramepackPipeline", 17, 2, None),  # two sections
    ("tiny-wan-animate", "animate", "WanAnimatePipeline", 9, 2, None),
    ("tiny-wan-animate", "animate", "WanAnimatePipeline", 17, 2, None),  # two segments
    ("tiny-chronoedit", "i2v", "ChronoEditPipeline", 5, 2, None),  # the image and its edit
    ("tiny-kandinsky6", "t2v", "Kandinsky6TI2VAPipeline", 9, 2, None),
    ("tiny-kandinsky6", "i2v", "Kandinsky6TI2VAPipeline", 9, 2, None),
]


def entry(builder, kinds, **extra) -> dict:
    return {"path": tiny_checkpoints.cached_checkpoint(builder), "pipeline": kinds, "dtype": "float32",
            "defaults": dict(DEFAULTS), "limits": dict(SMALL, max_frames=33), "max_sequence_length": 16, **extra}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """The operator's path: a models.json naming the tiny checkpoints, read by load_config."""
    path = tmp_path_factory.mktemp("families") / "models.json"
    path.write_text(json.dumps({name: entry(b, k, **x) for name, (b, k, x) in MODELS.items()}))
    return mc.load_config(str(path))


@pytest.fixture(scope="module")
def backends(configs):
    made = {}
    yield lambda name: made.setdefault(name, DiffusersBackend(configs[name]))
    made.clear()  # not unload() each: its gc.collect() over this heap costs ~0.3 s a backend


def pattern(seed: int, frames: int = 9, size: int = 32) -> np.ndarray:
    """A bright, saturated moving pattern, frames x size x size x 3 (one frame when frames == 0). Its
    stripes' width depends on the seed, so two seeds differ in their mean colour too: LTX's VAE
    compresses 32x32 frames into one latent pixel, which sees little more than the mean."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    colour = rng.integers(0, 256, 3)
    width = 3 + (5 * seed) % 11
    out = np.stack([np.where(((xx + 3 * t + yy * seed) % 16 < width)[..., None], colour, 255 - colour)
                    for t in range(max(frames, 1))]).astype(np.uint8)
    return out[0] if frames == 0 else out


def inputs(task: str, frames: int, seed: int, strength, size: int = 32) -> dict:
    if task == "i2v":
        return {"image": pattern(seed, 0, size)}
    if task == "condition":
        return {"start_frames": pattern(seed, 9, size)}
    if task == "v2v":
        return {"video": pattern(seed, frames, size), "strength": strength}
    if task == "control":  # a reference video (depth, pose...): no strength
        return {"video": pattern(seed, frames, size)}
    if task == "animate":  # the character and the driving video both change with the seed
        return {"image": pattern(seed, 0, size), "video": pattern(seed + 10, frames, size)}
    return {}


@pytest.mark.parametrize("name, task, cls, frames, steps, strength", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_family_task_generates_through_the_backend(backends, name, task, cls, frames, steps, strength):
    backend = backends(name)
    assert task in backend.info.extra["tasks"]
    size = backend.info.default_width
    calls = []
    req = GenerationRequest("a red ball moving right", num_frames=frames, steps=steps, seed=3,
                            **inputs(task, frames, 1, strength, size))
    result = backend.generate(req, progress=lambda s, t, p: calls.append((s, t, p)))
    assert result.frames.shape == (frames, size, size, 3) and result.frames.dtype == np.uint8
    assert backend.calls[-1] == (cls, task)
    expected_steps = int(steps * strength) if task == "v2v" and name not in ("tiny-vace", "tiny-lucy-edit") else steps
    # one pipeline call: its chunks' (sections') steps
    expected_steps *= {"tiny-helios": -(-frames // 9), "tiny-framepack-f1": -(-(frames - 1) // 8),
                       "tiny-wan-animate": -(-(frames - 1) // 8)}.get(name, 1)
    assert [(s, t) for s, t, _ in calls] == [(i, expected_steps) for i in range(1, expected_steps + 1)]
    assert all(p is not None and p.dtype == np.uint8 and p.shape[-1] == 3 for _, _, p in calls)
    if task != "t2v":  # the input decides the result: another one, another video; the same, the same
        other = backend.generate(GenerationRequest(req.prompt, num_frames=frames, steps=steps, seed=3,
                                                   **inputs(task, frames, 2, strength, size)))
        # by whole grey levels on average: float noise (CPU rounding) moves a few pixels by one level
        assert np.abs(other.frames.astype(np.int16) - result.frames).mean() > 1.0
        assert np.array_equal(backend.generate(req).frames, result.frames)


@pytest.mark.parametrize("name", list(MODELS))
def test_cancel_interrupts_between_steps_and_the_backend_serves_on(backends, name):
    backend = backends(name)
    first_task = backend.info.extra["tasks"][0]
    req = GenerationRequest("a cat", steps=4, seed=5, **inputs(first_task, 9, 4, 0.5, backend.info.default_width))
    steps = []
    with pytest.raises(Cancelled):
        backend.generate(req, progress=lambda s, t, p: steps.append(s), should_cancel=lambda: len(steps) >= 1)
    assert steps == [1]
    size = backend.info.default_width
    assert backend.generate(req).frames.shape == (backend.info.default_frames, size, size, 3)


def test_model_info_follows_the_family(configs):
    infos = {name: cfg.model_info() for name, cfg in configs.items()}
    assert infos["tiny-ltx2"].has_audio and not infos["tiny-ltx"].has_audio
    assert not infos["tiny-ltx2-hdr"].has_audio  # the HDR pipeline discards the sound it runs
    assert infos["tiny-ltx"].supports_video and infos["tiny-vace"].supports_video
    assert infos["tiny-wan22-a14b"].supports_video and not infos["tiny-wan22-a14b"].supports_image
    assert infos["tiny-ltx2"].supports_video and not infos["tiny-skyreels"].supports_video  # control
    assert infos["tiny-ltx2"].extra["tasks"] == ["t2v", "i2v", "condition", "control"]
    assert "reference video" in infos["tiny-ltx2"].extra["task_inputs"]["control"]
    assert infos["tiny-hunyuan15-i2v"].extra["requires_image"] and not infos["tiny-hunyuan15"].supports_image
    assert infos["tiny-ltx"].extra["tasks"] == ["t2v", "i2v", "v2v", "condition"]
    wan22 = infos["tiny-wan22-ti2v"]
    assert (wan22.size_multiple, wan22.frame_multiple, wan22.frame_offset) == (32, 4, 1)


def test_ltx2_sound_track_survives_the_mp4(backends):
    backend = backends("tiny-ltx2")
    result = backend.generate(GenerationRequest("a dog", num_frames=17, seed=2))
    rate = result.audio_sample_rate
    assert rate == 8000 and result.audio.dtype == np.float32 and result.audio.shape == (17 * rate // 8, 2)
    assert np.abs(result.audio).max() <= 1.0 and result.audio.std() > 1e-3  # a signal, not silence
    data = encode_video(result.frames, result.fps, audio=result.audio, sample_rate=rate)
    frames, fps = decode_video(data)
    assert frames.shape == (17, 32, 32, 3) and fps == pytest.approx(8)
    with av.open(io.BytesIO(data)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert sound.codec_context.name == "aac" and sound.channels == 2
        assert float(sound.duration * sound.time_base) == pytest.approx(float(video.duration * video.time_base))
    assert data.find(b"moov") < data.find(b"mdat")  # faststart kept
    track, decoded_rate = decode_audio(data)
    assert decoded_rate == rate and 0 <= len(track) - len(result.audio) < 1024  # AAC frames are 1024 samples
    # what comes back is the same sound (AAC is lossy): correlation over the whole track
    n = len(result.audio)
    assert np.corrcoef(track[:n].ravel(), result.audio.ravel())[0, 1] > 0.9


def test_ltx2_latent_upsampler_is_the_upscale_post_step_and_keeps_the_sound():
    """An LTX-2 entry whose `upsampler` is the upsampler model's folder (LTX-2 ships it as its checkpoint's
    latent_upsampler sub-folder, not as a pipeline): a job's `upscale` 2 is one pass of LTX2LatentUpsamplePipeline
    over the whole clip (4 would be two), in latent space (far from a resize of the same clip), and the clip keeps
    its sound track."""
    from generator import longvideo as lv
    from generator.postprocess import resize_frames

    model_folder = os.path.join(tiny_checkpoints.cached_checkpoint("ltx2-upsampler"), "latent_upsampler")
    cfg = mc.parse_entry("tiny-ltx2-up", entry("ltx2", ["ltx2", "ltx2-i2v"], upsampler=model_folder))
    backend = DiffusersBackend(cfg)
    try:
        assert backend.latent_upscale_factors == (2, 4) and cfg.model_info().extra["upsampler"]
        base = backend.generate(GenerationRequest("a dog", seed=2))
        passes = []
        hook = backend.upsampler.latent_upsampler.register_forward_pre_hook(lambda *a: passes.append(1))
        try:
            x2 = lv.run_job(backend, GenerationRequest("a dog", seed=2), lv.LongVideoOptions(upscale=2))
        finally:
            hook.remove()
        assert x2.frames.shape == (9, 64, 64, 3) and passes == [1]
        assert np.array_equal(x2.audio, base.audio) and x2.audio_sample_rate == base.audio_sample_rate
        assert np.abs(resize_frames(base.frames, (64, 64)).astype(np.int16) - x2.frames).mean() > 10  # measured 47
    finally:
        backend.unload()


def test_ltx2_dfr_makes_upscale_and_interpolate_itself_from_its_keyframe_slots(backends):
    """An ltx2-dfr entry with an `upsampler` and a `temporal_upsampler` (LTX-2.5's composed recipe): a job's
    `upscale` 2 is a second DFR pass at twice the size from the upsampled latents and slots, its `interpolate` 4
    two LTX2DFRTemporalRefinePipeline rounds ((T - 1) x k + 1 frames at k x the fps); the sound is the
    first pass's, progress counts every pass's steps, and the clips are far from the generic post-steps over the
    plain clip (resize, optical flow). Extended jobs and factors the recipe cannot make (3) take the generic ones."""
    from generator import longvideo as lv
    from generator.postprocess import resize_frames

    folder = tiny_checkpoints.cached_checkpoint("ltx2-temporal-upsampler")
    name, (builder, kinds, extra) = "tiny-ltx2-dfr", MODELS["tiny-ltx2-dfr"]
    cfg = mc.parse_entry("tiny-ltx2-dfr-1080p", entry(builder, kinds, temporal_upsampler=folder, **extra,
                                                      upsampler=tiny_checkpoints.cached_checkpoint("ltx2-upsampler")),
                         check_paths=True)
    assert cfg.model_info().extra["native_factors"] == {"upscale": [2], "interpolate": [2, 4]}
    assert backends(name).info.extra["native_factors"] == {"upscale": [], "interpolate": []}
    backend = DiffusersBackend(cfg)
    try:
        req = GenerationRequest("a red ball moving right", seed=3)
        plain = backends(name).generate(req)
        steps = []
        x4 = lv.run_job(backend, req, lv.LongVideoOptions(interpolate=4),
                        progress=lambda s, t, p: steps.append((s, t)))
        assert [c for c, _ in backend.calls] == ["LTX2DFRPipeline"] + ["LTX2DFRTemporalRefinePipeline"] * 2
        assert x4.frames.shape == (33, 32, 32, 3) and x4.fps == 32.0
        assert steps == [(s, 20) for s in range(1, 21)]  # 8 DFR steps, then 4 on each tile: 1, then 2
        assert x4.audio_sample_rate == plain.audio_sample_rate and len(x4.audio) == round(33 / 32 * 8000)
        assert np.abs(lv.interpolate(plain.frames, 4).astype(np.int16) - x4.frames).mean() > 5
        backend.calls.clear()
        steps.clear()
        big = lv.run_job(backend, req, lv.LongVideoOptions(upscale=2), progress=lambda s, t, p: steps.append((s, t)))
        assert [c for c, _ in backend.calls] == ["LTX2DFRPipeline"] * 2 and steps == [(s, 11) for s in range(1, 12)]
        assert big.frames.shape == (9, 64, 64, 3) and big.fps == 8.0
        np.testing.assert_allclose(big.audio, plain.audio, atol=1e-5)  # the first pass's sound, as without it
        assert np.abs(resize_frames(plain.frames, (64, 64)).astype(np.int16) - big.frames).mean() > 5
        backend.calls.clear()  # (both at once: tests/test_service_families.py)
        x3 = lv.run_job(backend, req, lv.LongVideoOptions(interpolate=3))
        assert x3.frames.shape == (25, 32, 32, 3) and [c for c, _ in backend.calls] == ["LTX2DFRPipeline"]
    finally:
        backend.unload()


def test_ltx2_diffusion_decoder_decodes_the_video_and_keeps_the_sound(backends):
    """An LTX-2 entry whose `decoder` is a LTX2VideoDiffusionDecodePipeline folder: the pipeline returns latents,
    the diffusion decoder makes the frames (far from the VAE's: a random decoder, not float noise), seeded by the
    job's seed (the same seed, the same video); the sound track is decoded as without it. The decoder model's
    folder alone decodes the same; with the latent upsampler too, an upscale pass decodes through the decoder."""
    folder = tiny_checkpoints.cached_checkpoint("ltx2-decoder")
    up = os.path.join(tiny_checkpoints.cached_checkpoint("ltx2-upsampler"), "latent_upsampler")
    cfg = mc.parse_entry("tiny-ltx2-dd", entry("ltx2", ["ltx2", "ltx2-condition"], decoder=folder, upsampler=up),
                         check_paths=True)
    assert cfg.model_info().extra["decoder"] and cfg.decoder == folder
    backend = DiffusersBackend(cfg)
    model_form = DiffusersBackend(mc.parse_entry("tiny-ltx2-dd-model", entry(
        "ltx2", "ltx2", decoder=os.path.join(folder, "diffusion_decoder")), check_paths=True))
    vae_upscale = DiffusersBackend(mc.parse_entry("tiny-ltx2-vae-up", entry("ltx2", "ltx2", upsampler=up)))
    try:
        req = GenerationRequest("a dog", seed=2)
        steps = []
        result = backend.generate(req, progress=lambda s, t, p: steps.append((s, t, p is not None)))
        assert result.frames.shape == (9, 32, 32, 3) and result.frames.dtype == np.uint8
        assert steps == [(1, 2, True), (2, 2, True)]  # previews as without the decoder
        plain = backends("tiny-ltx2").generate(req)
        assert np.abs(result.frames.astype(np.int16) - plain.frames).mean() > 5  # measured 82
        assert result.audio_sample_rate == 8000 and result.audio.shape == (9 * 1000, 2)
        np.testing.assert_allclose(result.audio, plain.audio, atol=1e-5)  # the same latents, the same decoding
        assert np.array_equal(backend.generate(req).frames, result.frames)
        # the decoder denoises from noise drawn from the job's seed: another seed, other pixels from one latent;
        # the model folder alone decodes as its pipeline folder (small latents: the decodes cost little)
        latents = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        model_form.load()
        first = backend.adapter.decode_video(latents, 1)
        assert first.shape == (3, 8, 8, 3) and np.array_equal(model_form.adapter.decode_video(latents, 1), first)
        assert np.abs(first - backend.adapter.decode_video(latents, 2)).mean() > 0.02
        # an upscale pass: latent upsampler, then the diffusion decoder (8x8 -> 16x16 keeps the decode cheap)
        small = result.frames[:, ::4, ::4]
        passes = []
        hook = backend.decoder.diffusion_decoder.decoder.register_forward_pre_hook(lambda *a: passes.append(1))
        try:
            x2 = backend.upscale_video(small, 2)
        finally:
            hook.remove()
        assert x2.shape == (9, 16, 16, 3) and passes == [1]
        assert np.abs(x2.astype(np.int16) - vae_upscale.upscale_video(small, 2)).mean() > 5
    finally:
        for b in (backend, model_form, vae_upscale):
            b.unload()


def test_a_diffusion_decoder_is_checked_at_start_up(tmp_path):
    """A `decoder` folder that is missing or holds neither a model_index.json nor a config.json is reported
    at start-up naming the entry and the field; a family without a diffusion decoder refuses one."""
    path = tmp_path / "models.json"
    (tmp_path / "empty").mkdir()
    good = entry("ltx2", "ltx2")
    path.write_text(json.dumps({"good": good, "lost": {**good, "decoder": "no-such-decoder"},
                                "empty": {**good, "decoder": "empty"}}))
    configs, errors = mc.validate_config(str(path))
    assert list(configs) == ["good"] and not configs["good"].model_info().extra["decoder"]
    assert [(e.model, e.field) for e in errors] == [("lost", "decoder"), ("empty", "decoder")]
    assert "no-such-decoder does not exist" in errors[0].message
    assert "has no model_index.json or config.json" in errors[1].message
    for kinds in ("ltx", "wan"):
        with pytest.raises(mc.ConfigError, match="has no diffusion decoder") as err:
            mc.parse_entry("m", {"path": "/models/x", "pipeline": kinds, "decoder": "d"})
        assert (err.value.model, err.value.field) == ("m", "decoder")


def test_kandinsky6_sr_is_the_upscale_post_step_and_keeps_the_sound():
    """A Kandinsky 6 entry with a Kandinsky6SRPipeline `upsampler`: a job's `upscale` 2 is one super-resolution
    call (its own VAE), the same for the same clip, and the sound track is kept."""
    from generator import longvideo as lv

    cfg = mc.parse_entry("tiny-k6-sr", entry("kandinsky6", "kandinsky6",
                                             upsampler=tiny_checkpoints.cached_checkpoint("kandinsky6-sr")))
    backend = DiffusersBackend(cfg)
    try:
        base = backend.generate(GenerationRequest("a dog", seed=2))
        encoded = []  # the SR pipeline encodes the whole low-resolution video once per call
        encode = backend.upsampler.encode_video
        backend.upsampler.encode_video = lambda video: encoded.append(video.shape) or encode(video)
        x2 = lv.run_job(backend, GenerationRequest("a dog", seed=2), lv.LongVideoOptions(upscale=2))
        assert x2.frames.shape == (9, 64, 64, 3) and len(encoded) == 1
        assert backend.upsampler.vae is not backend.pipes["kandinsky6"].vae
        assert np.array_equal(x2.audio, base.audio) and x2.audio_sample_rate == base.audio_sample_rate
        assert np.array_equal(backend.upscale_video(base.frames, 2), x2.frames)
    finally:
        backend.unload()


def test_wan22_a14b_runs_both_experts(backends):
    backend = backends("tiny-wan22-a14b")
    backend.load()
    pipe = backend.pipes["wan"]
    assert pipe.config.boundary_ratio == pytest.approx(0.875) and pipe.transformer_2 is not None
    used = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(pipe, name).register_forward_pre_hook(lambda *a, n=name: used.__setitem__(n, used[n] + 1))
             for name in used]
    try:
        backend.generate(GenerationRequest("a ball", steps=4, seed=1, guidance_scale=1.0))
    finally:
        for hook in hooks:
            hook.remove()
    assert used["transformer"] >= 1 and used["transformer_2"] >= 1 and sum(used.values()) == 4, used


def test_video_to_video_strength_ends(backends):
    source = pattern(7, 9)
    for name in ("tiny-ltx", "tiny-wan22-a14b", "tiny-vace"):
        backend = backends(name)
        same = backend.generate(GenerationRequest("x", video=source, strength=0.0, seed=1))
        assert np.array_equal(same.frames, source)  # strength 0 returns the source
        with pytest.raises(GenerationError, match="9x32x32x3"):
            backend.generate(GenerationRequest("x", video=source[:5], strength=0.5))
    with pytest.raises(GenerationError, match="cannot take a source video"):
        backends("tiny-sana-video").generate(GenerationRequest("x", video=source, strength=0.5))


def test_hunyuan15_image_to_video_returns_the_requested_size(backends):
    """HunyuanVideo 1.5 I2V picks its own size bucket from the image's aspect ratio; the backend
    hands back the size that was asked for."""
    result = backends("tiny-hunyuan15-i2v").generate(
        GenerationRequest("a cat", width=64, height=32, seed=1, image=pattern(3, 0, 32)))
    assert result.frames.shape == (9, 32, 64, 3)


# ------------------------------------------------------------------ presets and the validator
def test_ltx_distilled_preset_runs_its_schedule_without_guidance(tmp_path):
    cfg = mc.parse_entry("ltx-fast", {"path": tiny_checkpoints.cached_checkpoint("ltx"), "pipeline": "ltx-condition",
                                      "preset": "ltx-distilled", "dtype": "float32",
                                      "defaults": {"width": 32, "height": 32, "frames": 9}, "limits": SMALL,
                                      "max_sequence_length": 16})
    info = cfg.model_info()
    assert (info.default_steps, info.default_guidance, info.max_guidance) == (8, 1.0, 1.0)
    assert info.problems(9, 32, 32, 8, 3.0)  # classifier-free guidance refused: it was distilled without
    backend = DiffusersBackend(cfg)
    schedules = []
    backend.load()
    pipe = backend.pipes["ltx-condition"]
    original = pipe.scheduler.set_timesteps

    @functools.wraps(original)  # the pipeline reads its signature
    def spy(*args, **kwargs):
        schedules.append(kwargs.get("timesteps"))
        return original(*args, **kwargs)
    pipe.scheduler.set_timesteps = spy
    try:
        steps = []
        backend.generate(GenerationRequest("a ball", seed=1), progress=lambda s, t, p: steps.append((s, t)))
        preset_schedule = mc.PRESETS["ltx-distilled"].pipeline_kwargs["timesteps"]
        assert steps[-1] == (8, 8) and schedules[-1] == preset_schedule
        backend.generate(GenerationRequest("a ball", seed=1, steps=3))  # another count: the pipeline's own
        assert len(schedules[-1]) == 3 and list(schedules[-1]) != preset_schedule[:3]
    finally:
        del pipe.scheduler.set_timesteps
        backend.unload()


@pytest.mark.parametrize("changes, words", [
    ({"preset": "ltx2-distilled"}, "is for LTX-2"),
    ({"preset": "ltx-distilled"}, "runs on ltx-condition, not ltx"),
    ({"pipeline": "ltx-condition", "preset": "ltx-distilled", "defaults": {"steps": 20}}, "fixed schedule of 8 steps"),
    ({"pipeline": "ltx-condition", "preset": "ltx-distilled", "defaults": {"guidance": 3.0}},
     "guidance_scale must be between 0 and 1.0"),
    ({"preset": "turbo"}, "unknown preset 'turbo'"),
    ({"pipeline_kwargs": {"num_frames": 9}}, "may not set num_frames"),
    ({"upsampler": "up"}, None),
    ({"pipeline": "wan", "upsampler": "up"}, "has no latent upsampler"),
    ({"pipeline": ["ltx", "wan"]}, "one family's"),
    ({"pipeline": ["hunyuanvideo1.5", "hunyuanvideo1.5-i2v"]}, "own entry"),
    ({"pipeline": ["ltx2", "ltx2-condition"]}, None),
    ({"ic_lora": "lora.safetensors"}, "none of ltx takes an IC-LoRA"),
    ({"pipeline": "ltx2", "ic_lora": "lora.safetensors"}, r"\(ltx2-ic-lora or ltx2-hdr does\)"),
    ({"pipeline": ["ltx2", "ltx2-ic-lora"], "ic_lora": "lora.safetensors"}, None),
    ({"pipeline": ["ltx2", "ltx2-hdr"], "ic_lora": "hdr.safetensors", "preset": "ltx2-distilled"}, None),
    ({"pipeline": ["ltx2-ic-lora", "ltx2-hdr"], "ic_lora": "lora.safetensors"}, "each an entry of its own"),
    ({"pipeline": ["ltx2", "ltx2-hdr"], "decoder": "dd"}, "cannot decode ltx2-hdr's HDR latents"),
    ({"pipeline": "ltx2-dfr"}, r"ltx2-dfr is a distilled pass without guidance: .* \(ltx2-distilled\)"),
    ({"pipeline": ["ltx2-dfr", "ltx2"], "preset": "ltx2-distilled"}, None),
    ({"pipeline": "ltx2-dfr", "preset": "ltx2-distilled", "temporal_upsampler": "tu"}, None),
    ({"pipeline": "ltx2", "temporal_upsampler": "tu"}, r"none of ltx2 leaves the keyframes .* \(ltx2-dfr does\)"),
    ({"temporal_upsampler": "tu"}, "none of ltx leaves the keyframes a temporal refine round starts from$"),
    ({"pipeline": "ltx+ltx-i2v"}, None),
    ({"pipeline": "helios-pyramid", "preset": "helios-distilled"}, None),
    ({"pipeline": "helios", "preset": "helios-distilled"}, "is for Helios pyramid"),
])
def test_configuration_errors_name_the_model_and_key(changes, words):
    raw = {"path": "/models/x", "pipeline": "ltx", **changes}
    if words is None:
        assert mc.parse_entry("m", raw).name == "m"
    else:
        with pytest.raises(mc.ConfigError, match=words) as err:
            mc.parse_entry("m", raw)
        assert "'m'" in str(err.value)


def test_hdr_frames_are_the_pipelines_linear_output_through_the_srgb_transfer(backends):
    """LTX2HDRPipeline returns linear HDR (values above 1.0: highlights); the MP4's frames are those clipped at
    1.0 through the sRGB transfer, as diffusers' encode_hdr_tensor_to_mp4 writes them; the linear frames are
    the result's HDR master; no sound track."""
    from generator.hdr import to_display

    assert np.allclose(to_display(np.array([-0.5, 0.0, 0.002, 0.18, 1.0, 40.0])),
                       [0.0, 0.0, 0.02584, 0.46135, 1.0, 1.0], atol=1e-5)  # sRGB: 0.18 -> 118 of 255
    backend = backends("tiny-ltx2-hdr")
    assert not backend.info.has_audio and backend.info.extra["tasks"] == ["control"]
    linear = []
    display = backend.adapter.display_frames
    backend.adapter.display_frames = lambda pipe, video: display(pipe, linear.append(video) or video)
    try:
        result = backend.generate(GenerationRequest("a red ball", steps=2, seed=3, video=pattern(1)))
    finally:
        del backend.adapter.display_frames
    assert result.audio is None and linear[0].max() > 2.0 and (linear[0] < 1.0).mean() > 0.2
    assert np.array_equal(result.frames, (to_display(linear[0]) * 255.0 + 0.5).astype(np.uint8))
    assert result.hdr_frames.dtype == np.float16 and np.array_equal(result.hdr_frames, linear[0].astype(np.float16))


def tiny_ic_lora(folder, downscale=None) -> str:
    """A rank-2 LoRA on the tiny LTX-2 transformer's video self-attention values (diffusers' key layout, as
    LTX2LoraLoaderMixin reads it), with the reference_downscale_factor metadata IC-LoRA files carry."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weights = {}
    for block in (0, 1):
        key = f"transformer.transformer_blocks.{block}.attn1.to_v"
        weights[f"{key}.lora_A.weight"] = torch.randn(2, 16, generator=gen)
        weights[f"{key}.lora_B.weight"] = torch.randn(16, 2, generator=gen)
    path = os.path.join(folder, "ic-lora.safetensors")
    save_file(weights, path, metadata={"reference_downscale_factor": str(downscale)} if downscale else None)
    return path


def test_a_missing_ic_lora_is_reported_at_start_up(tmp_path):
    path = tmp_path / "models.json"
    good = entry("ltx2", ["ltx2", "ltx2-ic-lora"])
    path.write_text(json.dumps({"good": good, "lost": {**good, "ic_lora": "no-such-lora.safetensors"}}))
    configs, errors = mc.validate_config(str(path))
    assert list(configs) == ["good"] and not configs["good"].model_info().extra["ic_lora"]
    assert [(e.model, e.field) for e in errors] == [("lost", "ic_lora")]
    assert "no-such-lora.safetensors does not exist" in errors[0].message


def test_the_ic_lora_is_loaded_and_used_for_control_only(tmp_path, backends):
    """The entry's IC-LoRA (a folder holding one .safetensors) changes what a control job makes; it is off for
    the entry's other kinds (one shared transformer); its reference_downscale_factor metadata is passed."""
    tiny_ic_lora(str(tmp_path), downscale=2)
    cfg = mc.parse_entry("ic", entry("ltx2", ["ltx2", "ltx2-ic-lora"], ic_lora=str(tmp_path)), check_paths=True)
    assert cfg.model_info().extra["ic_lora"]
    backend = DiffusersBackend(cfg)
    try:
        req = GenerationRequest("a red ball", steps=2, seed=3, video=pattern(1))
        plain = backends("tiny-ltx2")
        with_lora = backend.generate(req).frames
        assert backend.adapter.reference_downscale_factor == 2
        assert np.abs(with_lora.astype(np.int16) - plain.generate(req).frames).mean() > 1.0
        t2v = GenerationRequest("a red ball", steps=2, seed=3)
        assert np.array_equal(backend.generate(t2v).frames, plain.generate(t2v).frames)  # off for t2v
        assert np.array_equal(backend.generate(req).frames, with_lora)  # and on again for control
    finally:
        backend.unload()


def test_validator_checks_pipeline_kwargs_against_the_real_signatures(tmp_path, capsys):
    path = tmp_path / "models.json"
    good = entry("ltx", ["ltx", "ltx-i2v"], pipeline_kwargs={"decode_timestep": 0.05})
    path.write_text(json.dumps({"good": good, "typo": {**good, "pipeline_kwargs": {"decode_timestpe": 0.05}}}))
    assert mc.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "error: model 'typo': pipeline_kwargs.decode_timestpe is not an argument of LTXPipeline" in out
    path.write_text(json.dumps({"good": good, "fast": entry("ltx", "ltx-condition", preset="ltx-distilled",
                                                             defaults={"width": 32, "height": 32, "frames": 9})}))
    assert mc.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "fast: ltx-condition (t2v, i2v, v2v, condition)" in out and "preset ltx-distilled" in out
    assert "8 steps guidance 1.0" in out


def test_a_new_family_is_one_description(monkeypatch):
    """A family (here a made-up one running LTX's classes through LTX's adapter) becomes configurable
    by its description (what a new generator/families/<family>.py defines): kinds, tasks, limits and
    its live mode follow from it; a wrong description is refused."""
    from generator.families import check_family
    from generator.families.ltx import LTXAdapter

    fam = mc.Family("ltx-mini", "a test family", {"ltx-mini": mc.PipelineKind("LTXPipeline", ("t2v",)),
                                                  "ltx-mini-i2v": mc.PipelineKind("LTXImageToVideoPipeline", ("i2v",))},
                    vae="AutoencoderKLLTXVideo", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=65,
                    size_multiple=32, max_size=512, default_width=256, default_height=256, default_frames=33,
                    default_steps=20, default_guidance=2.0, default_fps=12.0, adapter=LTXAdapter)
    monkeypatch.setitem(mc.FAMILIES, fam.name, check_family(fam))
    monkeypatch.setitem(mc.KINDS, "ltx-mini", "ltx-mini")
    monkeypatch.setitem(mc.KINDS, "ltx-mini-i2v", "ltx-mini")
    info = mc.parse_entry("mini", {"path": "/m", "pipeline": ["ltx-mini-i2v", "ltx-mini"]}).model_info()
    assert info.extra["pipelines"] == ["ltx-mini", "ltx-mini-i2v"] and info.supports_image
    assert (info.default_frames, info.max_size, info.default_fps) == (33, 512, 12.0)
    assert info.extra["live"] == "continuation"
    with pytest.raises(ValueError, match="32 frames break its own rule"):
        check_family(mc.Family(**{**fam.__dict__, "default_frames": 32}))


# ------------------------------------------------------------------ live: Helios chunk by chunk
def test_helios_live_chunks_follow_the_prompt_in_force(backends):
    """Each chunk is yielded as soon as it is made (before the next chunk's prompt is asked), and is made
    with the embeddings of the prompt in force when it starts: a steer after chunk 1 changes what the
    transformer is given from chunk 2 on, and only from there."""
    backend = backends("tiny-helios")
    assert backend.live_mode == "native" and backend.info.extra["live"] == "native"
    backend.load()
    pipe = backend.pipes["helios"]
    seen = []  # the prompt embeddings of every transformer pass (no guidance: one pass per step)
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)
    asked = []

    def prompt_at(i):
        asked.append(i)
        return "a red ball moving right" if i < 2 else "a blue cat moving up"

    req = GenerationRequest("a red ball moving right", steps=2, seed=3, guidance_scale=1.0)
    try:
        chunks = backend.live_chunks(req, prompt_at)
        frames = []
        for i in range(4):
            frames.append(next(chunks))
            assert max(asked) == i  # chunk i came out before chunk i + 1 was started
        chunks.close()
    finally:
        hook.remove()
    assert all(f.shape == (9, 32, 32, 3) and f.dtype == np.uint8 for f in frames)
    assert len(seen) == 4 * 2
    per_chunk = seen[::2]
    filled = backend.checked(req)
    red, blue = (backend.adapter.encode(pipe, p, filled)["prompt_embeds"] for p in ("a red ball moving right",
                                                                                    "a blue cat moving up"))
    assert torch.equal(per_chunk[0], red) and torch.equal(per_chunk[1], red)
    assert torch.equal(per_chunk[2], blue) and torch.equal(per_chunk[3], blue)
    assert not torch.allclose(red, blue)
    # chunk 0 is what generate() makes for the same request: one pipeline call per chunk changes nothing
    assert np.array_equal(frames[0], backend.generate(req).frames)


def test_helios_distilled_preset_runs_its_stage_steps_and_amplifies_only_the_first_live_chunk():
    cfg = mc.parse_entry("helios-fast", entry("helios-distilled", "helios-pyramid", preset="helios-distilled",
                                              defaults={"width": 64, "height": 64, "frames": 9, "fps": 8}))
    info = cfg.model_info()
    assert (info.default_steps, info.default_guidance, info.max_guidance) == (6, 1.0, 1.0)
    backend = DiffusersBackend(cfg)
    try:
        steps = []
        backend.generate(GenerationRequest("a ball", seed=1), progress=lambda s, t, p: steps.append((s, t)))
        assert steps[-1] == (12, 12) and {t for _, t in steps} == {12}  # 2 + 2 + 2, doubled: a first chunk
        pipe, passes, per_chunk = backend.pipes["helios-pyramid"], [], []
        hook = pipe.transformer.register_forward_pre_hook(lambda *a: passes.append(1))
        chunks = backend.live_chunks(GenerationRequest("a ball", seed=1), lambda i: "a ball")
        try:
            for _ in range(3):
                before = len(passes)
                next(chunks)
                per_chunk.append(len(passes) - before)  # one transformer pass per step (no guidance)
        finally:
            hook.remove()
            chunks.close()
        assert per_chunk == [12, 6, 6]
    finally:
        backend.unload()


def test_helios_pyramid_noise_covariance_is_positive_definite_on_any_cpu(backends):
    """The schedulers' default gamma (1/3) makes the pyramid's block-noise covariance singular, and its
    Cholesky factorisation then succeeds or fails by the CPU's rounding (it failed every time on an AMD
    EPYC): the loaded pipeline keeps gamma just inside the bound, with a margin far above float32 noise."""
    pipe = backends("tiny-helios-pyramid").pipe_for("t2v")
    gamma = pipe.scheduler.config.gamma
    assert 1 / 3 - 2e-5 < gamma < 1 / 3
    cov = (torch.eye(4) * (1 + gamma) - torch.ones(4, 4) * gamma + torch.eye(4) * 1e-8).float()
    assert torch.linalg.eigvalsh(cov.double()).min() > 1e-5
    noise = pipe.sample_block_noise(1, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (1, 2, 1, 8, 8) and torch.isfinite(noise).all()


def test_helios_live_chunks_continue_their_own_history(backends):
    """Chunk 1 is made from chunk 0's latents: with the same prompt and seed, another chunk 0 (made under
    another prompt) gives another chunk 1; a start image leads the first chunk."""
    backend = backends("tiny-helios")
    req = GenerationRequest("a red ball moving right", steps=2, seed=3, guidance_scale=1.0)

    def two_chunks(first_prompt, **extra):
        chunks = backend.live_chunks(GenerationRequest(**{**req.__dict__, **extra}),
                                     lambda i: first_prompt if i == 0 else req.prompt)
        made = [next(chunks), next(chunks)]
        chunks.close()
        return made

    same = two_chunks(req.prompt)
    other = two_chunks("a blue cat moving up")
    assert np.abs(other[0].astype(np.int16) - same[0]).mean() > 1.0
    assert np.abs(other[1].astype(np.int16) - same[1]).mean() > 1.0
    image_a, image_b = two_chunks(req.prompt, image=pattern(1, 0)), two_chunks(req.prompt, image=pattern(2, 0))
    assert np.abs(image_a[0].astype(np.int16) - image_b[0]).mean() > 1.0
    assert np.abs(image_a[1].astype(np.int16) - image_b[1]).mean() > 1.0


# ------------------------------------------------------------------ live: every other family continues
@pytest.mark.parametrize("name, continued_with", [("tiny-ltx", "LTXImageToVideoPipeline"),
                                                  ("tiny-wan22-a14b", "WanPipeline")])
def test_a_family_without_native_chunks_runs_live_by_continuation(backends, name, continued_with):
    """generator.live.LiveVideo: chunk i > 0 starts from the previous chunk's last frames when the
    family can be conditioned on them (LTX with a live overlap of 2: the last frame, image-to-video;
    its condition pipeline wants whole latent frames), else is cross-faded (Wan T2V);
    each chunk runs under the prompt in force when it starts."""
    from generator.live import LiveVideo

    backend = backends(name)
    prompts = ["a red ball moving right", "a red ball moving right", "a blue cat"]
    video = LiveVideo(backend, GenerationRequest("unused", num_frames=9, steps=2, seed=3), lambda i: prompts[i])
    chunks = []
    for chunk in video:
        chunks.append(chunk)
        if len(chunks) == 3:
            break
    assert [c.prompt for c in chunks] == prompts
    assert backend.calls[-1][0] == continued_with
    assert [c.first_frame for c in chunks] == [0, 9 - video.shared, 2 * (9 - video.shared)]
    frames = np.concatenate([c.frames for c in chunks] + [video.tail()])
    assert frames.shape == (3 * 9 - 2 * video.shared, 32, 32, 3) and frames.dtype == np.uint8


# ------------------------------------------------------------------ the generic kind
@pytest.mark.parametrize("builder, cls, task", [
    ("ltx", "LTXPipeline", "t2v"),
    ("ltx", "LTXImageToVideoPipeline", "i2v"),  # image + frame_rate read from its signature
    ("wan2.2-a14b", "WanVideoToVideoPipeline", "v2v"),
    ("sana-video", "SanaImageToVideoPipeline", "i2v"),  # its frame count is `frames`
])
def test_generic_kind_maps_a_request_by_the_call_signature(builder, cls, task):
    cfg = mc.parse_entry("generic", entry(builder, "generic", pipeline_class=cls, tasks=[task],
                                          **({"pipeline_kwargs": {"use_resolution_binning": False}}
                                             if builder == "sana-video" else {})))
    backend = DiffusersBackend(cfg)
    try:
        assert backend.info.extra["tasks"] == [task] and backend.info.extra["family"] == "generic"
        steps, req = [], GenerationRequest("a red ball", steps=2, seed=3, **inputs(task, 9, 1, 0.5))
        result = backend.generate(req, progress=lambda s, t, p: steps.append(s))
        assert result.frames.shape == (9, 32, 32, 3) and backend.calls[-1] == (cls, task) and steps[-1] >= 1
        if task != "t2v":
            other = backend.generate(GenerationRequest("a red ball", steps=2, seed=3, **inputs(task, 9, 2, 0.5)))
            assert np.abs(other.frames.astype(np.int16) - result.frames).mean() > 1.0
    finally:
        backend.unload()


def test_generic_kind_refuses_what_its_pipeline_cannot_take():
    with pytest.raises(mc.ConfigError, match="pipeline_class"):
        mc.parse_entry("g", {"path": "/m", "pipeline": "generic"})
    with pytest.raises(mc.ConfigError, match="only a \"generic\" entry takes 'tasks'"):
        mc.parse_entry("g", {"path": "/m", "pipeline": "ltx", "tasks": ["t2v"]})
    backend = DiffusersBackend(mc.parse_entry("g", entry("ltx", "generic", pipeline_class="LTXPipeline",
                                                         tasks=["t2v", "i2v"])))
    with pytest.raises(GenerationError, match="LTXPipeline takes none of image, first_frame"):
        backend.load()
    backend = DiffusersBackend(mc.parse_entry("g", entry("ltx", "generic", pipeline_class="SoraPipeline")))
    with pytest.raises(GenerationError, match="has no pipeline class SoraPipeline"):
        backend.load()


def test_wan_animate_takes_the_character_from_the_image_and_the_motion_from_the_video(backends):
    """Each of the two inputs decides the clip by whole grey levels; a job with only one is refused."""
    backend = backends("tiny-wan-animate")
    req = GenerationRequest("a person dancing", steps=2, seed=3, image=pattern(1, 0), video=pattern(11, 9))
    made = backend.generate(req).frames
    other_character = backend.generate(GenerationRequest(**{**req.__dict__, "image": pattern(2, 0)})).frames
    other_motion = backend.generate(GenerationRequest(**{**req.__dict__, "video": pattern(12, 9)})).frames
    assert np.abs(other_character.astype(np.int16) - made).mean() > 1.0
    assert np.abs(other_motion.astype(np.int16) - made).mean() > 1.0
    with pytest.raises(GenerationError, match="needs both"):
        backend.generate(GenerationRequest("a person dancing", image=pattern(1, 0)))


def test_chronoedit_returns_its_reasoning_frames_only_when_they_survive():
    """ChronoEdit makes the image and its edit (5 frames); with temporal reasoning for every step the reasoning
    frames between them come back too; a job that would come back shorter than it asked is refused saying why."""
    image = pattern(1, 0)
    with pytest.raises(GenerationError, match="returns 5 frames here, not 9: it makes the image and its edit"):
        DiffusersBackend(mc.parse_entry("chrono", entry("chronoedit", "chronoedit"))).generate(
            GenerationRequest("make it blue", image=image, steps=1, seed=1))
    backend = DiffusersBackend(mc.parse_entry("chrono-reasoning", entry("chronoedit", "chronoedit", pipeline_kwargs={
        "enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 1})))
    try:
        assert backend.generate(GenerationRequest("make it blue", image=image, steps=1, seed=1)).frames.shape[0] == 9
        assert backend.generate(GenerationRequest("make it blue", image=image, num_frames=5, steps=2,
                                                  seed=1)).frames.shape[0] == 5
        with pytest.raises(GenerationError, match="reasons over its frames for 1 of the 2 steps"):
            backend.generate(GenerationRequest("make it blue", image=image, steps=2, seed=1))
    finally:
        backend.unload()
