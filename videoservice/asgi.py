"""ASGI entry point for Daphne: HTTP (Django views + static files) and the websocket lobby.

    daphne -b 127.0.0.1 -p 8000 --websocket-max-message-size 67108864 videoservice.asgi:application
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from videoservice.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    # /static/ straight from the apps' static folders (no collectstatic, works with DEBUG off)
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
