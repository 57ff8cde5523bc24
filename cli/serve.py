"""``registry serve``: the registry as an HTTP inspection service (the :mod:`server` package).

The server is imported inside the command, so that other commands start without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import InputError, err_console, resolve_root, user_errors
from cli.options import BackboneRuntimeOption, use_backbone_runtime


def serve_command(
    root: Annotated[
        Path | None,
        typer.Option("--root", help=r"Registry folder \[env: STRUCTCORE_REGISTRY; default: ./structcore-registry]."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token every API request must send.", envvar="STRUCTCORE_TOKEN"),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Images gathered from concurrent requests into one batch.")] = 8,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits for more requests (ms).")] = 10.0,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (MiB); larger ones get 413.")] = 32.0,
    max_images: Annotated[int, typer.Option(help="Images one request may carry.")] = 16,
    max_pixels: Annotated[int, typer.Option(help="Largest image (width x height); larger ones get 413.")] = 40_000_000,
    poll_seconds: Annotated[float, typer.Option(help="How often registry changes are looked for (s).")] = 1.0,
    backbone_runtime: BackboneRuntimeOption = None,
) -> None:
    """Serve the registry over HTTP: POST /v1/infer, GET /v1/categories, /metrics, a web page at /.

    Loads the registry once; categories added, refitted or removed meanwhile are served within seconds.
    """
    with user_errors():
        use_backbone_runtime(backbone_runtime)
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise InputError("registry serve needs the serve extra: pip install -e '.[serve]'") from None
        from registry import Registry
        from server import ServeSettings, run_server

        settings = ServeSettings(
            root=resolve_root(root),
            host=host,
            port=port,
            token=token or None,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_images_per_request=max_images,
            max_pixels=max_pixels,
            poll_seconds=poll_seconds,
        ).check()
        Registry.open(settings.root, read_only=True).close()  # a clear error before the server starts
        err_console.print(f"serving {settings.root} at http://{host}:{port}/ (Ctrl-C stops)", highlight=False)
        run_server(settings)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main app."""
    app.command("serve")(serve_command)
