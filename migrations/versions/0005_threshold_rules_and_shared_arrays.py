"""Threshold rules and threshold versions that share their parent's arrays.

Adds ``category_versions.arrays_path``: NULL for every existing row (its arrays live in its own
``store_path``, as before); a version written by ``registry threshold`` records there the store
whose arrays it shares (its own store holds only its attributes). Versions fitted from this
revision on may also record ``calibration["threshold_rule"]`` (how their thresholds were chosen;
absent: the 99.5% quantile of the train-good scores, which existing rows keep). A library at
revision 0004 would look for a threshold version's arrays in its own (array-less) store, so it
refuses the registry as written by a newer library instead.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("category_versions") as batch:
        batch.add_column(sa.Column("arrays_path", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("category_versions") as batch:
        batch.drop_column("arrays_path")
