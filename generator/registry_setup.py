"""Registers the backends the registry knows: the built-in models (always), then every diffusers
model named in the operator's model configuration (`VIDEO_MODELS_CONFIG`, default `models.json`).

Each process calls `register_models()` once at start-up (the service: AppConfig.ready, in web and
worker processes alike; benches and scripts: before their first `get_backend`), so a broken
configuration shows at boot. Registering loads no torch: a backend is built on its first job."""
import logging

from generator.builtin.info import INFO as BUILTIN_INFO, INFO_V3 as BUILTIN_V3_INFO
from generator.interface import register
from generator.model_config import validate_config

log = logging.getLogger(__name__)


def _builtin_backend():
    from generator.builtin.backend import BuiltinBackend  # torch is imported only by workers

    return BuiltinBackend()


def _builtin_v3_backend():
    from generator.builtin.backend_v3 import BuiltinV3Backend

    return BuiltinV3Backend()


# the broken entries of the model configuration found at start-up ([ConfigError]), shown by GET /healthz
CONFIG_ERRORS: list = []


def register_models(path=None, strict: bool = False) -> list:
    """Register the built-in models and the configured ones (`register_configured_models`); returns
    the names of the configured ones."""
    register(BUILTIN_INFO, _builtin_backend)
    register(BUILTIN_V3_INFO, _builtin_v3_backend)  # served by the built-in model's workers (its queue)
    return register_configured_models(path, strict)


def register_configured_models(path=None, strict: bool = False) -> list:
    """Register each configured diffusers model (ModelInfo + a lazy factory); returns their names.

    Nothing heavy happens here (no torch model is built): the backend loads its checkpoint on the
    first `get_backend(name)`. The whole file is validated now, when the process starts (web and
    workers alike): with `strict=False` (the service) a broken entry - a wrong type, an unknown key, a
    missing checkpoint folder, an unknown pipeline kind - is logged as an error naming the entry and
    the field, kept in CONFIG_ERRORS for /healthz, and skipped; the other models are served.
    """
    def factory_for(config):
        def build():
            if config.backend != "diffusers":  # a plug-in backend "package.module:factory"
                import importlib

                module, _, attr = config.backend.partition(":")
                return getattr(importlib.import_module(module), attr)(config)
            from generator.diffusers_backend import DiffusersBackend  # torch and diffusers: workers only

            return DiffusersBackend(config)
        return build

    configs, errors = validate_config(path, check_paths=True)
    if errors and strict:
        raise errors[0]
    CONFIG_ERRORS[:] = errors
    for exc in errors:
        log.error("model configuration: %s (this model is not served; the others are)", exc)
    for config in configs.values():
        register(config.model_info(), factory_for(config))
    return list(configs)


def config_errors() -> list:
    """The model configuration's broken entries, as {model, field, message} (skipped at start-up)."""
    return [exc.as_dict() for exc in CONFIG_ERRORS]
