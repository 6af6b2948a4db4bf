"""Routes: the public WebSocket route, kept apart from the internal channel route.

Mount them in your project's ``asgi.py``::

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": SameOriginValidator(  # progrock.web.origin
            AuthMiddlewareStack(URLRouter(progrock.routing.websocket_urlpatterns))
        ),
        "channel": ChannelNameRouter(progrock.routing.channel_routing()),
    })
"""

from __future__ import annotations

from typing import Any

from django.urls import path

from progrock.conf import get_settings
from progrock.protocol import WORKER_CHANNEL
from progrock.web.consumer import ProgressConsumer
from progrock.worker.consumer import WorkerConsumer

# An ASGI server loads this at start: a wrong PROGROCK stops it there, with the
# setting named (ImproperlyConfigured), not on its first socket.
get_settings()

# Public: what browsers reach, namespaced under /prog/ as in the 2017 demo.
websocket_urlpatterns = [
    path("prog/", ProgressConsumer.as_asgi()),
]


def channel_routing() -> dict[str, Any]:
    """Internal: the worker channel (``prog-rocker``), served by ``runworker``."""
    return {WORKER_CHANNEL: WorkerConsumer.as_asgi()}
