"""LTX-2 (Lightricks): LTX's latent grid, a Gemma 3 prompt encoder, and a sound track (audio VAE +
vocoder) generated with the video and muxed into the MP4. Settings of diffusers' LTX-2 example (30
steps, guidance 3, 24 fps). T2V, I2V and its condition pipeline (continuation); a latent upsampler.

`ltx2-ic-lora` (LTX2InContextPipeline) serves `control`: the job's video is a reference (depth, pose,
edges... what the IC-LoRA was trained on) encoded into latent tokens appended to the noisy ones for the
whole clip (`LTX2ReferenceCondition`, fully clean: strength 1), which the In-Context LoRA attends to.
The entry's `ic_lora` (a .safetensors file or a folder holding one) is loaded with the pipeline's LoRA
loader (needs the `peft` package) into the transformer every kind of the entry shares; it is switched
on for control jobs only, so `["ltx2", "ltx2-ic-lora"]` still makes plain text-to-video. A LoRA trained
on downscaled references says so in its file's metadata (`reference_downscale_factor`), which is passed.

`ltx2-hdr` (LTX2HDRPipeline, with the HDR IC-LoRA as the entry's `ic_lora`) also serves `control`: the job's video
(SDR) is re-made as the same content in linear HDR (LogC3 decoded, 1.0 = diffuse white, highlights above it), video
only. The MP4 is SDR H.264 like every job's: `generator.hdr.to_display` clips at 1.0 and applies the sRGB
transfer, as diffusers' `encode_hdr_tensor_to_mp4` and Lightricks' reference export do; the linear frames are
kept as the job's HDR10 master (`generator.hdr.encode_hdr10`, the job's `hdr_url`).

An `ltx2-dfr` entry makes LTX-2.5's composed recipe from its pass's latents and keyframe slots
(`generate_refined`): with an `upsampler`, a job's `upscale` 2 is a second DFR pass at twice the size from the
upsampled latents and slots; with a `temporal_upsampler`, its `interpolate` 2 or 4 is one or two
LTX2DFRTemporalRefinePipeline rounds, each doubling the latent frames and re-denoising the canvas tile by tile
between the keyframes. The sound is the first pass's.

An entry's `decoder` (LTX-2.5's diffusion decoder, LTX2VideoDiffusionDecodePipeline) decodes the video latents
in place of the VAE: the pipelines run with output_type="latent" (denormalised video latents, and the audio
latents, which are decoded here as the pipelines decode them), the decoder denoises pixels from them with a
generator seeded with the job's seed.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from generator.families.base import Family, PipelineKind, pil
from generator.families.ltx import LTXAdapter
from generator.interface import GenerationError

ADAPTER_NAME = "ic_lora"


DFR_CLASS = "LTX2DFRPipeline"
DFR_DEFAULT_SIGMAS = 8  # len(diffusers' DISTILLED_SIGMA_VALUES), what LTX2DFRPipeline runs unless given sigmas


def dfr_sigmas(steps: int) -> list | None:
    """The sigmas a DFR pass of `steps` steps is given (it takes no step count): None for its own 8 distilled
    ones, else `steps` evenly spaced from 1."""
    if steps == DFR_DEFAULT_SIGMAS:
        return None
    return [float(s) for s in np.linspace(1.0, 1.0 / steps, steps)]


def refine_round_steps(num_frames: int, rounds: int, temporal_ratio: int) -> list:
    """Denoising steps of each temporal refine round after a DFR pass of `num_frames`: its sigmas on each tile of
    the round's canvas, which is split on the keyframe seams (diffusers' own canvas and tile plans)."""
    from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas, temporal_tile_plan
    from diffusers.pipelines.ltx2.utils import TEMPORAL_ROUND_DISTILLED_SIGMA_VALUES

    canvas, segment, positions = resolve_canvas(num_frames, temporal_ratio)
    steps = []
    for r in range(1, rounds + 1):
        canvas = 2 * (canvas - 1) + 1
        tiles = temporal_tile_plan([2 * p for p in positions], canvas, 2 ** r, temporal_ratio)
        steps.append(len(TEMPORAL_ROUND_DISTILLED_SIGMA_VALUES) * len(tiles))
        positions = list(range(segment, canvas, segment))  # the keyframes a round carries: every segment's end
    return steps


def lora_file(path: str) -> str:
    """The entry's `ic_lora` -> its .safetensors file (a folder must hold exactly one)."""
    if os.path.isfile(path):
        return path
    found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors")) if os.path.isdir(path) else []
    if len(found) != 1:
        raise ValueError(f"{path} must be an IC-LoRA .safetensors file or a folder holding one; "
                         f"{'it holds ' + ', '.join(found) if found else 'none found'}")
    return os.path.join(path, found[0])


class LTX2Adapter(LTXAdapter):
    condition_kinds = ("ltx2-condition", "ltx2-dfr")
    reference_downscale_factor = None  # from the IC-LoRA's metadata, when it says

    @staticmethod
    def conditions(frames) -> dict:
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        return {"conditions": [LTX2VideoCondition(frames=frames, index=0)]}

    def call_arguments(self, req) -> dict:
        return {"frame_rate": float(req.fps)}

    def capabilities(self) -> dict:
        out = super().capabilities()
        if any(self.config.native_factors.values()):
            out.update(native_factors=self.config.native_factors, generate_refined=self.generate_refined)
        return out

    # ---------------------------------------------------------------- LTX-2.5's refine passes
    def generate_refined(self, request, upscale: int, interpolate: int, progress=None, should_cancel=None):
        """LTX-2.5's composed recipe from the DFR pass's latents and keyframe slots: `upscale` 2 is a second DFR pass
        at twice the size from the latent upsampler's latents and slots (diffusers' stage-2 sigmas), each doubling
        of `interpolate` a temporal refine round ((T - 1) x 2 + 1 frames at twice the fps), and the last call
        decodes; the sound is the first pass's. None when the request's task runs a kind without keyframe slots
        (the generic post-steps follow)."""
        import torch
        from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES, TEMPORAL_ROUND_DISTILLED_SIGMA_VALUES

        backend = self.backend
        req = backend.checked(request)
        task = backend.task_for(req)
        pipe = backend.pipe_for(task)
        if not self.family.kinds[self.config.tasks[task]].keyframes:
            return None
        rounds = refine_round_steps(req.num_frames, int(math.log2(interpolate)), pipe.vae_temporal_compression_ratio)
        detail = len(STAGE_2_DISTILLED_SIGMA_VALUES) if upscale == 2 else 0
        total = req.steps + detail + sum(rounds)
        done = [0]

        def counted(step, _, preview):  # one call's steps -> the recipe's (previews: the first pass's)
            progress(done[0] + step, max(total, done[0] + step), preview if done[0] == 0 else None)

        report = counted if progress is not None else None
        first = backend.run(pipe, task, req, dict(self.task_inputs(pipe, task, req), output_type="latent"), report,
                            should_cancel, raw=True)
        done[0] = req.steps
        output, made = first, req
        if upscale == 2:
            made = replace(req, width=2 * req.width, height=2 * req.height)
            with torch.inference_mode():  # the slots go through together, as Lightricks' recipe upsamples them
                latents, slots = (backend.upsampler(latents=x, latents_normalized=False, output_type="latent").frames
                                  for x in (first.frames, first.keyframes))
            call = dict(self.task_inputs(pipe, task, made), latents=latents, keyframes_latents=slots,
                        keyframe_positions=first.keyframe_positions, audio_latents=first.audio,
                        sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES))
            if not rounds:  # this pass decodes; its re-noised sound gives way to the first pass's
                result = backend.run(pipe, task, made, call, report, should_cancel)
                with torch.inference_mode():
                    result.audio, result.audio_sample_rate = backend.track_of(pipe, self.sound(pipe, first.audio),
                                                                              req.num_frames, float(req.fps))
                return result
            output = backend.run(pipe, task, made, dict(call, output_type="latent"), report, should_cancel, raw=True)
            done[0] += detail
        canvas = (output.frames.shape[2] - 1) * pipe.vae_temporal_compression_ratio + 1  # padded to whole segments
        for r in range(1, len(rounds) + 1):
            fps = req.fps * 2 ** (r - 1)
            call = {"latents": output.frames, "keyframes_latents": output.keyframes,
                    "keyframe_positions": output.keyframe_positions, "audio_latents": first.audio,
                    "num_frames": 2 ** (r - 1) * (canvas - 1) + 1, "frame_rate": float(fps),
                    "source_seconds": canvas / float(req.fps), "round_index": r,
                    "sigmas": list(TEMPORAL_ROUND_DISTILLED_SIGMA_VALUES)}  # its own, not the entry's DFR schedule
            if r < len(rounds):
                output = backend.run(backend.temporal_refiner, task, made, dict(call, output_type="latent"), report,
                                     should_cancel, raw=True)
                done[0] += rounds[r - 1]
        final = replace(made, fps=req.fps * interpolate)
        result = backend.run(backend.temporal_refiner, task, final, call, report, should_cancel,
                             num_frames=interpolate * (canvas - 1) + 1)
        keep = interpolate * (req.num_frames - 1) + 1  # the canvas's padding off the end
        result.frames = result.frames[:keep]
        if result.audio is not None:
            result.audio = result.audio[:round(keep / final.fps * result.audio_sample_rate)]
        return result

    # ---------------------------------------------------------------- the diffusion decoder
    def decode_video(self, latents, seed: int):
        import torch

        decoder = self.backend.decoder
        generator = torch.Generator(device=decoder._execution_device).manual_seed(int(seed))
        # an LTX-2 pipeline's latent output is denormalised already
        frames = decoder(latents[:1], generator=generator, output_type="np", denormalize=False).frames
        return np.asarray(frames[0])

    def decoded(self, pipe, output, seed: int, num_frames: int):
        from diffusers.pipelines.ltx2.pipeline_output import LTX2PipelineOutput
        from diffusers.pipelines.ltx2.utils import trim_canvas

        # a DFR pass's latents are its canvas, padded to whole keyframe segments
        latents = trim_canvas(output.frames, num_frames, pipe.vae_temporal_compression_ratio)
        return LTX2PipelineOutput(frames=self.decode_video(latents, seed)[None], audio=self.sound(pipe, output.audio))

    @staticmethod
    def sound(pipe, audio_latents):
        """Audio latents as the pipelines' own non-latent branch decodes them: audio VAE -> mel -> vocoder."""
        mel = pipe.audio_vae.decode(audio_latents.to(pipe.audio_vae.dtype), return_dict=False)[0]
        return pipe.vocoder(mel)

    # ---------------------------------------------------------------- IC-LoRA
    def loaded(self, pipe, path: str) -> None:
        """Load the entry's IC-LoRA into the shared transformer (every LTX-2 pipeline has the loader)."""
        if not self.config.ic_lora:
            return
        from safetensors import safe_open

        try:
            weights = lora_file(self.config.ic_lora)
            with safe_open(weights, "pt") as fh:
                factor = (fh.metadata() or {}).get("reference_downscale_factor")
            pipe.load_lora_weights(os.path.dirname(weights), weight_name=os.path.basename(weights),
                                   adapter_name=ADAPTER_NAME, local_files_only=True)
        except Exception as exc:
            hint = " (loading a LoRA needs the peft package: pip install peft)" if "PEFT" in str(exc) else ""
            raise GenerationError(f"model {self.config.name}: cannot load the IC-LoRA {self.config.ic_lora}: "
                                  f"{exc}{hint}") from exc
        self.reference_downscale_factor = int(float(factor)) if factor else None

    def task_inputs(self, pipe, task: str, req) -> dict:
        inputs = self._inputs(pipe, task, req)
        if type(pipe).__name__ == DFR_CLASS and (sigmas := dfr_sigmas(req.steps)) is not None:
            inputs["sigmas"] = sigmas
        return inputs

    def _inputs(self, pipe, task: str, req) -> dict:
        if self.config.ic_lora and task == "control":
            pipe.enable_lora()
        elif self.config.ic_lora:  # off for the entry's other kinds (they share the transformer)
            pipe.disable_lora()
        if task != "control":
            return super().task_inputs(pipe, task, req)
        from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition
        from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

        size = (req.width, req.height)
        condition = LTX2HDRReferenceCondition if self.makes_hdr(pipe) else LTX2ReferenceCondition
        out = {"reference_conditions": [condition(frames=[pil(f, size) for f in req.video], strength=1.0)]}
        if self.reference_downscale_factor and "reference_downscale_factor" not in self.config.pipeline_kwargs:
            out["reference_downscale_factor"] = self.reference_downscale_factor
        return out


FAMILIES = (
    Family("ltx2", "LTX-2 (Lightricks), video with sound", {
        "ltx2": PipelineKind("LTX2Pipeline", ("t2v",)),
        "ltx2-i2v": PipelineKind("LTX2ImageToVideoPipeline", ("i2v",)),
        "ltx2-condition": PipelineKind("LTX2ConditionPipeline", ("t2v", "i2v", "condition")),
        # a reference video (the IC-LoRA's kind: depth, pose, edges...) -> a video following it, with sound
        "ltx2-ic-lora": PipelineKind("LTX2InContextPipeline", ("control",), ic_lora=True),
        # an SDR video -> the same content in linear HDR (with the HDR IC-LoRA), no sound
        "ltx2-hdr": PipelineKind("LTX2HDRPipeline", ("control",), ic_lora=True, sound=False, hdr=True),
        # LTX-2.5's Diffusion Fidelity Rendering pass (distilled, no guidance; keyframe slots), one pass at the size
        "ltx2-dfr": PipelineKind(DFR_CLASS, ("t2v", "i2v", "condition"), guidance=False, keyframes=True),
    }, vae="AutoencoderKLLTX2Video", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=257,
        size_multiple=32, max_size=1280, default_width=768, default_height=512, default_frames=121,
        default_steps=30, default_guidance=3.0, default_fps=24.0, adapter=LTX2Adapter, audio=True,
        upsampler="LTX2LatentUpsamplePipeline", decoder="LTX2VideoDiffusionDecodePipeline",
        temporal_upsampler="LTX2DFRTemporalRefinePipeline"),
)
