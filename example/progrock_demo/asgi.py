"""ASGI entry point of the example project (``daphne progrock_demo.asgi:application``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progrock_demo.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: they load models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from progrock import routing  # noqa: E402
from progrock.contrib import (  # noqa: E402
    autobahn_close,
    autobahn_logs,
    daphne_close_codes,
    twisted_writes,
)
from progrock.runtime import tune_gc  # noqa: E402
from progrock.web.origin import SameOriginValidator  # noqa: E402
from progrock_demo.static import StaticFilesHandler  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The demo serves its own static files; a production site would use
        # collectstatic behind a web server or WhiteNoise instead.
        "http": StaticFilesHandler(django_asgi_app),
        # Sockets only from the page's own origin (scheme, host and port).
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns))
        ),
        "channel": ChannelNameRouter(routing.channel_routing()),
    }
)

# A busy web process holds thousands of sockets: collect garbage less often
# (see progrock.runtime.tune_gc and docs/performance.md).
tune_gc()
# Under Daphne, a frame the server cannot take (over 1 MiB, invalid UTF-8)
# closes the socket with its code (1009, 1007) instead of dropping it: part of
# the protocol (docs/protocol.md), so on whatever PROGROCK_DEMO_CONTRIB says.
autobahn_close.install()
# Under Daphne, sockets close with the codes and reasons ProgRock gives: 1012
# when a web process restarts (clients reconnect elsewhere at once), 1013 over
# the per-address limit (see progrock.contrib.daphne_close_codes).
daphne_close_codes.install()
# The demo is the showcase, so it runs the opt-in performance parts of
# progrock.contrib (PROGROCK_DEMO_CONTRIB=0 turns them off, to measure what
# they bring). Each installs only on the library versions it was tested with;
# on another it warns once and the demo runs on the stock library.
if settings.DEMO_CONTRIB:
    # Under Daphne, send each frame at once instead of on the reactor's next
    # turn (see progrock.contrib.twisted_writes and docs/performance.md).
    twisted_writes.install()
    # Under Daphne, Autobahn's per-frame debug log arguments cost nothing when
    # unused (see progrock.contrib.autobahn_logs).
    autobahn_logs.install()
