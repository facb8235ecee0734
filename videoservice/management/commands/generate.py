"""`python manage.py generate "PROMPT" --output out.mp4`: one generation, in this process.

No broker, worker or database is involved: the model is loaded through the same
`generator.interface.get_backend` registry the Celery worker uses, denoising steps are
shown as a progress bar, and the frames are encoded with PyAV (`generator.encode`).
The same prompt, seed and settings always give the same video.
"""
from __future__ import annotations

import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from generator.encode import encode_video
from generator.interface import DEFAULT_MODEL, GenerationError, get_backend, list_models
from generator.postprocess import source_clip
from videoservice.contract import GenerateRequest, RequestError, parse


# request field -> command-line argument (its error messages name the flag)
ARGUMENTS = {"prompt": "prompt", "model": "model", "num_frames": "frames", "width": "width", "height": "height",
             "steps": "steps", "guidance_scale": "guidance", "seed": "seed", "fps": "fps",
             "num_chunks": "num_chunks", "duration_s": "duration", "overlap": "overlap",
             "interpolate": "interpolate", "upscale": "upscale", "strength": "strength"}
FLAGS = {name: "--" + arg.replace("_", "-") for name, arg in ARGUMENTS.items() if name != "prompt"}
FLAGS.update(prompt="prompt", image="--image", video="--video")


class Command(BaseCommand):
    help = ("Generate a video from a prompt (and optionally a start image) in-process, "
            "without the queue, and write it as MP4 or WebM.")
    # touches no database, URLs or templates: don't make a generation wait on (or fail with) them
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("prompt", nargs="?", help="what the video shows, e.g. \"a red circle moving left\"")
        parser.add_argument("--output", "-o", help="file to write (default: out.mp4 / out.webm)")
        parser.add_argument("--model", help="model name (default: the built-in model); see --list-models")
        parser.add_argument("--frames", type=int, help="number of frames (model default when omitted)")
        parser.add_argument("--width", type=int, help="output width in pixels")
        parser.add_argument("--height", type=int, help="output height in pixels")
        parser.add_argument("--steps", type=int, help="denoising steps")
        parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
        parser.add_argument("--seed", type=int, help="random seed (random when omitted; printed)")
        parser.add_argument("--image", help="start frame (PNG/JPEG) for image-to-video")
        parser.add_argument("--video", help="source clip (MP4/WebM) for video-to-video (models with supports_video)")
        parser.add_argument("--strength", type=float,
                            help="video-to-video: 0 returns the source, 1 ignores it (default 0.6)")
        parser.add_argument("--fps", type=float, help="frames per second of the written file")
        parser.add_argument("--format", choices=["mp4", "webm"],
                            help="container (default: from --output's extension, else mp4)")
        long = parser.add_argument_group("long videos", "extension over chunks, super-resolution, interpolation "
                                                        "(generator.longvideo; docs/protocol.md)")
        long.add_argument("--num-chunks", type=int, help="generate this many chunks, each continuing the last (1..8)")
        long.add_argument("--duration", type=float,
                          help="seconds of video wanted: as many chunks as needed (instead of --num-chunks)")
        long.add_argument("--overlap", type=int, help="frames shared (blended) by consecutive chunks (default 4)")
        long.add_argument("--interpolate", type=int,
                          help="optical-flow frame interpolation factor: 1, 2, 3, 4 or 6 (fps multiplies)")
        long.add_argument("--upscale", type=int, help="per-frame super-resolution factor: 1, 2 or 4")
        parser.add_argument("--threads", type=int, default=0,
                            help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
        parser.add_argument("--list-models", action="store_true", help="list the models and their limits, then exit")

    # ------------------------------------------------------------------ helpers
    def _list_models(self):
        for info in list_models():
            default = " (default)" if info.name == DEFAULT_MODEL else ""
            self.stdout.write(f"{info.name}{default}: {info.description}")
            self.stdout.write(
                f"  frames {info.frame_rule()} (default {info.default_frames}); "
                f"width/height multiple of {info.size_multiple} in {info.min_size}..{info.max_size} "
                f"(default {info.default_width}x{info.default_height}, native "
                f"{info.native_size[1]}x{info.native_size[0]}); steps 1..{info.max_steps} "
                f"(default {info.default_steps}); guidance 0..{info.max_guidance} (default "
                f"{info.default_guidance}); image-to-video {'yes' if info.supports_image else 'no'}")

    @staticmethod
    def _base64(path: str, flag: str) -> str:
        """A start image or source video as the API takes it (the contract checks what it holds)."""
        import base64

        try:
            with open(path, "rb") as fh:
                return base64.b64encode(fh.read()).decode("ascii")
        except FileNotFoundError:
            raise CommandError(f"{flag}: no such file: {path}")
        except OSError as exc:
            raise CommandError(f"{flag}: cannot read {path} ({exc})")

    # --------------------------------------------------------------------- main
    def handle(self, *args, **options):
        if options["list_models"]:
            self._list_models()
            return
        # the same typed request as the websocket and the HTTP API, from the command line
        fields = {name: options[arg] for name, arg in ARGUMENTS.items()}
        fields["image"] = self._base64(options["image"], "--image") if options["image"] else None
        fields["video"] = self._base64(options["video"], "--video") if options["video"] else None
        try:
            req = parse(GenerateRequest, {k: v for k, v in fields.items() if v is not None})
        except RequestError as err:
            raise CommandError("invalid arguments:\n  " + "\n  ".join(
                f"{FLAGS.get(field, field or 'request')}: {message}" for _, field, message in err.problems))
        params = req.params

        output = options["output"]
        fmt = options["format"]
        if fmt is None:
            ext = os.path.splitext(output or "")[1].lower().lstrip(".")
            fmt = ext if ext in ("mp4", "webm") else "mp4"
        output = output or f"out.{fmt}"
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise CommandError(f"--output: folder {parent} does not exist")

        from tqdm import tqdm

        from generator.longvideo import run_job  # OpenCV

        if options["threads"] > 0:
            import torch

            torch.set_num_threads(options["threads"])
        verbose = options["verbosity"] > 0
        started = time.perf_counter()
        if verbose:
            self.stderr.write(f"loading model {params.model} ...")
        try:
            backend = get_backend(params.model)
        except Exception as exc:  # missing weights, missing optional packages ...
            raise CommandError(f"cannot load model {params.model}: {exc}") from exc
        loaded = time.perf_counter()

        bar = tqdm(total=params.total_steps, desc="denoising", unit="step", file=sys.stderr, disable=not verbose,
                   dynamic_ncols=True)

        def progress(step, total, _preview):
            if bar.total != total:
                bar.total = total
            bar.update(step - bar.n)

        long_video = params.long_video()
        try:  # chunk by chunk, then upscaling, then interpolation
            source = None
            if req.video_bytes:
                source = source_clip(req.video_bytes, params.num_frames, (params.height, params.width))
            result = run_job(backend, params.generation_request(req.prompt, req.image_array, source), long_video,
                             progress=progress)
        except GenerationError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            raise CommandError("interrupted; nothing written")
        finally:
            bar.close()
        generated = time.perf_counter()
        data = encode_video(result.frames, result.fps, output, fmt=fmt)
        encoded = time.perf_counter()

        t, h, w = result.frames.shape[:3]
        nh, nw = result.native_size
        chunks = params.final_shape()["num_chunks"]
        self.stdout.write(self.style.SUCCESS(f"wrote {os.path.abspath(output)} ({len(data) / 1024:.1f} KiB, {fmt})"))
        self.stdout.write(
            f"model {params.model}  seed {result.seed}  frames {t}  size {w}x{h} (native {nw}x{nh})  "
            f"fps {result.fps:g}  steps {params.steps}  guidance {params.guidance_scale:g}"
            + (f"  chunks {chunks}  interpolate x{long_video.interpolate}  upscale x{long_video.upscale}"
               if long_video.active else ""))
        self.stdout.write(
            f"time: load {loaded - started:.2f} s, generate {generated - loaded:.2f} s "
            f"({(generated - loaded) / max(params.total_steps, 1):.3f} s/step), encode {encoded - generated:.2f} s")
