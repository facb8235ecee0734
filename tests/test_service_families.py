"""Model families through the whole service, on CPU: LTX-2 and Kandinsky 6 with their sound tracks, the Wan 2.2 TI2V-5B
text- and image-to-video pair, Wan video-to-video (Wan 2.2 A14B's two-expert layout), Helios (base and
pyramid: text-to-video, image-to-video, and its video-to-video, which continues a source video), Sana
Video and Motif-Video (text- and image-to-video), Lucy Edit (video editing from a prompt), FramePack
(image-to-video in sections), ChronoEdit (an image edited as a short video), Wan-Animate (a character image
moved by a driving video) and the generic kind (a pipeline class mapped by its call signature).

The checkpoints are tiny random instances of the real diffusers / transformers classes saved as
pipeline folders (tests/tiny_checkpoints.py), named in this stack's models.json like an operator's;
one Celery worker consumes their queues. Jobs go in over HTTP (POST /api/jobs), progress comes over
the lobby websocket, and the MP4 fetched from /api/jobs/<id>/video is decoded with PyAV.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import time

import av
import numpy as np
import pytest
from PIL import Image

from generator.encode import decode_audio, decode_video, encode_video
from tests.support.client import Client, run
from tests.support.frames import level_difference
from tests.support.stack import Stack, http
from tests.tiny_checkpoints import save_tiny_checkpoint

SMALL = {"min_size": 32, "max_size": 128, "max_frames": 33, "max_steps": 1000}
MODELS = {  # name -> (checkpoint builder, pipeline kinds)
    "tiny-ltx2": ("ltx2", ["ltx2", "ltx2-i2v"]),
    "tiny-ltx2-ic": ("ltx2", "ltx2-ic-lora"),  # control only, no IC-LoRA file: the base model reads the reference
    "tiny-ltx2-hdr": ("ltx2", "ltx2-hdr"),  # the reference re-made in linear HDR, tone-mapped into the SDR MP4
    "tiny-ltx2-dd": ("ltx2", "ltx2"),  # decoded by LTX-2.5's diffusion decoder (SECOND_FOLDERS)
    "tiny-ltx2-dfr": ("ltx2-dfr", "ltx2-dfr"),  # LTX-2.5's DFR pass: distilled, no guidance (ENTRY_KEYS)
    "tiny-wan22": ("wan2.2-ti2v", ["wan2.2", "wan2.2-i2v"]),
    "tiny-wan-v2v": ("wan2.2-a14b", ["wan", "wan-v2v"]),
    "tiny-helios": ("helios", "helios"),
    "tiny-helios-pyramid": ("helios-pyramid", "helios-pyramid"),
    "tiny-sana-video": ("sana-video", ["sana-video", "sana-video-i2v"]),
    "tiny-lucy-edit": ("lucy-edit", "lucy-edit"),
    "tiny-motif-video": ("motif-video", ["motif-video", "motif-video-i2v"]),
    "tiny-generic": ("ltx", "generic"),  # as LTXImageToVideoPipeline, read from its signature
    "tiny-framepack": ("framepack", "framepack"),
    "tiny-wan-animate": ("wan-animate", "wan-animate"),
    "tiny-chronoedit": ("chronoedit", "chronoedit"),
    "tiny-kandinsky6": ("kandinsky6", "kandinsky6"),
}
# entry key -> {model -> the checkpoint builder of that folder}: latent upsampler, diffusion decoder, temporal upsampler
SECOND_FOLDERS = {"upsampler": {"tiny-ltx2": "ltx2-upsampler", "tiny-ltx2-dfr": "ltx2-upsampler"},
                  "decoder": {"tiny-ltx2-dd": "ltx2-decoder"},
                  "temporal_upsampler": {"tiny-ltx2-dfr": "ltx2-temporal-upsampler"}}
ENTRY_KEYS = {"tiny-ltx2-dfr": {"preset": "ltx2-distilled", "defaults": {"steps": 8}}}  # model -> what it adds
# ChronoEdit keeps its family's frame limit (the image and its edit: 5 frames)
OWN_FRAMES = {"tiny-chronoedit": 5}
QUEUE = "tiny-families"
JOB = {"num_frames": 17, "width": 32, "height": 32, "steps": 2, "fps": 8, "seed": 4}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed (apt-get install redis-server; scripts/test.sh does)")
    tmp = tmp_path_factory.mktemp("families-service")
    t0 = time.monotonic()
    models = {}
    for name, (builder, kinds) in MODELS.items():
        save_tiny_checkpoint(builder, str(tmp / "checkpoints" / name))
        models[name] = {"path": f"checkpoints/{name}", "pipeline": kinds, "dtype": "float32", "limits": SMALL,
                        "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 17, "fps": 8,
                                     **({"width": 64, "height": 64} if builder == "helios-pyramid" else {})},
                        "max_sequence_length": 16, "queue": QUEUE,
                        **({"pipeline_class": "LTXImageToVideoPipeline", "tasks": ["i2v"]}
                           if kinds == "generic" else {})}
        for key, value in ENTRY_KEYS.get(name, {}).items():
            models[name][key] = {**models[name][key], **value} if isinstance(value, dict) else value
        if name in OWN_FRAMES:
            models[name]["limits"] = {k: v for k, v in SMALL.items() if k != "max_frames"}
            models[name]["defaults"]["frames"] = OWN_FRAMES[name]
        for key, builders in SECOND_FOLDERS.items():
            if name in builders:
                save_tiny_checkpoint(builders[name], str(tmp / "checkpoints" / f"{name}-{key}"))
                models[name][key] = f"checkpoints/{name}-{key}"
    print(f"tiny checkpoints built in {time.monotonic() - t0:.1f} s")
    svc = Stack(tmp, models=models)
    try:
        svc.start(worker_queues=None)
        worker = svc.start_worker("families", QUEUE, wait=False)
        svc.wait_healthy(workers=[worker.node], timeout=180)
        yield svc
    finally:
        svc.stop()


def post_job(svc, **fields) -> str:
    status, _, body = http("POST", svc.base + "/api/jobs", {"prompt": "a red ball moving right", **JOB, **fields},
                           headers={"Origin": svc.origin})
    assert status == 201, body
    return json.loads(body)["job"]["id"]


def watch(svc, jobs) -> dict:
    """Submit over HTTP while a lobby websocket listens: {key: that job's events up to its last}."""
    async def scenario():
        out = {}
        async with Client(svc) as c:
            await c.ping_ok()
            for key, fields in jobs.items():
                job_id = post_job(svc, **fields)
                out[key] = await c.events_for(job_id, 240)
        return out
    return run(scenario())


def fetch_video(svc, done: dict) -> bytes:
    status, headers, body = http("GET", svc.base + f"/api/jobs/{done['job_id']}/video", timeout=30)
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    return body


def png_b64(seed: int, size: int = 32) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def completed(events: list, steps: bool = True) -> dict:
    """The job's generation_complete, after progress up to its last step (when it ran any)."""
    assert events[-1]["type"] == "generation_complete", events[-1]
    progress = [m for m in events if m["type"] == "progress"]
    assert not steps or (progress and progress[-1]["step"] == progress[-1]["total_steps"])
    return events[-1]


def started(events: list) -> dict:
    return next(m for m in events if m["type"] == "started")


def test_models_say_which_make_sound_and_take_a_source_video(stack):
    status, _, body = http("GET", stack.base + "/api/models")
    assert status == 200
    models = {m["name"]: m for m in json.loads(body)["models"]}
    assert models["tiny-ltx2"]["has_audio"] is True and models["tiny-wan22"]["has_audio"] is False
    assert models["tiny-wan-v2v"]["supports_video"] is True and models["tiny-ltx2"]["supports_video"] is False
    assert models["tiny-wan22"]["supports_image"] is True and models["tiny-wan22"]["extra"]["tasks"] == ["t2v", "i2v"]


def test_ltx2_job_mp4_carries_its_sound(stack):
    done = completed(watch(stack, {"ltx2": {"model": "tiny-ltx2"}})["ltx2"])
    assert done["has_audio"] is True
    data = fetch_video(stack, done)
    frames, fps = decode_video(data)
    assert frames.shape == (17, 32, 32, 3) and fps == pytest.approx(8)
    with av.open(io.BytesIO(data)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert sound.codec_context.name == "aac"
        assert float(sound.duration * sound.time_base) == pytest.approx(float(video.duration * video.time_base),
                                                                        abs=0.01)
    track, rate = decode_audio(data)
    assert rate == 8000 and 0 <= len(track) - 17 * 8000 // 8 < 1024 and track.std() > 1e-3


def test_ltx2_upscale_job_runs_its_latent_upsampler_and_keeps_the_sound(stack):
    out = watch(stack, {"plain": {"model": "tiny-ltx2"}, "x2": {"model": "tiny-ltx2", "upscale": 2}})
    plain, data = (fetch_video(stack, completed(out[key])) for key in ("plain", "x2"))
    frames, _ = decode_video(data)
    assert frames.shape == (17, 64, 64, 3) and decode_audio(data)[0].std() > 1e-3
    # the upsampler's latents, not a resize of the same clip (measured: 47 grey levels apart before H.264)
    from generator.postprocess import resize_frames

    assert distance(resize_frames(decode_video(plain)[0], (64, 64)), frames) > 10
    status, _, body = http("GET", stack.base + "/api/models")
    assert next(m for m in json.loads(body)["models"] if m["name"] == "tiny-ltx2")["extra"]["upsampler"] is True


def test_ltx2_diffusion_decoder_job_mp4_carries_its_sound(stack):
    """An LTX-2 entry with a `decoder`: the worker decodes the job's latents with the diffusion decoder (that it
    decodes far from the VAE is tests/test_model_families.py's), and the MP4 keeps the sound."""
    done = completed(watch(stack, {"dd": {"model": "tiny-ltx2-dd", "num_frames": 9}})["dd"])
    data = fetch_video(stack, done)
    assert done["has_audio"] is True and decode_video(data)[0].shape == (9, 32, 32, 3)
    track, rate = decode_audio(data)
    assert rate == 8000 and track.std() > 1e-3
    status, _, body = http("GET", stack.base + "/api/models")
    extra = {m["name"]: m["extra"] for m in json.loads(body)["models"]}
    assert extra["tiny-ltx2-dd"]["decoder"] is True and extra["tiny-ltx2"]["decoder"] is False


def test_ltx2_dfr_text_and_image_jobs_carry_their_sound_and_refuse_guidance(stack):
    """LTX-2.5's DFR pass (LTX2DFRPipeline, distilled): text and image jobs with sound; another start image,
    another video; a job's steps become its sigmas (the progress counts them); guidance it has not is refused."""
    job = {"model": "tiny-ltx2-dfr", "num_frames": 9, "steps": 3}
    out = watch(stack, {"t2v": job, "a": {**job, "image": png_b64(1)}, "b": {**job, "image": png_b64(2)}})
    data = {key: fetch_video(stack, completed(events)) for key, events in out.items()}
    assert all(completed(events)["has_audio"] is True for events in out.values())
    assert [m["step"] for m in out["t2v"] if m["type"] == "progress"][-1] == 3
    videos = {key: decode_video(mp4)[0] for key, mp4 in data.items()}
    assert videos["a"].shape == (9, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0
    track, rate = decode_audio(data["t2v"])
    assert rate == 8000 and track.std() > 1e-3
    status, _, body = http("POST", stack.base + "/api/jobs", {**JOB, **job, "prompt": "a cat", "guidance_scale": 3.0},
                           headers={"Origin": stack.origin})
    assert status == 400 and json.loads(body)["field"] == "guidance_scale", body


def test_ltx2_dfr_upscale_and_interpolate_are_made_by_its_refine_passes_with_its_sound(stack):
    """With a latent upsampler and a temporal upsampler, an LTX-2.5 DFR job's `upscale` 2 and `interpolate` 2 are
    LTX-2.5's recipe on the worker: a second DFR pass at twice the size, then a temporal refine round: twice the
    frames (less one) at twice the size and fps, the first pass's sound as long as the video, progress over every
    pass's steps (2 + 3 + 4). GET /api/models says which factors each model makes itself."""
    status, _, body = http("GET", stack.base + "/api/models")
    extra = {m["name"]: m["extra"] for m in json.loads(body)["models"]}
    assert extra["tiny-ltx2-dfr"]["native_factors"] == {"upscale": [2], "interpolate": [2, 4]}
    assert extra["tiny-ltx2"]["native_factors"] == {"upscale": [], "interpolate": []}
    out = watch(stack, {"job": {"model": "tiny-ltx2-dfr", "num_frames": 9, "upscale": 2, "interpolate": 2}})["job"]
    done = completed(out)
    assert done["has_audio"] is True and [m["total_steps"] for m in out if m["type"] == "progress"][-1] == 2 + 3 + 4
    mp4 = fetch_video(stack, done)
    frames, fps = decode_video(mp4)
    assert frames.shape == (17, 64, 64, 3) and fps == 16
    with av.open(io.BytesIO(mp4)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert float(sound.duration * sound.time_base) == pytest.approx(
            float(video.duration * video.time_base), abs=0.05)


def test_kandinsky6_text_and_image_jobs_carry_their_sound(stack):
    """Kandinsky 6 makes a mono sound track with the video (its checkpoint loaded without torchvision: the Qwen2
    tokenizer in place of the Qwen2_5_VLProcessor its model_index.json names); a start image decides the video."""
    out = watch(stack, {"t2v": {"model": "tiny-kandinsky6"}, "a": {"model": "tiny-kandinsky6", "image": png_b64(1)},
                        "b": {"model": "tiny-kandinsky6", "image": png_b64(2)}})
    data = {key: fetch_video(stack, completed(events)) for key, events in out.items()}
    assert all(completed(events)["has_audio"] is True for events in out.values())
    videos = {key: decode_video(mp4)[0] for key, mp4 in data.items()}
    assert videos["a"].shape == (17, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0
    with av.open(io.BytesIO(data["t2v"])) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert sound.codec_context.name == "aac" and sound.channels == 1
        assert float(sound.duration * sound.time_base) == pytest.approx(float(video.duration * video.time_base),
                                                                        abs=0.01)
    track, rate = decode_audio(data["t2v"])
    assert rate == 8000 and track.std() > 1e-3


def test_wan22_text_and_image_to_video_pair(stack):
    out = watch(stack, {"t2v": {"model": "tiny-wan22"}, "i2v": {"model": "tiny-wan22", "image": png_b64(1)},
                        "i2v-other": {"model": "tiny-wan22", "image": png_b64(2)}})
    videos = {}
    for key, events in out.items():
        done = completed(events)
        assert done.get("has_audio") is not True  # a silent model
        assert started(events)["params"]["image"] is (key != "t2v")
        videos[key], _ = decode_video(fetch_video(stack, done))
        assert videos[key].shape == (17, 32, 32, 3)
    # the start image decides the video by whole grey levels (through H.264), not by float noise
    # (measured: 36 levels from text-to-video, 25 from another image)
    differences = (level_difference(videos["i2v"], videos["t2v"]), level_difference(videos["i2v"], videos["i2v-other"]))
    assert min(differences) > 1.0, differences


def test_video_to_video_from_a_finished_job_and_an_upload(stack):
    source = completed(watch(stack, {"t2v": {"model": "tiny-wan-v2v"}})["t2v"])
    source_mp4 = fetch_video(stack, source)
    source_frames, _ = decode_video(source_mp4)
    out = watch(stack, {
        "same": {"model": "tiny-wan-v2v", "source_job_id": source["job_id"], "strength": 0.0},
        "edit": {"model": "tiny-wan-v2v", "source_job_id": source["job_id"], "strength": 0.5, "steps": 4},
        "upload": {"model": "tiny-wan-v2v", "video": base64.b64encode(source_mp4).decode(), "strength": 0.5,
                   "steps": 4},
    })
    frames = {key: decode_video(fetch_video(stack, completed(events, steps=key != "same")))[0]
              for key, events in out.items()}
    def distance(a, b):
        return np.abs(a.astype(int) - b.astype(int)).mean()

    # strength 0 returns the source: the same frames, through one more H.264 generation (which at
    # 32x32 moves a textured clip by a few grey levels); an edit moves it far more
    assert distance(frames["same"], source_frames) < 8
    assert frames["edit"].shape == (17, 32, 32, 3)
    assert distance(frames["edit"], source_frames) > 3 * distance(frames["same"], source_frames)
    assert [m["total_steps"] for m in out["edit"] if m["type"] == "progress"][-1] == 2  # 4 steps x strength 0.5
    assert distance(frames["upload"], frames["edit"]) < 3  # same source, same job


def test_cancel_a_running_family_job(stack):
    async def scenario():
        async with Client(stack) as c:  # the submitter's connection may cancel its job
            queued = await c.submit(prompt="a blue square", model="tiny-wan22", **{**JOB, "steps": 1000})
            job_id = queued["job_id"]
            await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 240)
            await c.send({"type": "cancel", "job_id": job_id, "request_id": "c1"})
            ack = await c.until(lambda m: m.get("request_id") == "c1", 10)
            assert ack["type"] == "cancelling", ack
            return await c.events_for(job_id, 60)

    events = run(scenario())
    assert events[-1]["type"] == "cancelled", events[-1]
    assert max(m["step"] for m in events if m["type"] == "progress") < 1000


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_models_describe_what_each_task_needs_and_how_they_go_live(stack):
    status, _, body = http("GET", stack.base + "/api/models")
    models = {m["name"]: m for m in json.loads(body)["models"]}
    helios = models["tiny-helios"]
    assert helios["extra"]["tasks"] == ["t2v", "i2v", "condition"] and helios["supports_video"] is True
    assert helios["extra"]["live"] == "native" and models["tiny-wan22"]["extra"]["live"] == "continuation"
    assert "continues" in helios["extra"]["task_inputs"]["condition"]
    assert "start image" in models["tiny-wan22"]["extra"]["task_inputs"]["i2v"]
    assert "strength" in models["tiny-wan-v2v"]["extra"]["task_inputs"]["v2v"]


@pytest.mark.parametrize("model, size", [("tiny-helios", 32), ("tiny-helios-pyramid", 64)])
def test_helios_text_image_and_video_continuation_jobs(stack, model, size):
    """Helios's three tasks as jobs: text, a start image (two images, two videos), and its video-to-video:
    a source video (a finished job's) continued: another source, another continuation."""
    job = {"model": model, "width": size, "height": size, "steps": 3}
    first = watch(stack, {"t2v": {**job}, "t2v-other": {**job, "prompt": "a blue cat moving up"}})
    sources = {key: completed(events) for key, events in first.items()}
    out = watch(stack, {
        "i2v": {**job, "image": png_b64(1, size)},
        "i2v-other": {**job, "image": png_b64(2, size)},
        "continue": {**job, "source_job_id": sources["t2v"]["job_id"]},
        "continue-other": {**job, "source_job_id": sources["t2v-other"]["job_id"]},
    })
    videos = {key: decode_video(fetch_video(stack, done))[0] for key, done in sources.items()}
    for key, events in out.items():
        done = completed(events)
        videos[key] = decode_video(fetch_video(stack, done))[0]
        assert videos[key].shape == (17, size, size, 3)
    assert started(out["i2v"])["params"]["image"] is True
    assert distance(videos["i2v"], videos["i2v-other"]) > 1.0  # by whole grey levels, not float noise
    assert distance(videos["continue"], videos["continue-other"]) > 1.0
    assert distance(videos["continue"], videos["t2v"]) > 1.0  # the frames that follow, not the source again


def test_a_live_helios_job_streams_its_chunks_and_is_steered(stack):
    """Helios runs live natively (its live_chunks: one pipeline chunk per call, with its history):
    chunks stream before the job ends, a steer is taken at the next chunk, stop keeps them all."""
    async def scenario():
        async with Client(stack) as c:
            queued = await c.submit(prompt="a red ball moving right", model="tiny-helios", live=True,
                                    **{k: v for k, v in JOB.items() if k != "num_frames"})
            job_id = queued["job_id"]
            is_chunk = lambda m: m.get("job_id") == job_id and m["type"] == "video_chunk"  # noqa: E731
            await c.until(is_chunk, 240)
            await c.send({"type": "steer", "job_id": job_id, "prompt": "a blue cat", "request_id": "s"})
            assert (await c.until(lambda m: m.get("request_id") == "s", 30))["type"] == "steering"
            steered = await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "steered", 120)
            await c.until(lambda m: is_chunk(m) and m["first_frame"] >= steered["from_frame"], 120, since=0)
            before_end = sum(map(is_chunk, c.seen))
            await c.send({"type": "stop", "job_id": job_id, "request_id": "x"})
            return steered, before_end, await c.terminal(job_id, 120), c.seen

    steered, before_end, done, seen = run(scenario())
    assert done["type"] == "generation_complete", done
    assert before_end >= 2 and steered["from_frame"] > 0
    assert done["timeline"] == [{"from_frame": 0, "prompt": "a red ball moving right"},
                                {"from_frame": steered["from_frame"], "prompt": "a blue cat"}]
    frames, _ = decode_video(base64.b64decode(done["video"]))
    assert len(frames) == done["num_frames"] > steered["from_frame"]


@pytest.mark.parametrize("model", ["tiny-sana-video", "tiny-motif-video"])
def test_text_and_image_jobs_then_lucy_edits_them(stack, model):
    out = watch(stack, {"t2v": {"model": model}, "i2v": {"model": model, "image": png_b64(1)},
                        "i2v-other": {"model": model, "image": png_b64(2)}})
    done = {key: completed(events) for key, events in out.items()}
    videos = {key: decode_video(fetch_video(stack, d))[0] for key, d in done.items()}
    assert all(v.shape == (17, 32, 32, 3) for v in videos.values())
    assert distance(videos["i2v"], videos["i2v-other"]) > 1.0
    edits = watch(stack, {key: {"model": "tiny-lucy-edit", "source_job_id": done[key]["job_id"],
                                "prompt": "make the ball a blue cat"} for key in ("t2v", "i2v")})
    edited = {key: decode_video(fetch_video(stack, completed(events)))[0] for key, events in edits.items()}
    assert all(v.shape == (17, 32, 32, 3) for v in edited.values())
    assert distance(edited["t2v"], edited["i2v"]) > 1.0  # another source, another edit
    assert distance(edited["t2v"], videos["t2v"]) > 1.0  # an edit, not the source again


def test_a_generic_pipeline_job(stack):
    out = watch(stack, {"a": {"model": "tiny-generic", "image": png_b64(1)},
                        "b": {"model": "tiny-generic", "image": png_b64(2)}})
    videos = {key: decode_video(fetch_video(stack, completed(events)))[0] for key, events in out.items()}
    assert videos["a"].shape == (17, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0


def test_framepack_image_to_video_jobs(stack):
    """FramePack makes its clip in sections from a start image: another image, another video; a job without
    one is refused saying so (the model is image-to-video only)."""
    out = watch(stack, {"a": {"model": "tiny-framepack", "image": png_b64(1)},
                        "b": {"model": "tiny-framepack", "image": png_b64(2)}})
    videos = {key: decode_video(fetch_video(stack, completed(out[key])))[0] for key in ("a", "b")}
    assert videos["a"].shape == (17, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": "a ball", "model": "tiny-framepack", **JOB},
                           headers={"Origin": stack.origin})
    assert status == 400 and json.loads(body)["field"] == "image" and "needs a start image" in body.decode(), body
    status, _, body = http("GET", stack.base + "/api/models")
    framepack = next(m for m in json.loads(body)["models"] if m["name"] == "tiny-framepack")["extra"]
    assert (framepack["tasks"], framepack["requires_image"], framepack["live"]) == (["i2v"], True, "continuation")


def mp4_b64(seed: int) -> str:
    frames = np.random.default_rng(seed).integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)
    return base64.b64encode(encode_video(frames, 8.0)).decode()


def test_wan_animate_moves_a_character_image_with_a_driving_video(stack):
    """Wan-Animate takes both a start image (the character) and a source video (the motion): each decides
    the clip; a job with only one of them is refused naming the missing field."""
    job = {"model": "tiny-wan-animate", "prompt": "a person dancing"}
    out = watch(stack, {"a": {**job, "image": png_b64(1), "video": mp4_b64(1)},
                        "other-image": {**job, "image": png_b64(2), "video": mp4_b64(1)},
                        "other-video": {**job, "image": png_b64(1), "video": mp4_b64(2)}})
    videos = {key: decode_video(fetch_video(stack, completed(events)))[0] for key, events in out.items()}
    assert videos["a"].shape == (17, 32, 32, 3)
    assert distance(videos["a"], videos["other-image"]) > 1.0 and distance(videos["a"], videos["other-video"]) > 1.0
    for fields, missing in (({"image": png_b64(1)}, "video"), ({"video": mp4_b64(1)}, "image")):
        status, _, body = http("POST", stack.base + "/api/jobs", {**JOB, **job, **fields},
                               headers={"Origin": stack.origin})
        assert status == 400 and json.loads(body)["field"] == missing, body
    status, _, body = http("GET", stack.base + "/api/models")
    info = next(m for m in json.loads(body)["models"] if m["name"] == "tiny-wan-animate")
    assert info["supports_image"] and info["supports_video"] and info["extra"]["tasks"] == ["animate"]
    assert info["extra"]["requires_image"] and info["extra"]["requires_video"]
    assert "driving video" in info["extra"]["task_inputs"]["animate"]


def test_ltx2_ic_lora_follows_a_reference_video_with_sound(stack):
    """An LTX-2 IC-LoRA model (control only) takes a job's video as the reference its clip follows: another
    reference, another clip, with its sound track; a job without a reference is refused naming the field."""
    job = {"model": "tiny-ltx2-ic", "prompt": "a red ball moving right", "num_frames": 9}
    out = watch(stack, {"a": {**job, "video": mp4_b64(1)}, "b": {**job, "video": mp4_b64(2)}})
    mp4s = {key: fetch_video(stack, completed(events)) for key, events in out.items()}
    videos = {key: decode_video(data)[0] for key, data in mp4s.items()}
    assert videos["a"].shape == (9, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0  # measured 3.2
    done = completed(out["a"])  # an SDR model: no HDR10 master
    status, _, body = http("GET", stack.base + f"/api/jobs/{done['job_id']}/hdr", timeout=30)
    assert "hdr_url" not in done and status == 404 and "no HDR10 master" in json.loads(body)["message"]
    track, rate = decode_audio(mp4s["a"])
    assert rate == 8000 and track.std() > 1e-3
    status, _, body = http("POST", stack.base + "/api/jobs", {**JOB, **job}, headers={"Origin": stack.origin})
    assert status == 400 and json.loads(body)["field"] == "video" and "needs a source video" in body.decode(), body
    status, _, body = http("GET", stack.base + "/api/models")
    info = next(m for m in json.loads(body)["models"] if m["name"] == "tiny-ltx2-ic")
    assert info["supports_video"] and not info["supports_image"] and info["has_audio"]
    assert (info["extra"]["tasks"], info["extra"]["requires_video"], info["extra"]["ic_lora"]) == (["control"], True,
                                                                                                  False)
    assert "reference video" in info["extra"]["task_inputs"]["control"]


def test_ltx2_hdr_remakes_a_reference_video_without_sound_and_keeps_an_hdr10_master(stack):
    """An LTX-2 HDR model (LTX2HDRPipeline, control only) re-makes a job's video in linear HDR, shown in the SDR
    MP4: another reference, another clip; the pipeline discards its sound, so the MP4 has no sound track and
    the model says it makes none. The linear frames come back as an HDR10 master (GET /api/jobs/<id>/hdr) that
    keeps the highlights the SDR MP4 clips at white; SDR models' jobs have none."""
    from generator.hdr import REFERENCE_WHITE_NITS, pq_decode
    from tests.test_hdr import decoded_hdr10

    job = {"model": "tiny-ltx2-hdr", "prompt": "a red ball moving right", "num_frames": 9}
    out = watch(stack, {"a": {**job, "video": mp4_b64(1)}, "b": {**job, "video": mp4_b64(2)}})
    mp4s = {key: fetch_video(stack, completed(events)) for key, events in out.items()}
    videos = {key: decode_video(data)[0] for key, data in mp4s.items()}
    assert videos["a"].shape == (9, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0
    assert decode_audio(mp4s["a"]) is None and completed(out["a"])["has_audio"] is False
    status, _, body = http("GET", stack.base + "/api/models")
    info = next(m for m in json.loads(body)["models"] if m["name"] == "tiny-ltx2-hdr")
    assert info["supports_video"] and not info["has_audio"] and info["extra"]["tasks"] == ["control"]

    done = completed(out["a"])
    assert done["hdr_url"] == f"/api/jobs/{done['job_id']}/hdr"
    status, headers, master = http("GET", stack.base + done["hdr_url"], timeout=30)
    assert status == 200 and headers["Content-Type"] == "video/mp4" and "hdr10" in headers["Content-Disposition"]
    ctx, _, luma, _ = decoded_hdr10(master)
    assert (ctx.color_trc, ctx.color_primaries, luma.shape) == (16, 9, (9, 32, 32))
    linear = pq_decode((luma.astype(float) - 64) / 876) / REFERENCE_WHITE_NITS
    sdr_luma = videos["a"].astype(float) @ [0.2126, 0.7152, 0.0722]
    clipped = sdr_luma >= 250  # white in the SDR MP4 ...
    assert clipped.any() and np.median(linear[clipped]) > 1.5  # ... holds light well above white in the master
    status, _, body = http("GET", stack.base + f"/api/jobs/{done['job_id']}", timeout=30)
    assert json.loads(body)["job"]["hdr_url"] == done["hdr_url"]


def test_chronoedit_edits_a_start_image_in_five_frames(stack):
    """ChronoEdit's clip goes from the start image to its edit (5 frames): another image, another edit; more
    frames (it makes them only with temporal reasoning) and a job without an image are refused."""
    job = {"model": "tiny-chronoedit", "prompt": "make the ball blue", "num_frames": 5}
    out = watch(stack, {"a": {**job, "image": png_b64(1)}, "b": {**job, "image": png_b64(2)}})
    videos = {key: decode_video(fetch_video(stack, completed(events)))[0] for key, events in out.items()}
    assert videos["a"].shape == (5, 32, 32, 3) and distance(videos["a"], videos["b"]) > 1.0
    for fields, field in (({"image": png_b64(1), "num_frames": 9}, "num_frames"), ({}, "image")):
        status, _, body = http("POST", stack.base + "/api/jobs", {**JOB, **job, **fields},
                               headers={"Origin": stack.origin})
        assert status == 400 and json.loads(body)["field"] == field, body
