"""Wan-Animate (Wan 2.2 Animate 14B): a character image animated by a driving video. The transformer takes
the noisy latents, the character's latents and the previous segment's last frame (36 channels), a pose
video's latents, and face frames through its motion encoder (512 x 512 by default); CLIP-H reads the
character image. The clip is made in segments of 77 frames, each continuing the last frame of the one
before, and is as long as the driving video. 1280x720 at 30 fps, 20 steps, no classifier-free guidance
(its example).

The job's start image is the character, its source video the driving video. The pipeline's "animate"
mode takes a pose video (Wan-Animate's preprocessing: a rendered pose skeleton) and a face video (face
crops); that preprocessing (pose and face detectors) is not part of diffusers and not run here: the
driving video goes in as the pose video as it is, and its frames resized to the motion encoder's size as
the face video, so a client sends the pose rendering it made. "replace" mode (the character put into a
background video under a mask) needs two more videos than a job carries and is not offered.
"""
from __future__ import annotations

from generator.families.base import Clip, Family, FamilyAdapter, PipelineKind, pil

SEGMENT_FRAMES = 77  # the pipeline's segment_frame_length default


class WanAnimateAdapter(FamilyAdapter):
    task_needs = {"animate": "a character image (`image`) and a driving video (`video` or `source_job_id`, the pose "
                             "rendering: sent as the pose video, and resized as the face video); the clip is as long "
                             "as the video; `strength` is not used"}

    def task_inputs(self, pipe, task: str, req) -> dict:
        size = (req.width, req.height)
        face = int(pipe.transformer.config.motion_encoder_size)
        return {"image": pil(req.image, size), "pose_video": [pil(f, size) for f in req.video],
                "face_video": [pil(f, (face, face)) for f in req.video], "mode": "animate"}

    def one_clip(self, task: str, call: dict, req) -> Clip:
        """A clip shorter than one segment is one segment of its length; a longer one takes segments that
        each share one frame with the one before (the pipeline's prev_segment_conditioning_frames)."""
        segment = min(int(self.config.pipeline_kwargs.get("segment_frame_length", SEGMENT_FRAMES)), req.num_frames)
        shared = int(self.config.pipeline_kwargs.get("prev_segment_conditioning_frames", 1))
        call["segment_frame_length"] = segment
        segments = max(1, -(-(req.num_frames - shared) // (segment - shared)))
        return Clip(req.num_frames, steps=segments * req.steps)


FAMILIES = (
    Family("wan-animate", "Wan-Animate (Wan 2.2 Animate 14B): a character image moved by a driving video", {
        "wan-animate": PipelineKind("WanAnimatePipeline", ("animate",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=481, size_multiple=16,
        max_size=1280, default_width=1280, default_height=720, default_frames=77, default_steps=20,
        default_guidance=1.0, default_fps=30.0, adapter=WanAnimateAdapter, vae_dtype="float32"),
)
