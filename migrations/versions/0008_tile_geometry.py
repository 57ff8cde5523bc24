"""The ``tile`` input geometry's settings: ``feature_space.tile_max_side`` and ``tile_overlap``.

Both are NULL for ``squash`` and ``fit`` feature spaces (all existing ones), so their
descriptions and scores do not change. A library at revision 0007 does not know ``tile`` and
refuses the registry as written by a newer library.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two nullable columns."""
    with op.batch_alter_table("feature_space") as batch:
        batch.add_column(sa.Column("tile_max_side", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tile_overlap", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them (a ``tile`` registry cannot be read at 0007: refit it in a squash or fit registry)."""
    with op.batch_alter_table("feature_space") as batch:
        batch.drop_column("tile_overlap")
        batch.drop_column("tile_max_side")
