"""ASGI entry point for Daphne: HTTP (Django views + static files) and the websocket lobby.
Daphne's command line: videoservice/launch.py (`daphne_argv`).
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousFileOperation  # noqa: E402
from django.http import Http404  # noqa: E402

from videoservice import fanout  # noqa: E402
from videoservice.auth import TokenAuthMiddleware  # noqa: E402
from videoservice.origin import OriginValidator  # noqa: E402
from videoservice.routing import websocket_urlpatterns  # noqa: E402


fanout.install_backpressure()  # under Daphne: websocket sends wait for slow readers (videoservice/fanout.py)


class StaticFiles(ASGIStaticFilesHandler):
    """/static/ straight from the apps' folders; a path that climbs out of them (`..%2f`) is a 404,
    not the unhandled SuspiciousFileOperation (a 500) Django's handler lets through."""

    def serve(self, request):
        try:
            return super().serve(request)
        except SuspiciousFileOperation:
            raise Http404("no such static file") from None


application = ProtocolTypeRouter({
    # /static/ straight from the apps' static folders (no collectstatic, works with DEBUG off)
    "http": StaticFiles(django_asgi_app),
    # Origin: the service's own (scheme, host and port; videoservice/origin.py); user from the session
    # cookie, replaced by an API token (?token= or Authorization: Bearer) when the handshake carries one
    "websocket": OriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))),
})
