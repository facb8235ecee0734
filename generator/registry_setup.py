"""Registers the backends the registry knows: the built-in model (always), then every diffusers
model named in the operator's model configuration (`VIDEO_MODELS_CONFIG`, default `models.json`)."""
import logging

from generator.builtin.info import INFO as BUILTIN_INFO
from generator.interface import register

log = logging.getLogger(__name__)


def _builtin_backend():
    from generator.builtin.backend import BuiltinBackend  # torch is imported only by workers

    return BuiltinBackend()


register(BUILTIN_INFO, _builtin_backend)


def register_configured_models(path=None, strict: bool = False) -> list:
    """Register each configured diffusers model (ModelInfo + a lazy factory); returns their names.

    Nothing heavy happens here (no torch model is built): the backend loads its checkpoint on the
    first `get_backend(name)`. With `strict=False` a broken entry is logged and skipped so one typo
    does not take the whole service down; `python -m generator.model_config` reports it.
    """
    from generator.model_config import ConfigError, load_config

    def factory_for(config):
        def build():
            if config.backend != "diffusers":  # a plug-in backend "package.module:factory"
                import importlib

                module, _, attr = config.backend.partition(":")
                return getattr(importlib.import_module(module), attr)(config)
            from generator.diffusers_backend import DiffusersBackend

            return DiffusersBackend(config)
        return build

    try:
        configs = load_config(path, strict=strict)
    except ConfigError as exc:
        if strict:
            raise
        log.error("model configuration not loaded: %s", exc)
        return []
    for config in configs.values():
        register(config.model_info(), factory_for(config))
    return list(configs)


register_configured_models()
