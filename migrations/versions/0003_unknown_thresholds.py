"""Open-set ``unknown`` decision per category version: statistic, threshold, patch threshold.

Rows whose model metadata already holds the values (a store written by a newer library, whose
row was copied into an older database) get them from there; other rows written before this
revision get NULL in all three: such a version keeps the rule it was fitted with (route score
over ``route_threshold``) until it is refitted (docs/open-set.md).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("category_versions") as batch:
        batch.add_column(sa.Column("unknown_statistic", sa.String(32), nullable=True))
        batch.add_column(sa.Column("unknown_threshold", sa.Float(), nullable=True))
        batch.add_column(sa.Column("far_threshold", sa.Float(), nullable=True))
    op.execute(
        "UPDATE category_versions SET "
        "unknown_threshold = json_extract(metadata, '$.unknown_threshold'), "
        "far_threshold = json_extract(metadata, '$.far_threshold'), "
        "unknown_statistic = CASE WHEN json_extract(metadata, '$.unknown_threshold') IS NOT NULL "
        "THEN json_extract(metadata, '$.params.unknown_statistic') END"
    )


def downgrade() -> None:
    with op.batch_alter_table("category_versions") as batch:
        batch.drop_column("far_threshold")
        batch.drop_column("unknown_threshold")
        batch.drop_column("unknown_statistic")
