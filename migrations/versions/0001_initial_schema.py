"""Initial schema: feature_space, categories, category_versions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feature_space",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("backbone", sa.String(128), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("weights_path", sa.Text(), nullable=True),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("mean", sa.JSON(), nullable=False),
        sa.Column("std", sa.JSON(), nullable=False),
        sa.Column("local_pool", sa.Integer(), nullable=False),
        sa.Column("resize", sa.Integer(), nullable=False),
        sa.Column("crop", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("projection_seed", sa.Integer(), nullable=True),
        sa.Column("projection_path", sa.Text(), nullable=False),
        sa.Column("projection_sha256", sa.String(64), nullable=False),
        sa.Column("library_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("current_version_id", sa.Integer(), nullable=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_categories_name"),
        # SQLite resolves foreign keys when rows change, so this may name a table created below.
        sa.ForeignKeyConstraint(
            ["current_version_id"],
            ["category_versions.id"],
            name="fk_categories_current_version_id",
            ondelete="SET NULL",
        ),
    )
    op.create_table(
        "category_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("store_path", sa.Text(), nullable=False),
        sa.Column("arrays", sa.JSON(), nullable=False),
        sa.Column("coreset_ratio", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("n_train_images", sa.Integer(), nullable=False),
        sa.Column("calibration_mode", sa.String(32), nullable=False),
        sa.Column("calibration", sa.JSON(), nullable=False),
        sa.Column("route_threshold", sa.Float(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("train_images", sa.JSON(), nullable=False),
        sa.Column("fit_seconds", sa.Float(), nullable=True),
        sa.Column("library_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["category_id"], ["categories.id"], name="fk_category_versions_category_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("category_id", "version", name="uq_category_versions_category_version"),
        sa.UniqueConstraint("uuid", name="uq_category_versions_uuid"),
    )
    op.create_index("ix_category_versions_category_id", "category_versions", ["category_id"])


def downgrade() -> None:
    op.drop_index("ix_category_versions_category_id", table_name="category_versions")
    op.drop_table("category_versions")
    op.drop_table("categories")
    op.drop_table("feature_space")
