"""Registers the backends the registry knows: the built-in model (always)."""
from generator.builtin.backend import INFO as BUILTIN_INFO, BuiltinBackend
from generator.interface import register

register(BUILTIN_INFO, BuiltinBackend)
