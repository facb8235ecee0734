"""A generation job's body: the stored params (read back through the contract) -> the model ->
frames -> MP4 -> storage -> `generation_complete` (base64 + URL) to the job's audience.

While it runs: progress events carry a preview of the model's current estimate (a tiny MP4 of
every frame); frames that can no longer change are encoded at once as fragmented MP4 and streamed
(`video_chunk` events, GET /api/jobs/<id>/stream); the final MP4 is those same packets. The cancel
flag is checked between steps. Failures are raised (GenerationError: shown to the user) and
settled by worker/tasks.py.
"""
from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from typing import Optional

import av
import numpy as np
from django.conf import settings

from generator.builtin.info import INFO as BUILTIN_INFO
from generator.encode import decode_video
from generator.hdr import encode_hdr10
from generator.interface import Cancelled, GenerationError, get_backend, is_out_of_memory
from generator.postprocess import source_clip
from generator.preview import PREVIEW_MIME, preview_mp4
from generator.stream import FragmentedMP4
from generator.understanding import get_describer
from videoservice import bus
from videoservice.contract import (GenerationCompleteEvent, GenerationParams, ProgressEvent, StartedEvent,
                                   VideoChunkEvent)
from videoservice.models import Job, store_video

log = logging.getLogger(__name__)


def run(run) -> dict:
    from generator.longvideo import run_job  # OpenCV and torch: in the pool process that runs the job

    job: Job = run.job
    params = GenerationParams.model_validate(job.params)
    run.publish(StartedEvent(job_id=str(job.pk), worker=run.worker, prompt=job.prompt, model=job.model,
                             params=job.params, private=job.private))

    def progress(step: int, total: int, preview=None) -> None:
        if not run.due(step, total):
            return
        eta = (time.monotonic() - started) / max(step, 1) * (total - step)
        try:
            preview_b64 = preview_mp4(preview, params.fps) if preview is not None else None
        except Exception:
            log.exception("preview failed")
            preview_b64 = None
        run.publish_progress(ProgressEvent(job_id=str(job.pk), step=step, total_steps=total,
                                           percent=round(100.0 * step / max(total, 1), 1), eta_s=round(eta, 2),
                                           preview=preview_b64, preview_mime=PREVIEW_MIME if preview_b64 else None))

    backend = load_backend(job.model)
    request = params.generation_request(job.prompt, load_start_image(job), load_source_video(job, params))
    stream = VideoStream(run, params.final_shape()["fps"], live=settings.STREAM_VIDEO)
    started = time.monotonic()
    try:
        # chunks, then upscaling, then interpolation; progress counts all chunks' steps; final frames
        # are encoded and streamed while the next chunk denoises (or, with STREAM_VIDEO=0, at the end)
        result = run_job(backend, request, params.long_video(), progress=progress, should_cancel=run.should_cancel,
                         on_frames=stream.add if stream.live else None)
        if run.should_cancel():
            raise Cancelled()
        if not stream.live:
            stream.add(result.frames)
        data = stream.finish(result.audio, result.audio_sample_rate)
    finally:
        stream.abort()
    evaluation = evaluate(job, data) if params.evaluate else None
    t, h, w = result.frames.shape[:3]
    return complete(run, data, num_frames=t, height=h, width=w, fps=result.fps, seed=result.seed,
                    step=run.total or params.total_steps, has_audio=result.audio is not None, evaluation=evaluation,
                    hdr=hdr_master(result))


def hdr_master(result) -> Optional[bytes]:
    """An HDR model's linear frames as an HDR10 MP4 (None for SDR models). The SDR MP4 is the job's
    video: a master that cannot be made is logged, not a failed job."""
    if result.hdr_frames is None:
        return None
    try:
        return encode_hdr10(result.hdr_frames, result.fps)
    except (ValueError, av.FFmpegError):
        log.exception("no HDR10 master")
        return None


def load_backend(model: str):
    """The model's backend (loaded once per process); a model that cannot load is the user's error."""
    try:
        return get_backend(model)
    except (GenerationError, KeyError, ImportError, OSError, ValueError, RuntimeError) as exc:
        if is_out_of_memory(exc):
            raise
        raise GenerationError(f"model {model!r} could not be loaded: {exc}") from None


def complete(run, data: bytes, num_frames: int, height: int, width: int, fps: float, seed: int, step: int,
             has_audio: bool = False, evaluation: Optional[dict] = None, timeline: Optional[list] = None,
             hdr: Optional[bytes] = None) -> dict:
    """Store the finished MP4 (and an HDR model's HDR10 master), mark the job succeeded and send
    `generation_complete` (base64 + URL)."""
    job: Job = run.job
    height, width = height - height % 2, width - width % 2  # the encoder crops odd sizes
    stored = store_video(job, data)
    hdr_stored = store_video(job, hdr, "hdr_output") if hdr else ""
    if not job.succeed(output=stored, mime="video/mp4", size_bytes=len(data), fps=float(fps),
                       num_frames=int(num_frames), width=int(width), height=int(height), seed=int(seed),
                       elapsed_s=round(time.monotonic() - run.started, 3), result=evaluation or {},
                       step=step, has_audio=has_audio, hdr_output=hdr_stored):
        job.refresh_from_db()
        return {"job_id": str(job.pk), "status": job.status}
    inline = len(data) <= settings.INLINE_VIDEO_MAX_BYTES
    run.publish(GenerationCompleteEvent(
        job_id=str(job.pk), prompt=job.prompt, model=job.model,
        video=base64.b64encode(data).decode("ascii") if inline else None, url=job.url, mime=job.mime,
        num_frames=job.num_frames, fps=job.fps, width=job.width, height=job.height, seed=job.seed,
        elapsed_s=job.elapsed_s, size_bytes=len(data), private=job.private, has_audio=job.has_audio,
        evaluation=evaluation, **({"timeline": timeline} if timeline is not None else {}),
        **({"hdr_url": job.hdr_url} if job.hdr_url else {})))
    return {"job_id": str(job.pk), "status": "succeeded", "url": job.url, "elapsed_s": job.elapsed_s,
            "size_bytes": len(data)}


class VideoStream:
    """The job's video while it is generated: final frames -> one encoder thread (overlapping the
    denoising of the next chunk) -> `video_chunk` events to the job's audience and the job's Redis
    stream (GET /api/jobs/<id>/stream); at the end, the faststart MP4 of the same packets."""

    def __init__(self, run, fps: float, live: bool = True):
        self.run, self.job_id, self.live = run, str(run.job.pk), live
        self.encoder = FragmentedMP4(fps)
        self.batches: queue.Queue = queue.Queue()
        self.error: Optional[BaseException] = None
        self.seq = 0
        self.ended = False
        self.marks: list = []  # (frame, callback) waiting for that frame to be streamed (encoder thread's)
        self.watched = 0.0  # live jobs: for how long a subscriber who receives a chunk counts as watching
        self.thread = threading.Thread(target=self._encode, name=f"stream-{self.job_id}", daemon=True)
        self.thread.start()

    def add(self, frames) -> None:
        """Final frames, in order (run_job's on_frames; checked here, in the generating thread)."""
        if self.error is not None:
            raise self.error
        self.batches.put(checked_frames(frames))

    def when_streamed(self, frame: int, callback) -> None:
        """Call `callback()` (in the encoder thread) once frame number `frame` has been streamed."""
        self.batches.put((frame, callback))

    def finish(self, audio=None, sample_rate=None) -> bytes:
        """Wait for the last fragments; the final MP4 (with the model's sound track, if any)."""
        self._stop()
        if self.error is not None:
            raise self.error
        return self.encoder.final_mp4(audio, sample_rate)

    def abort(self) -> None:
        """However the job ended: the stream ends too (readers of /stream stop waiting)."""
        self._stop()

    def _stop(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.batches.put(None)
        self.thread.join()
        if self.live:
            bus.stream_append(self.job_id, end=True)

    def _encode(self) -> None:
        while True:
            frames = self.batches.get()
            if isinstance(frames, tuple):
                self.marks.append(frames)
                self._call_marks()
                continue
            if self.error is None:
                try:
                    fragment = self.encoder.close() if frames is None else self.encoder.add(frames)
                    if fragment is not None and self.live:
                        self._send(fragment)
                except Exception as exc:  # raised to the generating thread at its next batch or at finish
                    log.exception("streaming the video of job %s failed", self.job_id)
                    self.error = exc
            if frames is None:
                return

    def _send(self, fragment) -> None:
        bus.stream_append(self.job_id, (fragment.init or b"") + fragment.data)
        self.run.publish(wait=False, watched=self.watched, event=VideoChunkEvent(
            job_id=self.job_id, seq=self.seq, first_frame=fragment.first_frame, num_frames=fragment.num_frames,
            mime=self.encoder.mime, init=base64.b64encode(fragment.init).decode("ascii") if fragment.init else None,
            data=base64.b64encode(fragment.data).decode("ascii")))
        self.seq += 1
        self._call_marks()

    def _call_marks(self) -> None:
        due = [mark for mark in self.marks if mark[0] < self.encoder.frames_out]
        for mark in due:
            self.marks.remove(mark)
            try:
                mark[1]()
            except Exception:  # an announcement that failed must not stop the stream
                log.exception("a streamed-frame callback of job %s failed", self.job_id)


def load_start_image(job: Job):
    if not job.input_image:
        return None
    from PIL import Image

    try:
        with job.input_image.open("rb") as fh:
            img = Image.open(fh)
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # truncated / overwritten / missing file
        raise GenerationError(f"the start image could not be read ({type(exc).__name__}: {exc}); "
                              "submit it again") from None


def load_source_video(job: Job, params: GenerationParams):
    """Video-to-video: the uploaded source or the source job's video, fitted to the job's frame
    count and size (generator.postprocess.source_clip), or None."""
    if not params.video and params.source_job_id is None:
        return None
    source = job.input_video if params.video else getattr(Job.objects.filter(pk=params.source_job_id).first(),
                                                          "output", None)
    if not source:
        raise GenerationError(f"the source video of job {params.source_job_id} is no longer stored")
    try:
        with source.open("rb") as fh:
            return source_clip(fh.read(), params.num_frames, (params.height, params.width),
                               settings.MAX_INPUT_FRAME_PIXELS, settings.MAX_INPUT_VIDEO_PIXELS)
    except (ValueError, OSError) as exc:
        raise GenerationError(f"the source video could not be read ({exc}); submit it again") from None


def checked_frames(frames) -> np.ndarray:
    """A backend's frames as T x H x W x 3 uint8; NaN/Inf (a numerically broken model) is an error."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise GenerationError(f"the model returned frames of shape {frames.shape}, not T x H x W x 3")
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
            raise GenerationError("the model produced NaN/Inf values (numerical instability); "
                                  "try another seed, fewer steps or a float32 model")
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames


def evaluate(job: Job, data: bytes) -> dict:
    """The `evaluate` option: metrics of the MP4 as users get it; for the built-in model also what
    the built-in describer reads in it and how that agrees with the prompt. A failure here is
    reported in the result, it does not fail the finished video."""
    from generator.metrics import video_metrics
    from generator.understanding.agreement import prompt_caption_agreement

    try:
        frames, _ = decode_video(data)
        out = {"metrics": video_metrics(frames)}
        if job.model == BUILTIN_INFO.name:
            caption = get_describer(BUILTIN_INFO.name).describe(frames).caption
            out |= {"caption": caption, "agreement": prompt_caption_agreement(job.prompt, caption)}
        return out
    except Exception as exc:
        log.exception("evaluation of job %s failed", job.pk)
        return {"error": f"evaluation failed: {type(exc).__name__}: {exc}"}
