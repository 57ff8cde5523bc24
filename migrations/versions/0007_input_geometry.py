"""The input geometry of the feature space: ``squash`` or ``fit`` (``registry init --geometry``).

Adds ``feature_space.input_geometry``; existing registries read as ``squash``, the only geometry
before this revision, so their scores do not change. A library at revision 0006 would squash the
images of a ``fit`` registry and score them wrongly, so it refuses the registry as written by a
newer library instead.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column; every existing feature space squashes."""
    with op.batch_alter_table("feature_space") as batch:
        batch.add_column(sa.Column("input_geometry", sa.String(16), nullable=False, server_default="squash"))


def downgrade() -> None:
    """Drop the column (a ``fit`` registry then reads as ``squash``: refit its categories)."""
    with op.batch_alter_table("feature_space") as batch:
        batch.drop_column("input_geometry")
