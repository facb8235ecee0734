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
        from generator.interface import DEFAULT_MODEL, list_models

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
    def _load_image(path: str):
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise CommandError(f"--image: no such file: {path}")
        except (UnidentifiedImageError, OSError) as exc:
            raise CommandError(f"--image: cannot read {path} as an image ({exc})")

    # --------------------------------------------------------------------- main
    def handle(self, *args, **options):
        from generator.interface import DEFAULT_MODEL, get_info, list_models

        if options["list_models"]:
            self._list_models()
            return
        prompt = (options["prompt"] or "").strip()
        if not prompt:
            raise CommandError('a prompt is required, e.g. manage.py generate "a red circle moving left" '
                               "--output out.mp4")

        name = options["model"] or DEFAULT_MODEL
        info = get_info(name)
        if info is None:
            known = ", ".join(sorted(i.name for i in list_models()))
            raise CommandError(f"unknown model {name!r}; known models: {known}")

        frames = info.default_frames if options["frames"] is None else options["frames"]
        width = info.default_width if options["width"] is None else options["width"]
        height = info.default_height if options["height"] is None else options["height"]
        steps = info.default_steps if options["steps"] is None else options["steps"]
        guidance = info.default_guidance if options["guidance"] is None else options["guidance"]
        fps = info.default_fps if options["fps"] is None else options["fps"]
        cli_names = {"num_frames": "--frames", "width": "--width", "height": "--height",
                     "steps": "--steps", "guidance_scale": "--guidance"}
        problems = [f"{cli_names.get(field, field)}: {message}"
                    for field, message in info.problems(frames, width, height, steps, guidance)]
        if not 0 < fps <= 120:
            problems.append(f"--fps: must be above 0 and at most 120 (got {fps:g})")
        seed = options["seed"]
        if seed is not None and not 0 <= seed < 2**63:
            problems.append(f"--seed: must be between 0 and 2^63-1 (got {seed})")
        if options["image"] and not info.supports_image:
            problems.append(f"--image: model {name} does not take a start image")
        from generator.longvideo import final_shape, validate_options

        long_fields = {"num_chunks": options["num_chunks"], "duration_s": options["duration"],
                       "overlap": options["overlap"], "interpolate": options["interpolate"],
                       "upscale": options["upscale"]}
        long_names = {"num_chunks": "--num-chunks", "duration_s": "--duration", "overlap": "--overlap",
                      "interpolate": "--interpolate", "upscale": "--upscale"}
        long_opts, long_problems = validate_options(long_fields, info, num_frames=frames, width=width,
                                                    height=height, fps=fps)
        problems += [f"{long_names.get(field, field)}: {message}" for field, message in long_problems]
        if problems:
            raise CommandError("invalid arguments:\n  " + "\n  ".join(problems))

        output = options["output"]
        fmt = options["format"]
        if fmt is None:
            ext = os.path.splitext(output or "")[1].lower().lstrip(".")
            fmt = ext if ext in ("mp4", "webm") else "mp4"
        output = output or f"out.{fmt}"
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise CommandError(f"--output: folder {parent} does not exist")
        image = self._load_image(options["image"]) if options["image"] else None

        from tqdm import tqdm

        from generator.encode import encode_video
        from generator.interface import GenerationError, GenerationRequest, get_backend

        if options["threads"] > 0:
            import torch

            torch.set_num_threads(options["threads"])
        verbose = options["verbosity"] > 0
        started = time.perf_counter()
        if verbose:
            self.stderr.write(f"loading model {name} ...")
        try:
            backend = get_backend(name)
        except Exception as exc:  # missing weights, missing optional packages ...
            raise CommandError(f"cannot load model {name}: {exc}") from exc
        loaded = time.perf_counter()

        request = GenerationRequest(prompt=prompt, num_frames=frames, width=width, height=height,
                                    steps=steps, guidance_scale=guidance, seed=seed, fps=fps, image=image)
        chunks = final_shape(long_opts, frames, width, height, fps)["num_chunks"]
        bar = tqdm(total=steps * chunks, desc="denoising", unit="step", file=sys.stderr, disable=not verbose,
                   dynamic_ncols=True)

        def progress(step, total, _preview):
            if bar.total != total:
                bar.total = total
            bar.update(step - bar.n)

        try:
            if long_opts.active:  # chunk by chunk, then upscaling, then interpolation
                from generator.longvideo import run_job

                result = run_job(backend, request, long_opts, progress=progress)
            else:
                result = backend.generate(request, progress=progress)
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
        self.stdout.write(self.style.SUCCESS(f"wrote {os.path.abspath(output)} ({len(data) / 1024:.1f} KiB, {fmt})"))
        self.stdout.write(
            f"model {name}  seed {result.seed}  frames {t}  size {w}x{h} (native {nw}x{nh})  "
            f"fps {result.fps:g}  steps {steps}  guidance {guidance:g}"
            + (f"  chunks {chunks}  interpolate x{long_opts.interpolate}  upscale x{long_opts.upscale}"
               if long_opts.active else ""))
        self.stdout.write(
            f"time: load {loaded - started:.2f} s, generate {generated - loaded:.2f} s "
            f"({(generated - loaded) / max(steps * chunks, 1):.3f} s/step), encode {encoded - generated:.2f} s")
