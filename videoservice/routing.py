from django.urls import path

from videoservice.consumers import LobbyConsumer
from videoservice.phoenix import PhoenixConsumer

websocket_urlpatterns = [
    path("ws/lobby/", LobbyConsumer.as_asgi()),
    # the Phoenix Channels protocol of the reference design (the npm `phoenix` client): /socket + /websocket
    path("socket/websocket", PhoenixConsumer.as_asgi()),
]
