"""Any diffusers video pipeline without new code, best-effort: the `generic` kind names a pipeline class
(`"pipeline": "generic", "pipeline_class": "MotifVideoPipeline"`) and the tasks the operator says it serves
(`"tasks"`, default text-to-video). The request is mapped by reading the class's `__call__` signature:
prompt, height/width, the frame count (`num_frames`, `frames` or `video_length`), steps
(`num_inference_steps`), guidance (`guidance_scale`), the seed (`generator`), the fps (`frame_rate` /
`fps`), a start image (`image` / `first_frame`), a source video (`video` / `input_video`) and `strength`;
`output_type="np"`, and `output.frames[0]` is the clip. What the signature lacks for a configured task is
refused when the model loads. Frame and size rules are the generic 4k+1 / multiples of 16 unless
`limits` says otherwise; previews assume [B, C, F, H, W] latents (none when they are laid out otherwise).
A family file (generator/families/) is the supported way: it knows its pipeline's rules and extras."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind, pil

FRAME_ARGS = ("num_frames", "frames", "video_length")
FPS_ARGS = ("frame_rate", "fps")
IMAGE_ARGS = ("image", "first_frame")
VIDEO_ARGS = ("video", "input_video")
TASK_ARGS = {"i2v": IMAGE_ARGS, "v2v": VIDEO_ARGS}


class GenericAdapter(FamilyAdapter):
    def named(self, pipe, names) -> str | None:
        """The first of `names` the pipeline's call takes."""
        params = self.backend.call_parameters(pipe)
        return next((name for name in names if name in params), None)

    def check_shared(self, pipe, kind: str) -> None:
        self.check_tasks(pipe)

    def check_tasks(self, pipe) -> None:
        from generator.interface import GenerationError

        for task in self.config.tasks:
            if task in TASK_ARGS and self.named(pipe, TASK_ARGS[task]) is None:
                raise GenerationError(f"model {self.config.name}: {type(pipe).__name__} takes none of "
                                      f"{', '.join(TASK_ARGS[task])}, so it cannot serve {task}; remove it from "
                                      f"'tasks' (the generic kind reads the call's signature)")

    def task_inputs(self, pipe, task: str, req) -> dict:
        size = (req.width, req.height)
        call = {name: value for name, value in ((self.named(pipe, FRAME_ARGS), req.num_frames),
                                                 (self.named(pipe, FPS_ARGS), req.fps)) if name}
        if task == "i2v":
            call[self.named(pipe, IMAGE_ARGS)] = pil(req.image, size)
        elif task == "v2v":
            call[self.named(pipe, VIDEO_ARGS)] = [pil(f, size) for f in req.video]
            call["strength"] = req.strength
        return call


FAMILIES = (
    Family("generic", "any diffusers video pipeline (best-effort, by its call signature)", {
        "generic": PipelineKind("DiffusionPipeline", ("t2v", "i2v", "v2v")),
    }, vae="AutoencoderKL", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=257, size_multiple=16,
        max_size=1280, default_width=832, default_height=480, default_frames=49, default_steps=50,
        default_guidance=5.0, default_fps=16.0, adapter=GenericAdapter),
)
