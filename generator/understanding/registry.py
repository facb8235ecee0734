"""Which describers the service offers: `builtin` always, plus the operator's configured ones.

The configuration is a JSON file named by env `VIDEO_DESCRIBERS_CONFIG` (default `describers.json`
at the repository root, used only when present), one entry per describer name:

    {
      "smolvlm2": {
        "kind": "smolvlm",                        # the only model kind so far (transformers VLMs)
        "path": "/models/SmolVLM2-256M-Video-Instruct",  # a LOCAL folder; nothing is downloaded
        "device": "cuda",                         # default: cuda when available, else cpu
        "dtype": "bfloat16",                      # bfloat16 | float16 | float32
        "num_frames": 8,
        "max_new_tokens": 96
      }
    }

Env `DEFAULT_DESCRIBER` picks the describer used when a request names none (default `builtin`).
Describers load lazily, once per process, on first use.
"""
from __future__ import annotations

import json
import os
import threading

from generator.understanding.base import Describer, DescribeError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_ENV = "VIDEO_DESCRIBERS_CONFIG"
BUILTIN = "builtin"
DEFAULT_DESCRIBER = os.environ.get("DEFAULT_DESCRIBER", BUILTIN)
KINDS = ("smolvlm",)
ENTRY_KEYS = {"kind", "path", "device", "dtype", "num_frames", "max_new_tokens"}

_loaded: dict = {}
_lock = threading.Lock()


class UnknownDescriber(DescribeError):
    pass


def config_path() -> str | None:
    path = os.environ.get(CONFIG_ENV)
    if path:
        return path
    default = os.path.join(REPO_ROOT, "describers.json")
    return default if os.path.exists(default) else None


def load_config(path: str | None = None) -> dict:
    """{name: entry} from the configuration file ({} when there is none); wrong entries are errors."""
    path = path or config_path()
    if not path:
        return {}
    try:
        with open(path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DescribeError(f"describer configuration {path}: {exc}") from None
    if not isinstance(config, dict):
        raise DescribeError(f"describer configuration {path}: expected a JSON object of describers")
    for name, entry in config.items():
        if name == BUILTIN:
            raise DescribeError(f"describer configuration {path}: {BUILTIN!r} is reserved for the built-in describer")
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS or not entry.get("path"):
            raise DescribeError(f"describer {name!r}: needs \"kind\" (one of {', '.join(KINDS)}) and \"path\"")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise DescribeError(f"describer {name!r}: unknown keys {sorted(unknown)} (known: {sorted(ENTRY_KEYS)})")
    return config


def describer_names() -> list:
    return [BUILTIN] + sorted(load_config())


def get_describer(name: str | None = None) -> Describer:
    """The (cached) describer called `name`; UnknownDescriber names the known ones."""
    name = name or DEFAULT_DESCRIBER
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build(name)
        return _loaded[name]


def _build(name: str) -> Describer:
    if name == BUILTIN:
        from generator.understanding.builtin import BuiltinDescriber

        return BuiltinDescriber()
    entry = load_config().get(name)
    if entry is None:
        raise UnknownDescriber(f"unknown describer {name!r} (known: {', '.join(describer_names())})")
    from generator.understanding.smolvlm import SmolVLMDescriber

    return SmolVLMDescriber(name=name, **{k: v for k, v in entry.items() if k != "kind"})
