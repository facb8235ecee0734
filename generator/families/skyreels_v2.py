"""SkyReels-V2 diffusion forcing (Skywork): Wan's VAE; any length in overlapping chunks the pipeline makes
itself (`generate_long`: one call conditions each chunk on the last latents); its V2V pipeline continues a
given clip (the "condition" task). 960x544, 97 frames, 24 fps."""
from __future__ import annotations

from generator.families.base import Clip, Family, FamilyAdapter, PipelineKind, pil

ADDNOISE = 20  # noise on the history frames of long videos (its documented value)


class SkyReelsV2Adapter(FamilyAdapter):
    def capabilities(self) -> dict:
        found = {"continuation_frames": self.continuation_frames}  # chunked: it continues natively
        if {"t2v", "i2v"} & set(self.config.tasks):
            found["generate_long"] = self.generate_long
        return found

    def addnoise(self) -> int:
        return self.config.pipeline_kwargs.get("addnoise_condition", ADDNOISE)

    def task_inputs(self, pipe, task: str, req) -> dict:
        if task != "condition":
            return super().task_inputs(pipe, task, req)
        given = req.start_frames if req.start_frames is not None else req.image[None]
        # V2V: num_frames counts the given clip's last k frames (re-made first) and returns the clip + those
        # num_frames; its history must be shorter than the chunk
        n = req.num_frames
        k = self.rule_frames(min(len(given), n - self.family.frame_multiple))
        return {"video": [pil(f, (req.width, req.height)) for f in given[-k:]], "num_frames": n,
                "base_num_frames": n, "overlap_history": k, "addnoise_condition": self.addnoise()}

    def call_arguments(self, req) -> dict:
        return {"fps": int(round(req.fps))}  # embedded by the transformer

    def one_clip(self, task: str, call: dict, req) -> Clip:
        if "overlap_history" in call:  # V2V: the given clip, then the clip it made
            return Clip(req.num_frames + len(call["video"]), keep=slice(-req.num_frames, None))
        call["base_num_frames"] = req.num_frames  # one chunk: the pipeline's own chunking stays off
        return Clip(req.num_frames)

    def generate_long(self, request, num_chunks: int, shared: int, progress=None, should_cancel=None):
        """`num_chunks` chunks of the request's num_frames sharing `shared` frames, made by the
        diffusion-forcing pipeline itself in one call (it conditions each chunk on the last latents)."""
        from generator.interface import GenerationError

        backend = self.backend
        req = backend.checked(request)
        task = "i2v" if req.image is not None else "t2v"
        if task not in self.config.tasks:
            raise GenerationError(f"model {self.config.name} has no {task} pipeline for a long video")
        pipe = backend.pipe_for(task)
        total = num_chunks * req.num_frames - (num_chunks - 1) * shared
        call = dict(self.task_inputs(pipe, task, req), num_frames=total, base_num_frames=req.num_frames,
                    overlap_history=shared, addnoise_condition=self.addnoise())
        return backend.run(pipe, task, req, call, progress, should_cancel, total_steps=num_chunks * req.steps,
                           num_frames=total)


FAMILIES = (
    Family("skyreels-v2", "SkyReels-V2 diffusion forcing (Skywork)", {
        "skyreels-v2": PipelineKind("SkyReelsV2DiffusionForcingPipeline", ("t2v",)),
        "skyreels-v2-i2v": PipelineKind("SkyReelsV2DiffusionForcingImageToVideoPipeline", ("i2v",)),
        "skyreels-v2-v2v": PipelineKind("SkyReelsV2DiffusionForcingVideoToVideoPipeline", ("condition",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=257,
        size_multiple=16, max_size=1280, default_width=960, default_height=544, default_frames=97,
        default_steps=30, default_guidance=6.0, default_fps=24.0, adapter=SkyReelsV2Adapter, vae_dtype="float32"),
)
