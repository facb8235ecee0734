from django.apps import AppConfig


class VideoServiceConfig(AppConfig):
    name = "videoservice"
    verbose_name = "Video generation"
    default_auto_field = "django.db.models.BigAutoField"
