from django.apps import AppConfig

from generator.registry_setup import register_models


class VideoServiceConfig(AppConfig):
    name = "videoservice"
    verbose_name = "Video generation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Register the models now, in every process (web, worker, manage.py): requests are validated
        against their limits, and a broken models.json is reported at start-up, naming entry and field.
        Registering loads no torch (a backend is built on its first job)."""
        register_models()
