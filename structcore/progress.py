"""The one progress event of long jobs: fitting, predicting, evaluating, the Ray paths.

A job calls ``progress(Progress(stage, done, total, category))`` as it goes; the command line
turns the events into its progress bars. ``done`` and ``total`` count the stage's units (images,
categories or steps); both are 0 for a stage that has no count (``"coreset"``, ``"write"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        stage: what is running. Fitting a category: ``"embed"`` (train images embedded so far),
            ``"fit"``, ``"coreset"``, ``"prototypes"``, ``"calibration"``, ``"write"``, ``"done"``.
            Scoring: ``"predict"`` (images scored so far). Evaluation: ``"fit"`` (a category being
            embedded and fitted, images), ``"reuse"``, ``"test"`` (test images embedded and
            scored), ``"metrics"``, ``"plots"``, ``"write"``, ``"done"``. Fitting many categories
            (``registry.distributed.fit_categories``): ``"started"`` (a category's fit or Ray task
            began), ``"retry"`` (its worker died), ``"ok"`` (stored), ``"failed"``; there ``done``
            counts finished categories (stored or failed) and ``images_done`` / ``images_total``
            their train images.
        done: units done within the stage.
        total: units in all (0: no count).
        category: the category concerned (empty when none).
        protocol: the evaluation protocol concerned (``"metrics"`` stage), else empty.
        attempt: which try of the category this is (retried Ray tasks), else 0.
        images_done, images_total: train images of the finished categories, and of all of them
            (fitting many categories), else 0.
        elapsed_seconds: time since the job started (0 when the job does not say).
        version: the version a category was stored as (``"ok"``), else ``None``.
        message: what went wrong (``"retry"``, ``"failed"``), else empty.
    """

    stage: str
    done: int = 0
    total: int = 0
    category: str = ""
    protocol: str = ""
    attempt: int = 0
    images_done: int = 0
    images_total: int = 0
    elapsed_seconds: float = 0.0
    version: int | None = None
    message: str = ""

    @property
    def images_per_second(self) -> float:
        """Train images of finished categories per second of the job so far."""
        return self.images_done / max(self.elapsed_seconds, 1e-9)


#: Receives each :class:`Progress` event of a job.
ProgressCallback = Callable[[Progress], None]


def quiet(_event: Progress) -> None:
    """A progress callback that ignores every event."""
    return None


__all__ = ["Progress", "ProgressCallback", "quiet"]
