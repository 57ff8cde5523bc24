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
            scored), ``"metrics"``, ``"plots"``, ``"write"``, ``"done"``.
        done: units done within the stage.
        total: units in all (0: no count).
        category: the category concerned (empty when none).
        protocol: the evaluation protocol concerned (``"metrics"`` stage), else empty.
    """

    stage: str
    done: int = 0
    total: int = 0
    category: str = ""
    protocol: str = ""


#: Receives each :class:`Progress` event of a job.
ProgressCallback = Callable[[Progress], None]


def quiet(_event: Progress) -> None:
    """A progress callback that ignores every event."""
    return None


__all__ = ["Progress", "ProgressCallback", "quiet"]
