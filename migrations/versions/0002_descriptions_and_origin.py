"""Category descriptions, version origin (fit or import) and an index on version creation time.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("categories") as batch:
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
    with op.batch_alter_table("category_versions") as batch:
        batch.add_column(sa.Column("origin", sa.Text(), nullable=True))
        batch.create_index("ix_category_versions_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("category_versions") as batch:
        batch.drop_index("ix_category_versions_created_at")
        batch.drop_column("origin")
    with op.batch_alter_table("categories") as batch:
        batch.drop_column("description")
