from django.urls import path

from webui.console.session import ConsoleConsumer
from webui.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
    path("ws/console/<int:ctid>/", ConsoleConsumer.as_asgi()),
]
