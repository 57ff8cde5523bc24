"""SQLAlchemy 2 ORM models of ``registry.sqlite`` (the schema at the newest Alembic revision).

The schema is created and changed only by the Alembic revisions in :mod:`migrations`; these
classes mirror the head revision. Arrays never live in the database: a version row records the
path of its zarr store and the shape, dtype and sha256 of every array in it.

Timestamps are naive UTC (SQLite has no time zone type).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from structcore.feature_space import describe_fields


def utcnow() -> datetime:
    """Current time, naive UTC (the form stored in the database)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the registry schema."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class FeatureSpaceRow(Base):
    """The registry's one feature space (``id`` is always 1)."""

    __tablename__ = "feature_space"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backbone: Mapped[str] = mapped_column(String(128))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    #: Weights file of a backbone that does not ship its weights (``None`` = the embedded default).
    weights_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    layers: Mapped[list[Any]] = mapped_column(JSON)
    channels: Mapped[list[Any]] = mapped_column(JSON)
    mean: Mapped[list[Any]] = mapped_column(JSON)
    std: Mapped[list[Any]] = mapped_column(JSON)
    local_pool: Mapped[int] = mapped_column(Integer)
    resize: Mapped[int] = mapped_column(Integer)
    crop: Mapped[int] = mapped_column(Integer)
    #: ``squash`` or ``fit`` (revision 0007; registries made before read as ``squash``).
    input_geometry: Mapped[str] = mapped_column(String(16), default="squash", server_default="squash")
    #: ``tile`` only (revision 0008): the cap on an image's long side and the least tile overlap.
    tile_max_side: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tile_overlap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dim: Mapped[int] = mapped_column(Integer)
    #: Seed W was drawn from (informational: W itself is stored).
    projection_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: zarr store holding W, relative to the registry root.
    projection_path: Mapped[str] = mapped_column(Text)
    projection_sha256: Mapped[str] = mapped_column(String(64))
    library_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def description(self) -> dict[str, object]:
        """The fields of :meth:`structcore.feature_space.FeatureSpace.describe`, as this row records them."""
        return describe_fields(self)


class CategoryRow(Base):
    """A category name and which of its versions is current."""

    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("name", name="uq_categories_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    current_version_id: Mapped[int | None] = mapped_column(
        Integer,
        ForeignKey(
            "category_versions.id", ondelete="SET NULL", use_alter=True, name="fk_categories_current_version_id"
        ),
        nullable=True,
    )
    #: Highest version number ever given (numbers are never reused while the category exists).
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: Free text (added by revision 0002).
    description: Mapped[str | None] = mapped_column(Text, nullable=True)


class CategoryVersionRow(Base):
    """One fitted (or imported) version of a category and its zarr store."""

    __tablename__ = "category_versions"
    __table_args__ = (
        UniqueConstraint("category_id", "version", name="uq_category_versions_category_version"),
        UniqueConstraint("uuid", name="uq_category_versions_uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("categories.id", ondelete="CASCADE", name="fk_category_versions_category_id"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(36))
    #: zarr store, relative to the registry root.
    store_path: Mapped[str] = mapped_column(Text)
    #: ``{array name: {"shape": [...], "dtype": "<f4", "sha256": hex}}``.
    arrays: Mapped[dict[str, Any]] = mapped_column(JSON)
    coreset_ratio: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    n_train_images: Mapped[int] = mapped_column(Integer)
    calibration_mode: Mapped[str] = mapped_column(String(32))
    #: ``{"mu": [...], "sigma": [...], "lambda": float, "thresholds": {...}}``.
    calibration: Mapped[dict[str, Any]] = mapped_column(JSON)
    route_threshold: Mapped[float] = mapped_column(Float)
    #: :meth:`structcore.model.CategoryModel.to_metadata` output.
    model_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    #: Train image paths, in the order of ``bank_image_ids`` (empty for in-memory images).
    train_images: Mapped[list[Any]] = mapped_column(JSON)
    fit_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    library_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    #: ``"fit"`` or ``"import:<bundle file name>"`` (added by revision 0002; NULL on older rows = fit).
    origin: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Image statistic of the ``unknown`` decision (revision 0003; NULL on older rows: the route
    #: score over ``route_threshold`` decides, the rule they were fitted with).
    unknown_statistic: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: Threshold on ``unknown_statistic`` (revision 0003).
    unknown_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Patch-distance threshold of the ``far-share`` statistic (revision 0003).
    far_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Store holding this version's arrays when it shares them with the version it was derived
    #: from (``registry threshold``; revision 0005); NULL: the arrays are in ``store_path``.
    arrays_path: Mapped[str | None] = mapped_column(Text, nullable=True)


__all__ = ["Base", "CategoryRow", "CategoryVersionRow", "FeatureSpaceRow", "utcnow"]
