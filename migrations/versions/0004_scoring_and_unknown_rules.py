"""Robust StructCore scoring, ``mixed`` calibration and the ``quantile-30`` unknown rule (no table change).

Versions fitted from this revision on may record ``scoring = "robust"`` in their calibration,
``calibration_mode = "mixed"`` and ``unknown_statistic = "quantile-30"``, values that a library
at revision 0003 would misread (it would score a robust version with the paper's equations).
The revision changes no table: it exists so that such a library refuses the registry with its
"written by a newer library" message instead.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change: the columns of revision 0003 hold the new values."""


def downgrade() -> None:
    """Nothing to undo (versions fitted with the new values stay; a 0003 library misreads them)."""
