"""Settings of ``registry serve`` and the rule that guards a non-loopback bind."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

#: Hosts that only this machine can reach.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class ServeSettingsError(ValueError):
    """Settings that cannot be served (e.g. a public bind without a token)."""


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ServeSettings:
    """What ``registry serve`` runs with.

    Attributes:
        root: the registry folder.
        host, port: where to listen.
        token: bearer token required on every API request (required off loopback).
        max_batch_size: images gathered into one backbone call.
        max_wait_ms: how long the scoring worker waits for more requests to fill a batch.
        max_upload_bytes: largest request body; larger ones get 413.
        max_images_per_request: images one request may carry.
        max_pixels: largest decoded image (width x height); larger headers are refused before decoding.
        poll_seconds: how often the registry is checked for categories added, refitted or removed.
        cache_size: category models kept loaded (LRU).
        graceful_seconds: how long shutdown waits for in-flight requests.
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_upload_bytes: int = 32 * 1024 * 1024
    max_images_per_request: int = 16
    max_pixels: int = 40_000_000
    poll_seconds: float = 1.0
    cache_size: int = 16
    graceful_seconds: float = 30.0

    def check(self) -> ServeSettings:
        """Return ``self`` if it can be served, else raise :class:`ServeSettingsError`."""
        if not is_loopback(self.host) and not self.token:
            msg = (
                f"binding to {self.host} makes the registry reachable from other machines; "
                "pass --token (clients then send 'Authorization: Bearer TOKEN') or bind to 127.0.0.1"
            )
            raise ServeSettingsError(msg)
        if self.max_batch_size < 1 or self.max_images_per_request < 1:
            raise ServeSettingsError("--max-batch-size and --max-images must be at least 1")
        if self.max_wait_ms < 0 or self.poll_seconds <= 0:
            raise ServeSettingsError("--max-wait-ms must be >= 0 and the poll interval > 0")
        if self.max_upload_bytes < 1024:
            raise ServeSettingsError("--max-upload-mb is too small to carry an image")
        return self
