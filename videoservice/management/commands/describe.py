"""`python manage.py describe video.mp4 [--question Q] [--model NAME] [--prompt P] [--metrics]`:
caption a video (or answer a question about it) in this process, with no broker or database.

The describer comes from the same registry the Celery worker uses (`builtin`, or one configured
in VIDEO_DESCRIBERS_CONFIG); `--prompt` also reports how well the caption agrees with the prompt
the video was made from, `--metrics` adds generator.metrics' quality figures. `--json` prints
everything as one JSON object.
"""
from __future__ import annotations

import json
import os

from django.core.management.base import BaseCommand, CommandError

from generator.builtin.info import INFO as BUILTIN_INFO
from generator.encode import decode_video
from generator.understanding import DescribeError, describer_names, get_describer, sample_frames
from videoservice.contract import DescribeRequest, RequestError, parse


class Command(BaseCommand):
    help = "Caption a video, or answer a question about it, in-process (video understanding)."
    requires_system_checks = []  # touches no database, URLs or templates
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("video", nargs="?", help="a video file (MP4, WebM, ...)")
        parser.add_argument("--question", "-q", help="ask this instead of asking for a caption")
        parser.add_argument("--model", help="describer name (default: builtin); see --list")
        parser.add_argument("--prompt", help="the prompt the video was generated from: report the agreement")
        parser.add_argument("--metrics", action="store_true", help="also print the quality metrics")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--list", action="store_true", help="list the describers and exit")

    def handle(self, *args, **opts):
        if opts["list"]:
            self.stdout.write("\n".join(describer_names()))
            return
        path = opts["video"]
        if not path:
            raise CommandError("name a video file to describe")
        if not os.path.isfile(path):
            raise CommandError(f"{path}: no such file")
        with open(path, "rb") as fh:
            data = fh.read()
        try:  # the question and the describer checked as the websocket and the HTTP API check them
            req = parse(DescribeRequest, {"question": opts["question"], "model": opts["model"]}, {"video": data})
        except RequestError as err:
            raise CommandError("; ".join(message for _, _, message in err.problems)) from None
        try:
            describer = get_describer(req.model)
            description = describer.describe(sample_frames(data), question=req.question)
        except DescribeError as exc:
            raise CommandError(str(exc)) from None
        report = description.as_dict()
        if opts["prompt"] and description.caption:
            from generator.understanding.agreement import prompt_caption_agreement

            report["agreement"] = prompt_caption_agreement(opts["prompt"], description.caption)
            if describer.name != BUILTIN_INFO.name:
                report["agreement"].pop("attributes")  # those are the built-in world's
        if opts["metrics"]:
            from generator.metrics import video_metrics

            report["metrics"] = video_metrics(decode_video(data)[0])
        if opts["json"]:
            self.stdout.write(json.dumps(report, indent=1))
            return
        if description.answer is not None:
            self.stdout.write(f"answer: {description.answer}")
        if description.caption:
            self.stdout.write(f"caption: {description.caption}")
        if "agreement" in report:
            agreement = report["agreement"]
            line = f"agreement with the prompt: semantic {agreement['semantic']:.3f}"
            if agreement.get("attributes", {}).get("score") is not None:
                line += f", attributes {agreement['attributes']['score']:.3f}"
            self.stdout.write(line)
        for name, value in report.get("metrics", {}).items():
            self.stdout.write(f"{name}: {value}")
