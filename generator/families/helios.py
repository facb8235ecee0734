"""Helios (PKU-YuanGroup): chunk-causal video generation on Wan's VAE. Each chunk (9 latent frames =
33 frames by default) is denoised while the transformer attends to a history window of earlier latents
(long / mid / short: 16 + 2 + 1 latent frames) and to the first frame's latents (`image_latents`,
"keep_first_frame"); `HeliosPyramidPipeline` denoises each chunk in three resolution stages (Helios-Mid,
and Helios-Distilled with few steps per stage). 640x384, 24 fps on its card.

Tasks: t2v; i2v (the start image is the first frame and the history's last entry); condition, which
is Helios's own video-to-video: a given clip becomes the history and the clip made CONTINUES it (the
frames that follow; the given frames are not returned and there is no strength): a job's source video
goes there. Live: `live_chunks` drives the pipeline one chunk per call, carrying the history latents and
the first frame's latents itself, so every chunk is decoded and yielded as soon as it is made, each
under the prompt in force when it starts (re-encoded only when it changed).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator, Optional

from generator.families.base import Clip, Family, FamilyAdapter, PipelineKind, pil

CHUNK_LATENT_FRAMES = 9  # the pipelines' num_latent_frames_per_chunk default (33 frames)
HISTORY_SIZES = (16, 2, 1)  # the pipelines' history_sizes default (long, mid, short latent frames)
SINGULAR_MARGIN = 1e-5  # how far inside the pyramid noise's positive-definite bound gamma is kept (loaded)


class HeliosAdapter(FamilyAdapter):
    live = "native"
    continues_video = True
    task_needs = {"condition": "a source video (`video` or `source_job_id`) that the clip continues: the clip "
                               "is the frames that follow it (Helios video-to-video; `strength` is not used)"}

    def capabilities(self) -> dict:
        found = dict(super().capabilities())
        found.pop("continuation_frames", None)  # its V2V returns only the new frames: long videos go i2v
        if {"t2v", "i2v"} & set(self.config.tasks):
            found["live_chunks"] = self.live_chunks
        return found

    def loaded(self, pipe, path: str) -> None:
        """The pyramid pipeline draws each stage's noise with covariance (1+g)I - gJ over a patch's b pixels
        and takes its Cholesky factor. That matrix is singular at g = 1/(b-1), the schedulers' default
        (1/3 for 2x2 patches): rounding leaves its last eigenvalue at about +-3e-8 in float32, and whether
        the factorisation succeeds depends on the CPU (it fails on some AMD EPYC). A g within 1e-5 of the
        bound is moved just inside it, so the matrix is positive definite by 3e-5: the noise and the sigma
        correction change by about 1e-5 relative."""
        gamma = pipe.scheduler.config.get("gamma")
        if gamma is None or not hasattr(pipe, "sample_block_noise"):
            return
        _, ph, pw = pipe.transformer.config.patch_size
        bound = 1.0 / (ph * pw - 1)
        if gamma > bound - SINGULAR_MARGIN:
            pipe.register_modules(scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config,
                                                                              gamma=bound - SINGULAR_MARGIN))

    # ---------------------------------------------------------------- one clip
    def chunk_latent_frames(self, pipe, num_frames: int) -> int:
        """Latent frames per chunk: the checkpoint's native chunk, or fewer for a shorter clip."""
        native = int(self.config.pipeline_kwargs.get("num_latent_frames_per_chunk", CHUNK_LATENT_FRAMES))
        return min(native, (num_frames - 1) // pipe.vae_scale_factor_temporal + 1)

    def task_inputs(self, pipe, task: str, req) -> dict:
        if task != "condition":
            return super().task_inputs(pipe, task, req)
        if req.video is not None:
            given = req.video
        else:
            given = req.start_frames if req.start_frames is not None else req.image[None]
        size = (req.width, req.height)
        window = (self.chunk_latent_frames(pipe, req.num_frames) - 1) * pipe.vae_scale_factor_temporal + 1
        if len(given) < window:  # the pipeline encodes whole chunks of history: repeat the first frame before
            given = [given[0]] * (window - len(given)) + list(given)
        return {"video": [pil(f, size) for f in given]}

    def one_clip(self, task: str, call: dict, req) -> Clip:
        pipe = self.backend.pipe_for(task)
        k = self.chunk_latent_frames(pipe, req.num_frames)
        call["num_latent_frames_per_chunk"] = k
        call.update(self.stage_steps(pipe, req.steps))
        t = pipe.vae_scale_factor_temporal
        window = (k - 1) * t + 1
        chunks = -(-req.num_frames // window)
        made = (chunks * window - 1) // t * t + 1  # each chunk decodes to `window` frames; trimmed to tk+1
        per_chunk = self.steps_per_chunk(call, req.steps)
        amplified = self.config.pipeline_kwargs.get("is_amplify_first_chunk") and pipe.config.get("is_distilled")
        return Clip(made, keep=slice(0, req.num_frames), steps=(chunks + bool(amplified)) * per_chunk)

    def stage_steps(self, pipe, steps: int) -> dict:
        """The pyramid pipeline takes its steps per resolution stage: `steps` spread over its stages
        (unless the entry or its preset fixes `pyramid_num_inference_steps_list`)."""
        if "pyramid_num_inference_steps_list" not in self.backend.call_parameters(pipe):
            return {}
        fixed = self.config.pipeline_kwargs.get("pyramid_num_inference_steps_list")
        if fixed is not None and sum(fixed) == steps:
            return {}
        stages = int(pipe.scheduler.config.stages)
        return {"pyramid_num_inference_steps_list": [max(1, steps // stages + (i < steps % stages))
                                                     for i in range(stages)]}

    def steps_per_chunk(self, call: dict, steps: int) -> int:
        return sum(call.get("pyramid_num_inference_steps_list") or
                   self.config.pipeline_kwargs.get("pyramid_num_inference_steps_list") or [steps])

    # ---------------------------------------------------------------- live
    def live_chunks(self, request, prompt_at: Callable[[int], str],
                    should_cancel: Optional[Callable[[], bool]] = None) -> Iterator:
        """Endless video, one pipeline call per chunk: yields each chunk's frames (T x H x W x 3 uint8) as
        soon as it is decoded. The history latents (the last 16 + 2 + 1 latent frames) and the first
        frame's latents are carried from call to call, as the pipeline's own loop carries them; the prompt
        of chunk i is `prompt_at(i)`, re-encoded when it changed. Chunk i uses seed + i. Ends when the
        caller closes the generator or `should_cancel()` is true between chunks (inside a chunk it raises
        Cancelled, as generate does)."""
        import torch

        backend = self.backend
        req = backend.checked(replace(request, video=None, start_frames=None))
        task = "i2v" if req.image is not None else "t2v"
        pipe = backend.pipe_for(task)
        k = self.chunk_latent_frames(pipe, req.num_frames)
        chunk_req = replace(req, num_frames=(k - 1) * pipe.vae_scale_factor_temporal + 1)
        first, history = (None, None) if req.image is None else self.image_latents(pipe, chunk_req, k)
        prompt, embeds, i = None, {}, 0
        while should_cancel is None or not should_cancel():
            if prompt_at(i) != prompt:
                prompt = prompt_at(i)
                embeds = self.encode(pipe, prompt, chunk_req)
            final = []
            call = dict(embeds, prompt=None, negative_prompt=None, num_latent_frames_per_chunk=k,
                        image_latents=first, add_noise_to_image_latents=False, video_latents=history,
                        add_noise_to_video_latents=False, **self.stage_steps(pipe, req.steps))
            if i:  # every call is a "first chunk" to the pipeline: Helios-Distilled's doubled steps only once
                call["is_amplify_first_chunk"] = False
            result = backend.run(pipe, task, replace(chunk_req, prompt=prompt, seed=req.seed + i), call,
                                 None, should_cancel, on_latents=final.append)
            latents = final[-1].float()
            if first is None:  # text-to-video: the first chunk's first latent frame leads every later chunk
                first = latents[:, :, :1]
            history = latents if history is None else torch.cat([history, latents], dim=2)
            history = history[:, :, -sum(HISTORY_SIZES):]
            yield result.frames
            i += 1

    def encode(self, pipe, prompt: str, req) -> dict:
        """The prompt's (and, with guidance, the negative prompt's) embeddings, once per prompt."""
        import torch

        with torch.inference_mode():
            positive, negative = pipe.encode_prompt(
                prompt=prompt, negative_prompt=self.config.negative_prompt,
                do_classifier_free_guidance=req.guidance_scale > 1.0,
                max_sequence_length=int(self.config.max_sequence_length or 512), device=pipe._execution_device)
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}

    def image_latents(self, pipe, req, k: int) -> tuple:
        """A start image -> (its latents: every chunk's first-frame prefix, the history it starts): as the
        pipeline prepares them for image-to-video, without its noise augmentation."""
        import torch

        vae = pipe.vae
        device = pipe._execution_device
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(device, vae.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(device, vae.dtype)
        image = pipe.video_processor.preprocess(pil(req.image), height=req.height, width=req.width)
        generator = torch.Generator(device=device).manual_seed(int(req.seed))
        with torch.inference_mode():
            return pipe.prepare_image_latents(image, mean, inv_std, k, dtype=torch.float32, device=device,
                                              generator=generator)


HELIOS = dict(vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=1441, max_size=1280,
              default_width=640, default_height=384, default_frames=33, default_fps=24.0, adapter=HeliosAdapter)
FAMILIES = (
    Family("helios", "Helios (PKU-YuanGroup), chunk-causal real-time video", {
        "helios": PipelineKind("HeliosPipeline", ("t2v", "i2v", "condition")),
    }, size_multiple=16, default_steps=50, default_guidance=5.0, **HELIOS),
    # each chunk in three resolution stages (latents halved twice, then patchified 2x2): multiples of 64
    Family("helios-pyramid", "Helios pyramid (Helios-Mid, Helios-Distilled), chunk-causal real-time video", {
        "helios-pyramid": PipelineKind("HeliosPyramidPipeline", ("t2v", "i2v", "condition")),
    }, size_multiple=64, default_steps=30, default_guidance=5.0, **HELIOS),
)
