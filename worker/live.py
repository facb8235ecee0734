"""A live job's body: endless video, streamed chunk by chunk while it is made, steered by its owner.

    stored params -> the model -> generator.live.LiveVideo (chunk after chunk, each continuing the
    last frames, each under the prompt in force when it starts) -> VideoStream (fMP4 `video_chunk`
    events, /stream) -> on its end, the whole session's MP4 -> storage -> `generation_complete`
    with the prompt timeline.

Between two chunks the worker reads the job's row (`Job.live_commands`): a new prompt asked with
`steer` starts the next chunk (its first frame is `from_frame` of a new timeline entry, announced
with `steered` once that frame is streamed); `stop` ends it gracefully. It also ends at
max_duration_s, on a cancel (nothing kept), or when no subscriber received a chunk for LIVE_IDLE_S
(videoservice/bus.py `is_watched`). Pacing: at most LIVE_MAX_LEAD_S seconds of video ahead of
real-time playback from the first chunk, so a steer shows within about a chunk; `live_status`
(real-time factor, lead) every LIVE_STATUS_EVERY chunks tells the audience when it falls behind.
"""
from __future__ import annotations

import logging
import math
import time

from django.conf import settings

from generator.interface import Cancelled
from videoservice import bus, metrics
from videoservice.contract import GenerationParams, LiveStatusEvent, SteeredEvent, StartedEvent
from videoservice.models import Job
from worker.generation import VideoStream, complete, load_backend, load_start_image

log = logging.getLogger(__name__)
PACE_CHECK_S = 0.2  # how often a paced wait looks at stop / cancel


class LiveSession:
    """What the worker knows of a live job between chunks: the prompt timeline, why it should end,
    its pace."""

    def __init__(self, run, params: GenerationParams, stream: VideoStream):
        self.run, self.job, self.stream = run, run.job, stream
        self.fps = params.fps
        self.max_frames = max(1, math.floor(params.max_duration_s * params.fps + 1e-9))
        self.timeline: list = [{"from_frame": 0, "prompt": self.job.prompt}]
        self.streamed_prompt = self.job.prompt  # what the newest streamed frames were made under
        self.stop_reason = None
        self.video = None  # the LiveVideo, for the frame count a new prompt starts at
        self.started = time.monotonic()  # generation starts (model loaded)
        self.first_chunk_at = None
        self.last_chunk_at = None
        stream.watched = settings.LIVE_IDLE_S

    @property
    def prompt(self) -> str:
        return self.timeline[-1]["prompt"]

    def prompt_at(self, index: int) -> str:
        """The prompt chunk `index` starts under (LiveVideo asks just before making it)."""
        asked, stop = self.job.live_commands()
        if stop:
            self.stop_reason = self.stop_reason or "stopped"
        if asked != self.prompt and index > 0:
            from_frame = self.video.emitted
            self.timeline.append({"from_frame": from_frame, "prompt": asked})
            self.job.record_timeline(self.timeline)
            log.info("live job %s steered at frame %d: %r", self.job.pk, from_frame, asked[:80])
            self.stream.when_streamed(from_frame, lambda: self.shown(asked, from_frame))
        return self.prompt

    def shown(self, prompt: str, from_frame: int) -> None:
        """The first frame made under `prompt` is streamed (the encoder thread): `steered`, and from
        now on `live_status` names it (named when its chunk was made, it reached pages before
        `steered` and before its frames)."""
        self.streamed_prompt = prompt
        self.run.publish(SteeredEvent(job_id=str(self.job.pk), prompt=prompt, from_frame=from_frame), wait=False)

    def streamed(self, chunk) -> None:
        """A chunk went to the stream: pace, report, and decide whether to go on."""
        now = time.monotonic()
        if self.first_chunk_at is None:
            self.first_chunk_at = now
        previous, previous_ttl = self.last_chunk_at, self.stream.watched
        if previous is not None:  # a model slower than LIVE_IDLE_S a chunk is not "unwatched"
            self.stream.watched = max(settings.LIVE_IDLE_S, 2 * (now - previous))
        self.last_chunk_at = now
        frames = chunk.first_frame + len(chunk.frames)
        if chunk.index % max(1, settings.LIVE_STATUS_EVERY) == 0:
            rate = frames / self.fps / max(now - self.started, 1e-6)
            metrics.record_live_rate(str(self.job.pk), self.job.model, rate)
            self.run.publish(LiveStatusEvent(job_id=str(self.job.pk), realtime_factor=round(rate, 3),
                                             lead_s=round(self.lead(frames), 3), frames=frames,
                                             prompt=self.streamed_prompt, chunk_s=round(self.video.last_chunk_s, 3)),
                             wait=False)
        if self.stop_reason is None and self.job.live_commands()[1]:
            self.stop_reason = "stopped"
        # whoever received the previous chunk renewed its key for previous_ttl (the start: LIVE_IDLE_S)
        if self.stop_reason is None and now - (previous or self.started) < previous_ttl \
                and not bus.is_watched(str(self.job.pk)):
            self.stop_reason = "idle"
        if self.stop_reason is None:
            self.pace(frames)

    def lead(self, frames: int) -> float:
        """Seconds of video made ahead of playback that started with the first chunk."""
        return frames / self.fps - (time.monotonic() - self.first_chunk_at)

    def pace(self, frames: int) -> None:
        """Wait while more than LIVE_MAX_LEAD_S is buffered ahead of playback (a steer then shows
        within about one chunk); stop and cancel still end the wait."""
        while (ahead := self.lead(frames) - settings.LIVE_MAX_LEAD_S) > 0:
            if self.run.should_cancel():
                return
            _, stop = self.job.live_commands()
            if stop:
                self.stop_reason = "stopped"
                return
            # measured once: the checks above take time, and a second reading could be past the lead (negative)
            time.sleep(min(PACE_CHECK_S, ahead))


def run(run) -> dict:
    from generator.live import LiveVideo  # torch: in the pool process that runs the job

    job: Job = run.job
    params = GenerationParams.model_validate(job.params)
    run.publish(StartedEvent(job_id=str(job.pk), worker=run.worker, prompt=job.prompt, model=job.model,
                             params=job.params, private=job.private))
    backend = load_backend(job.model)
    request = params.generation_request(job.prompt, load_start_image(job))
    bus.start_watching(str(job.pk))
    stream = VideoStream(run, params.fps, live=True)
    session = LiveSession(run, params, stream)
    session.video = video = LiveVideo(backend, request, prompt_at=session.prompt_at, should_cancel=run.should_cancel)
    try:
        for chunk in video:
            frames = chunk.frames[:session.max_frames - chunk.first_frame]
            stream.add(frames)
            if chunk.first_frame + len(frames) >= session.max_frames:
                session.stop_reason = "max_duration_s"
            else:
                session.streamed(chunk)
            if session.stop_reason is not None or run.should_cancel():
                break
        if run.should_cancel():
            raise Cancelled()
        tail = video.tail()
        if tail is not None and session.stop_reason != "max_duration_s":
            stream.add(tail)
        data = stream.finish()
    finally:
        stream.abort()
    total = stream.encoder.frames_in
    log.info("live job %s ended (%s) after %d frames, %d prompts", job.pk, session.stop_reason, total,
             len(session.timeline))
    job.record_timeline(session.timeline)
    return complete(run, data, num_frames=total, height=request.height, width=request.width, fps=params.fps,
                    seed=params.seed, step=run.total or params.total_steps, timeline=session.timeline)
