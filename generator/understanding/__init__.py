"""Video understanding: describers turn a video's frames into a caption, or answer a question.

    from generator.understanding import get_describer, sample_frames
    frames = sample_frames("clip.mp4")                 # ~8 evenly spaced frames (PyAV)
    get_describer("builtin").describe(frames, question="what colour is it?")

Describers: `builtin` (the built-in shapes world, read off the frames: no model, no download),
and every entry of the describer configuration (`generator.understanding.registry`), e.g. a
SmolVLM2 checkpoint in a local folder. Agreement between a prompt and a caption:
`generator.understanding.agreement`.
"""
from generator.interface import Cancelled
from generator.understanding.base import (Description, Describer, DescribeError, VideoTooLarge, check_video_size,
                                         sample_frames)
from generator.understanding.registry import DEFAULT_DESCRIBER, UnknownDescriber, describer_names, get_describer

__all__ = ["Cancelled", "Description", "Describer", "DescribeError", "VideoTooLarge", "check_video_size",
           "sample_frames", "DEFAULT_DESCRIBER", "UnknownDescriber", "describer_names", "get_describer"]
