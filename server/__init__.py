"""``registry serve``: the registry as an HTTP inspection service with a web page.

A thin shell beside :mod:`cli`: it imports :mod:`registry` and never the other way round. Needs
the ``serve`` extra (``pip install -e '.[serve]'``).
"""

from __future__ import annotations

import signal
import sys
import threading

from server.settings import ServeSettings, ServeSettingsError, is_loopback

__all__ = ["ServeSettings", "ServeSettingsError", "is_loopback", "run_server"]


def run_server(settings: ServeSettings) -> None:
    """Serve until interrupted (SIGINT / SIGTERM); in-flight requests finish first."""
    import uvicorn  # the optional [serve] extra: `import server` works without it

    from server.app import create_app

    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: end with status 0 then
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.graceful_seconds),
        server_header=False,
    )
    uvicorn.Server(config).run()
