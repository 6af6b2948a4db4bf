"""The 2017 demo's routing in Channels 4 terms.

``websocket`` at ``/prog/`` is the 2017 demo's ``public_routing``; the ``channel``
router is its ``internal_routing`` (``prog-rocker``), served by
``python -m django runworker prog-rocker``.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classicport.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from classicport.consumers import ProgConsumer, RockerConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("prog/", ProgConsumer.as_asgi())]),
        "channel": ChannelNameRouter({"prog-rocker": RockerConsumer.as_asgi()}),
    }
)
