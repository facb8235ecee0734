"""Every diffusers model family the service runs: one module per family (its `FAMILIES` descriptions and
its adapter), collected here. Adding a family is one new module listed in MODULES, one tiny checkpoint
builder (tests/tiny_checkpoints.py) and one row in tests/test_model_families.py (docs/models.md)."""
from __future__ import annotations

import importlib

from generator.families.base import LIVE_MODES, TASKS, Family, FamilyAdapter, PipelineKind, check_family

MODULES = ("ltx", "ltx2", "wan", "wan_vace", "skyreels_v2", "hunyuanvideo15", "cogvideox", "helios", "lucy_edit",
           "sana_video", "motif_video", "framepack", "wan_animate", "chronoedit",
           "kandinsky6", "generic")

FAMILIES = {fam.name: check_family(fam) for module in MODULES
            for fam in importlib.import_module(f"generator.families.{module}").FAMILIES}
# kind -> its family's name
KINDS = {kind: fam.name for fam in FAMILIES.values() for kind in fam.kinds}

__all__ = ["FAMILIES", "KINDS", "LIVE_MODES", "MODULES", "TASKS", "Family", "FamilyAdapter", "PipelineKind",
           "check_family"]
