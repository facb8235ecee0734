"""Long videos: extension with blended overlaps, flow interpolation, hierarchical upscaling.

Small CPU workloads: the built-in model at 64x64 x 8 frames with 2-3 steps, synthetic clips
from generator.builtin.world for interpolation.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

from generator import longvideo as lv
from generator import shape
from generator.builtin import world
from generator.interface import Backend, Cancelled, GenerationRequest, GenerationResult, ModelInfo

from tiny_checkpoints import one_torch_thread  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backend():
    from generator.builtin.backend import WEIGHTS, BuiltinBackend

    path = os.environ.get("BUILTIN_MODEL_PATH") or WEIGHTS
    if not os.path.exists(os.path.join(path, "unet", "config.json")):
        pytest.fail(f"no built-in weights at {path}")
    b = BuiltinBackend(path)
    b.load()
    return b


def _request(**kw):
    base = dict(prompt="a red square moving right", num_frames=8, width=64, height=64, steps=2, seed=5)
    return GenerationRequest(**(base | kw))


def clip(seed: int, num_frames: int = 17, size: int = 64, speed=None) -> np.ndarray:
    """A rendered shape clip, T x H x W x 3 uint8 (known, constant-speed motion)."""
    rng = random.Random(seed)
    scene = world.sample_scene(rng, num_frames, two_shapes_prob=0.0)
    if speed is not None:
        scene[0].speed = speed
    video = world.render([scene], num_frames, size)[0]
    return ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def seam_stats(frames: np.ndarray, seams: list) -> tuple:
    m = lv.seam_metrics(frames, seams)
    return m["boundary_mad"], m["inside_mad"]


# ------------------------------------------------------------------ blend ramp
def test_blend_weights_are_the_linear_ramp():
    assert np.allclose(lv.blend_weights(4), [0.0, 0.25, 0.5, 0.75])
    assert np.allclose(lv.blend_weights(1), [0.0])
    old = np.full((6, 2, 2, 3), 100, np.uint8)
    new = np.full((5, 2, 2, 3), 200, np.uint8)
    out = lv.blend_overlap(old, new, 4)
    assert out.shape[0] == 6 + 5 - 4
    # x = w x_new + (1 - w) x_old with w = (f - f_start) / f_overlap
    assert out[:, 0, 0, 0].tolist() == [100, 100, 100, 125, 150, 175, 200]


def test_chunks_for_duration():
    assert shape.chunks_for_duration(1.0, 8, 8, 2) == 1
    assert shape.chunks_for_duration(2.0, 8, 8, 2) == 3  # 8 + 6 + 6 = 20 >= 16 frames; 2 chunks give 14
    assert shape.extended_length(3, 8, 2) == 20


# ------------------------------------------------------------------ extension on the built-in model
def test_extend_builtin_length_progress_and_continuity(backend):
    calls = []
    out = lv.extend(backend, _request(), num_chunks=3, overlap=2,
                    progress=lambda s, n, p: calls.append((s, n)))
    assert out.frames.shape == (3 * 8 - 2 * 2, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.fps == 8 and out.seed == 5
    steps = [s for s, _ in calls]
    assert steps == list(range(1, 7)) and {n for _, n in calls} == {6}


def test_extend_duration_trims_and_start_frames_condition(backend):
    out = lv.extend(backend, _request(fps=8), overlap=2, duration_s=2.0)
    assert out.frames.shape[0] == 16  # 3 chunks (20 frames) trimmed to 2 s at 8 fps
    # the built-in backend honours start_frames: the conditioned frames come back (nearly) as given
    start = out.frames[-2:]
    cont = backend.generate(_request(start_frames=start, guidance_scale=1.0))
    assert np.abs(cont.frames[:2].astype(float) - start.astype(float)).mean() < 12


def test_extend_cancel_between_chunks(backend):
    steps = []

    def cancel():  # True once the first chunk (2 steps) is done: the second chunk never starts
        return len(steps) >= 2

    with pytest.raises(Cancelled):
        lv.extend(backend, _request(), num_chunks=3, overlap=2,
                  progress=lambda s, n, p: steps.append(s), should_cancel=cancel)
    assert steps == [1, 2]
    with pytest.raises(Cancelled):
        lv.extend(backend, _request(), num_chunks=2, overlap=2, should_cancel=lambda: True)


def test_extend_seams_builtin_model(backend):
    """Built-in model output: boundary change <= 1.5x the change inside chunks."""
    ratios = []
    for seed, prompt in ((3, "a red square moving right"), (4, "a blue circle moving down")):
        out = lv.extend(backend, _request(prompt=prompt, seed=seed, steps=3), num_chunks=3, overlap=3)
        boundary, inside = seam_stats(out.frames, lv.seam_positions(3, 8, 3))
        ratios.append(boundary / max(inside, 1e-6))
    print("built-in seam ratios", ratios)
    assert np.mean(ratios) <= 1.5, ratios


class SyntheticShapeBackend(Backend):
    """Deterministic synthetic 'backend' (not a model): a square moving right at constant speed.

    A continuation starts where the given start frames' square is (its centroid), and each chunk
    has its own exposure (+-3 levels), so without blending every boundary would jump."""

    max_start_frames = 8

    def __init__(self):
        super().__init__(ModelInfo(name="synthetic", description="test", default_frames=8, default_width=64,
                                   default_height=64, default_steps=2))

    def load(self):
        pass

    def generate(self, request, progress=None, should_cancel=None):
        req = self.fill_defaults(request)
        n, h, w = req.num_frames, req.height, req.width
        x0 = 14.0
        if req.start_frames is not None:
            k = min(len(req.start_frames), self.max_start_frames)
            fg = req.start_frames[-k].astype(float).sum(-1) > 200
            x0 = float(np.nonzero(fg)[1].mean()) + 0.5 if fg.any() else x0
        for s in range(req.steps):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            if progress is not None:
                progress(s + 1, req.steps, None)
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        frames = np.empty((n, h, w, 3), np.uint8)
        offset = 3.0 * ((req.seed % 3) - 1)  # the chunk's own exposure
        for t in range(n):
            inside = (np.abs(xx - (x0 + 4.0 * t)) < 12) & (np.abs(yy - h / 2) < 12)
            frame = np.where(inside[..., None], [220.0, 60.0, 40.0], [20.0, 20.0, 30.0]) + offset
            frames[t] = np.clip(frame, 0, 255)
        return GenerationResult(frames=frames, fps=req.fps, seed=req.seed, native_size=(h, w))


def test_extend_seams_synthetic_backend_blending_beats_hard_cut(monkeypatch):
    b = SyntheticShapeBackend()
    req = GenerationRequest(prompt="x", num_frames=12, width=160, height=32, seed=0)  # the shape stays in view
    out = lv.extend(b, req, num_chunks=3, overlap=4)
    assert out.frames.shape[0] == 3 * 12 - 2 * 4
    starts = lv.seam_positions(3, 12, 4)
    assert starts == [(8, 4), (16, 4)]
    boundary, inside = seam_stats(out.frames, starts)
    assert boundary <= 1.5 * inside, (boundary, inside)
    monkeypatch.setattr(lv, "blend_weights", lambda n: np.ones(n, np.float32))  # no blend: hard cut
    cut_boundary, cut_inside = seam_stats(lv.extend(b, req, num_chunks=3, overlap=4).frames, starts)
    assert cut_boundary / cut_inside > boundary / inside


def test_extend_text_only_backend_crossfades():
    b = SyntheticShapeBackend()
    b.info.supports_image = False  # no conditioning possible: independent chunks, cross-faded
    seen = []
    orig = b.generate
    b.generate = lambda r, **kw: (seen.append(r.start_frames), orig(r, **kw))[1]
    out = lv.extend(b, GenerationRequest(prompt="x", num_frames=8, seed=0), num_chunks=2, overlap=3)
    assert out.frames.shape[0] == 13 and seen == [None, None]


def test_single_frame_backends_get_the_last_frame_as_image():
    b = SyntheticShapeBackend()
    b.max_start_frames = 1
    seen = []
    orig = b.generate
    b.generate = lambda r, **kw: (seen.append(r), orig(r, **kw))[1]
    out = lv.extend(b, GenerationRequest(prompt="x", num_frames=8, seed=0), num_chunks=2, overlap=4)
    assert out.frames.shape[0] == 8 + 8 - 1  # the new chunk starts at the last frame
    assert len(seen[1].start_frames) == 1 and np.array_equal(seen[1].image, seen[1].start_frames[-1])
    filled = b.fill_defaults(GenerationRequest(prompt="x", start_frames=np.zeros((3, 4, 4, 3), np.uint8)))
    assert filled.image is not None and filled.image.shape == (4, 4, 3)


# ------------------------------------------------------------------ interpolation
@pytest.mark.parametrize("factor", [2, 4])
def test_flow_interpolation_beats_blending(factor):
    flow_scores, blend_scores = [], []
    for seed in range(4):
        truth = clip(seed, num_frames=4 * factor + 1)
        keys = truth[::factor]
        middle = np.ones(len(truth), bool)
        middle[::factor] = False
        flow = lv.interpolate(keys, factor, workers=1)
        blend = lv.interpolate(keys, factor, workers=1, method="blend")
        assert flow.shape == truth.shape
        assert np.array_equal(flow[::factor], keys)
        flow_scores.append(psnr(flow[middle], truth[middle]))
        blend_scores.append(psnr(blend[middle], truth[middle]))
    assert np.mean(flow_scores) > np.mean(blend_scores) + 3.0, (flow_scores, blend_scores)


def test_interpolation_parallel_equals_serial():
    frames = clip(7, num_frames=9)
    serial = lv.interpolate(frames, 3, workers=1)
    parallel = lv.interpolate(frames, 3, workers=4)
    assert serial.shape == ((9 - 1) * 3 + 1, 64, 64, 3)
    assert np.array_equal(serial, parallel)


def test_upscale_parallel_equals_serial():
    frames = clip(8, num_frames=6)
    serial = lv.upscale_frames(frames, 2, workers=1)
    assert serial.shape == (6, 128, 128, 3)
    assert np.array_equal(serial, lv.upscale_frames(frames, 2, workers=4))


def test_interpolation_can_be_cancelled():
    with pytest.raises(Cancelled):
        lv.interpolate(clip(1, num_frames=5), 2, workers=1, should_cancel=lambda: True)


# ------------------------------------------------------------------ hierarchical + run_job
def test_hierarchical_size_and_fps(backend):
    calls = []
    out = lv.hierarchical(backend, _request(fps=4), upscale=2, interpolate_factor=3,
                          progress=lambda s, n, p: calls.append(s), workers=2)
    assert out.frames.shape == ((8 - 1) * 3 + 1, 128, 128, 3)
    assert out.fps == 12 and out.native_size == (64, 64) and calls == [1, 2]


def test_run_job_all_three(backend):
    opts = lv.LongVideoOptions(num_chunks=2, overlap=2, interpolate=2, upscale=2)
    calls = []
    out = lv.run_job(backend, _request(fps=4), opts, progress=lambda s, n, p: calls.append((s, n)))
    assert out.frames.shape == ((14 - 1) * 2 + 1, 128, 128, 3) and out.fps == 8
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


# ------------------------------------------------------------------ options
def test_final_shape_multiplies_the_base_chunk():
    options = lv.LongVideoOptions(num_chunks=3, overlap=2, interpolate=4, upscale=2)
    shape_ = shape.final_shape(options, 16, 256, 128, 8.0)
    assert shape_ == {"num_chunks": 3, "num_frames": (3 * 16 - 2 * 2 - 1) * 4 + 1, "width": 512, "height": 256,
                      "fps": 32.0}
    assert shape.final_shape(lv.LongVideoOptions(duration_s=3.0), 16, 64, 64, 8.0)["num_frames"] == 24
    assert lv.LongVideoOptions() == lv.LongVideoOptions(num_chunks=1) and not lv.LongVideoOptions().active


# ------------------------------------------------------------------ a diffusers image-to-video backend
def test_extend_and_run_job_on_a_tiny_ltx_backend(tmp_path):
    """The same entry point on a diffusers backend (tiny random LTX, T2V + I2V): chunk 2 is
    image-to-video from chunk 1's last frame, so consecutive chunks share one frame."""
    import tiny_checkpoints
    from generator.diffusers_backend import DiffusersBackend
    from generator.model_config import parse_entry

    tiny_checkpoints.save_tiny_checkpoint("ltx", str(tmp_path / "ltx"))
    config = parse_entry("tiny-ltx-long", {
        "path": "ltx", "pipeline": ["ltx", "ltx-i2v"], "dtype": "float32",
        "defaults": {"steps": 2, "width": 64, "height": 64, "frames": 9, "fps": 8},
        "limits": {"min_size": 32, "max_size": 128}, "max_sequence_length": 16}, base_dir=str(tmp_path))
    b = DiffusersBackend(config)
    assert b.max_start_frames == 1 and b.info.supports_image
    calls = []
    out = lv.run_job(b, GenerationRequest("a red ball", seed=1),
                     lv.LongVideoOptions(num_chunks=2, overlap=4, interpolate=2),
                     progress=lambda s, n, p: calls.append((s, n)))
    assert out.frames.shape == ((17 - 1) * 2 + 1, 64, 64, 3) and out.fps == 16  # 9 + 9 - 1 shared frame
    assert [s for s, _ in calls] == [1, 2, 3, 4] and {n for _, n in calls} == {4}
    b.unload()


# ------------------------------------------------------------------ model-native long videos (tiny checkpoints)
def _tiny_backend(name, builder, kinds, **extra):
    import tiny_checkpoints
    from generator.diffusers_backend import DiffusersBackend
    from generator.model_config import parse_entry

    if "upsampler" in extra:
        extra["upsampler"] = tiny_checkpoints.cached_checkpoint(extra["upsampler"])
    return DiffusersBackend(parse_entry(name, {
        "path": tiny_checkpoints.cached_checkpoint(builder), "pipeline": kinds, "dtype": "float32",
        "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 17, "fps": 8},
        "limits": {"min_size": 32, "max_size": 128}, "max_sequence_length": 16, **extra}))


@pytest.fixture(scope="module")
def ltx_condition():
    """LTX-Video with its condition pipeline and a latent upsampler, as for an LTX 0.9.5+ checkpoint."""
    b = _tiny_backend("tiny-ltx-long", "ltx", ["ltx", "ltx-i2v", "ltx-condition"], upsampler="ltx-upsampler")
    yield b
    b.unload()


def test_extension_continues_through_the_condition_pipeline(ltx_condition):
    """Chunks after the first are the condition pipeline continuing from the last whole latent frames
    (9 frames = 2 latent frames of LTX's 8x temporal VAE), not image-to-video from one frame."""
    b = ltx_condition
    assert lv.conditioned_frames(b, 4, 17) == 9 and lv.effective_overlap(b, 4, 17) == 9
    b.calls.clear()
    steps = []
    out = lv.extend(b, GenerationRequest("a red ball", seed=1), num_chunks=3, overlap=4,
                    progress=lambda s, n, p: steps.append((s, n)))
    assert out.frames.shape == (17 + 2 * (17 - 9), 32, 32, 3)
    assert list(b.calls) == [("LTXPipeline", "t2v"), ("LTXConditionPipeline", "condition"),
                             ("LTXConditionPipeline", "condition")]
    assert steps == [(i, 6) for i in range(1, 7)]


def test_seam_check_of_the_benchmark_runs_on_the_conditioning_family(ltx_condition):
    from bench import bench_longvideo

    ltx_condition.calls.clear()
    rows = bench_longvideo.seam_check(ltx_condition, ["a red ball moving right"], chunks=2, frames=17, overlap=4,
                                      steps=2, size=32)
    assert [label for label, _, _ in rows] == ["blended", "hard cut"]
    assert ("LTXConditionPipeline", "condition") in ltx_condition.calls
    (_, blended, _), (_, cut, _) = rows
    print("tiny LTX condition seams: blended", blended, "hard cut", cut)
    for m in (blended, cut):
        assert all(np.isfinite(v) for v in m.values()) and m["inside_mad"] > 0
    assert blended["boundary_mad"] <= cut["boundary_mad"]


def test_hierarchical_uses_the_latent_upsampler(ltx_condition):
    b = ltx_condition
    b.load()
    passes = []
    hook = b.upsampler.latent_upsampler.register_forward_pre_hook(lambda *a: passes.append(1))
    try:
        out = lv.hierarchical(b, GenerationRequest("a red ball", seed=1), upscale=2, interpolate_factor=2)
    finally:
        hook.remove()
    assert out.frames.shape == ((17 - 1) * 2 + 1, 64, 64, 3) and out.fps == 16
    assert passes == [1]  # one latent x2 pass over the whole video, no pixel resize
    plain = _tiny_backend("tiny-ltx-plain", "ltx", ["ltx", "ltx-i2v"])
    assert not hasattr(plain, "upscale_video")  # no upsampler configured: the pixel-space fallback
    assert lv.run_job(plain, GenerationRequest("a red ball", seed=1, num_frames=9),
                      lv.LongVideoOptions(upscale=2)).frames.shape == (9, 64, 64, 3)


def test_skyreels_long_video_is_its_own_diffusion_forcing_chunks():
    b = _tiny_backend("tiny-skyreels-long", "skyreels-v2", ["skyreels-v2", "skyreels-v2-i2v", "skyreels-v2-v2v"],
                      defaults={"steps": 2, "width": 32, "height": 32, "frames": 9, "fps": 8})
    steps = []
    out = lv.run_job(b, GenerationRequest("a dog", seed=2), lv.LongVideoOptions(num_chunks=3, overlap=4),
                     progress=lambda s, n, p: steps.append((s, n)))
    shared = lv.effective_overlap(b, 4, 9)
    assert shared == 5 and out.frames.shape == (shape.extended_length(3, 9, shared), 32, 32, 3)
    assert list(b.calls) == [("SkyReelsV2DiffusionForcingPipeline", "t2v")]  # one call made every chunk
    assert steps == [(i, 6) for i in range(1, 7)]
    b.unload()


def test_ltx2_extension_keeps_one_sound_track():
    b = _tiny_backend("tiny-ltx2-long", "ltx2", ["ltx2", "ltx2-condition"])
    out = lv.run_job(b, GenerationRequest("a cat", seed=3), lv.LongVideoOptions(num_chunks=2, overlap=4))
    assert out.frames.shape[0] == 17 + 17 - 9
    assert list(b.calls)[-1] == ("LTX2ConditionPipeline", "condition")
    assert out.audio_sample_rate == 8000 and out.audio.shape == (25 * 8000 // 8, 2)
    b.unload()
