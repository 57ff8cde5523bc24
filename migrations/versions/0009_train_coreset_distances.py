"""Versions that store their train patches' distances to the bank in the coreset's proxy space.

No column changes. From this revision on a version's ``arrays`` may list the optional array
``train_coreset_distances`` ((n, P) float32: each train patch's squared distance to its nearest
bank vector in the coreset's proxy space, an upper bound), with which ``registry update``
continues the bank over the old patches too. Existing rows stay as they are (their first update
bounds the distances by a search). A library at revision 0008 would report every such version's
``arrays`` as damaged, so it refuses the registry as written by a newer library instead.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change in the tables: the new array lives in the stores and the ``arrays`` JSON column."""


def downgrade() -> None:
    """Nothing to undo in the tables (versions holding ``train_coreset_distances`` are not readable by 0008)."""
