"""A describe job's body: the video (a finished job's or the uploaded one) -> sampled frames -> the
describer -> caption / answer (+ agreement with the source job's prompt) -> `description_complete`.
Failures are raised (DescribeError: shown to the user) and settled by worker/tasks.py."""
from __future__ import annotations

import time

from django.conf import settings

from generator.builtin.info import INFO as BUILTIN_INFO
from generator.interface import Cancelled
from generator.understanding import DescribeError, get_describer, sample_frames
from videoservice.contract import DescribeParams, DescriptionCompleteEvent, ProgressEvent, StartedEvent
from videoservice.models import Job


def run(run) -> dict:
    from generator.understanding.agreement import prompt_caption_agreement

    job: Job = run.job
    params = DescribeParams.model_validate(job.params)
    run.publish(StartedEvent(job_id=str(job.pk), kind="describe", worker=run.worker, model=job.model,
                             question=params.question, source_job_id=params.source_job_id, private=job.private))

    def progress(step: int, total: int) -> None:
        if run.due(step, total):
            run.publish_progress(ProgressEvent(job_id=str(job.pk), kind="describe", step=step, total_steps=total,
                                               percent=round(100.0 * step / max(total, 1), 1)))

    source = Job.objects.filter(pk=params.source_job_id).first() if params.source_job_id else None
    if params.source_job_id and (source is None or not source.output):
        raise DescribeError(f"the video of job {params.source_job_id} is no longer stored")
    with (source.output if source else job.input_video).open("rb") as fh:
        data = fh.read()
    try:
        describer = get_describer(job.model)
    except (ImportError, OSError, ValueError) as exc:  # a broken checkpoint folder or configuration
        raise DescribeError(f"describer {job.model!r} could not be loaded: {exc}") from None
    frames = sample_frames(data, max_frame_pixels=settings.MAX_INPUT_FRAME_PIXELS,
                           max_total_pixels=settings.MAX_INPUT_VIDEO_PIXELS)
    description = describer.describe(frames, question=params.question, progress=progress,
                                     should_cancel=run.should_cancel)
    if run.should_cancel():
        raise Cancelled()
    result = description.as_dict()
    if source is not None and description.caption:
        agreement = prompt_caption_agreement(source.prompt, description.caption)
        if source.model != BUILTIN_INFO.name:  # attributes are those of the built-in world
            agreement.pop("attributes")
        result["agreement"] = agreement
    elapsed = round(time.monotonic() - run.started, 3)
    if not job.succeed(result=result, elapsed_s=elapsed, step=run.total or 1):
        job.refresh_from_db()
        return {"job_id": str(job.pk), "status": job.status}
    run.publish(DescriptionCompleteEvent(job_id=str(job.pk), model=job.model, source_job_id=params.source_job_id,
                                         question=params.question, elapsed_s=elapsed, private=job.private, **result))
    return {"job_id": str(job.pk), "status": "succeeded", "caption": result["caption"], "answer": result["answer"]}
