"""The :class:`Registry`: a folder holding one feature space and any number of fitted categories.

Layout of a registry folder (see ``docs/registry.md``)::

    registry.sqlite                 SQLite (WAL): feature space, categories, versions
    registry.lock                   advisory lock file (flock)
    feature_space.zarr/             W, the projection matrix
    stores/<category>/<uuid>.zarr/  one zarr store per category version
    tmp/                            stores being written (and leftovers of crashed writers)

``structcore`` does the method (arrays in, arrays out); this module persists its results.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
import uuid as uuid_module
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from registry import storage
from registry.bundle import export_bundle, plan_import, read_bundle
from registry.catalogue import Catalogue
from registry.checks import (
    GcReport,
    Problem,
    RegistryCheck,
    VerifyReport,
    feature_space_differences,
    feature_space_row,
    row_differences,
    store_path,
)
from registry.db import (
    DB_FILE,
    current_revision,
    head_revision,
    known_revision,
    make_engine,
    read_session,
    run_write,
    upgrade_schema,
)
from registry.errors import (
    BackboneLoadError,
    BundleNameCollisionError,
    DatabaseDamagedError,
    FeatureSpaceMismatchError,
    IntegrityError,
    NotARegistryError,
    ReadOnlyError,
    RegistryError,
    RegistryExistsError,
    SchemaOutdatedError,
    SchemaTooNewError,
    UnknownCategoryError,
    UnknownVersionError,
)
from registry.models import CategoryRow, CategoryVersionRow, FeatureSpaceRow, utcnow
from registry.records import (
    ARRAY_NAMES,
    NAME_PATTERN,
    TRAIN_DISTANCES,
    TRAIN_IMAGE_INFO,
    TRAIN_PATCHES,
    CategoryInfo,
    PendingVersion,
    StoredVersion,
    VersionInfo,
    finite_or_none,
    library_version,
    validate_name,
)
from registry.storage import STORES_DIR, TMP_DIR, ArrayRecord, array_sha256, checkpoint, registry_lock
from structcore.feature_space import FeatureSpace
from structcore.settings import (
    DEFAULT_BACKBONE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CROP,
    DEFAULT_DIM,
    DEFAULT_INPUT_GEOMETRY,
    DEFAULT_PROJECTION_SEED,
    DEFAULT_RESIZE,
    DEFAULT_TILE_MAX_SIDE,
    DEFAULT_TILE_OVERLAP,
    FeatureSpaceSettings,
)

if TYPE_CHECKING:
    # The model code (torch, scikit-learn, scipy) is imported by the methods that need a model, so
    # commands without one (`list`, `show`, `verify`, ...) start in a fraction of a second.
    from registry.detector import Detector, ImageCallback, PinnedCategory, PredictionRecord
    from structcore.features import FeatureExtractor, ImageSource
    from structcore.model import CategoryModel
    from structcore.progress import ProgressCallback

#: Name of the projection store (a re-initialised empty registry uses ``feature_space-<id>.zarr``).
FEATURE_SPACE_STORE = "feature_space.zarr"
#: Default number of loaded categories (memory banks) kept in memory per Detector.
DEFAULT_CACHE_SIZE = 8
#: Fewest train-good images a category is calibrated on. With two, every image's structural
#: distance is the same (each standardised descriptor is +-1), so lambda = std(base) / eps
#: explodes (~1e5) and the hybrid threshold is meaningless.
MIN_CALIBRATION_IMAGES = 3

# Checksums already verified in this process: (resolved store path, array name, sha256).
_VERIFIED: set[tuple[str, str, str]] = set()
_VERIFIED_LOCK = threading.Lock()


def forget_verified_checksums() -> None:
    """Verify every array again on its next read, as a new process would (benchmarks, tests)."""
    with _VERIFIED_LOCK:
        _VERIFIED.clear()


class Registry:
    """A registry folder: one feature space, categories with versioned memory banks.

    Create with :meth:`init`, open with :meth:`open`. A ``Registry`` object is meant for one
    thread; any number of processes may open the same folder (reads never block; writes are
    serialised by SQLite and may run concurrently for different categories).
    """

    def __init__(
        self,
        root: Path,
        engine: Engine,
        *,
        read_only: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        weights: str | Path | None = None,
    ):
        self._root = root
        self._engine = engine
        self._read_only = read_only
        self._cache_size = max(1, int(cache_size))
        self._weights_override = None if weights is None else str(weights)
        self._prototypes: dict[str, np.ndarray] = {}  # verified prototypes by version uuid (immutable)
        self._space: FeatureSpace | None = None
        self._catalogue = Catalogue(root)
        self._row = feature_space_row(self._engine, self._root)
        self._projection_sha = self._row.projection_sha256

    # ----------------------------------------------------------------- create / open
    @classmethod
    def init(
        cls,
        root: str | Path,
        backbone: str = DEFAULT_BACKBONE,
        weights: str | Path | None = None,
        resize: int = DEFAULT_RESIZE,
        crop: int = DEFAULT_CROP,
        dim: int = DEFAULT_DIM,
        seed: int = DEFAULT_PROJECTION_SEED,
        input_geometry: str = DEFAULT_INPUT_GEOMETRY,
        tile_max_side: int = DEFAULT_TILE_MAX_SIDE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> Registry:
        """Create a registry at ``root`` with a new feature space (W drawn once from ``seed``).

        ``weights`` is the backbone's weights file for backbones that do not embed theirs; its
        path is recorded. An existing registry without categories is re-initialised (its
        feature space replaced); one with categories is refused.

        Raises:
            RegistryExistsError: ``root`` holds categories, or files that are not a registry's.
            BackboneLoadError: the backbone cannot be built.
            structcore.settings.InvalidSettingError: a setting outside its allowed values.
        """
        FeatureSpaceSettings(
            backbone=backbone,
            weights=weights,
            resize=resize,
            crop=crop,
            dim=dim,
            seed=seed,
            input_geometry=input_geometry,
            tile_max_side=tile_max_side,
            tile_overlap=tile_overlap,
        ).validate()
        root = Path(root)
        _check_init_target(root)
        from registry.detector import load_backbone
        from structcore.features import new_feature_space

        bb = load_backbone(backbone, weights)
        space = new_feature_space(
            bb,
            resize=resize,
            crop=crop,
            dim=dim,
            seed=seed,
            input_geometry=input_geometry,
            tile_max_side=tile_max_side,
            tile_overlap=tile_overlap,
        )
        weights_path = None if weights is None else str(Path(weights).resolve())
        return cls._create(root, space, weights_path=weights_path, seed=seed)

    @classmethod
    def _create(cls, root: Path, space: FeatureSpace, *, weights_path: str | None, seed: int | None) -> Registry:
        root.mkdir(parents=True, exist_ok=True)
        (root / TMP_DIR).mkdir(exist_ok=True)
        (root / STORES_DIR).mkdir(exist_ok=True)
        with registry_lock(root, exclusive=True):
            database = root / DB_FILE
            engine = make_engine(database)
            try:
                revision = current_revision(engine) if database.exists() else None
                if revision is not None and not known_revision(revision):
                    raise SchemaTooNewError(root, revision, head_revision())
                if revision != head_revision():
                    upgrade_schema(database)
                _install_feature_space(root, engine, space, weights_path=weights_path, seed=seed)
            finally:
                engine.dispose()
        return cls.open(root)

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        read_only: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        weights: str | Path | None = None,
    ) -> Registry:
        """Open the registry at ``root``, upgrading an older database schema first.

        Args:
            root: the registry folder.
            read_only: refuse writes; an outdated schema raises :class:`SchemaOutdatedError`
                instead of being upgraded.
            cache_size: loaded categories kept in memory (LRU).
            weights: backbone weights file to use instead of the recorded one.

        Raises:
            NotARegistryError: no (complete) registry at ``root``.
            SchemaOutdatedError: read-only and the schema is older than this library's.
            SchemaTooNewError: the registry was written by a newer library.
        """
        root = Path(root)
        database = root / DB_FILE
        if not database.is_file():
            raise NotARegistryError(root)
        engine = make_engine(database)
        try:
            revision = current_revision(engine)
            head = head_revision()
            if revision is None:
                raise NotARegistryError(root, "the database has no schema")
            if revision != head:
                if not known_revision(revision):
                    raise SchemaTooNewError(root, revision, head)
                if read_only:
                    raise SchemaOutdatedError(root, revision, head)
                with registry_lock(root, exclusive=True):
                    if current_revision(engine) != head:
                        upgrade_schema(database)
            return cls(root, engine, read_only=read_only, cache_size=cache_size, weights=weights)
        except BaseException:
            engine.dispose()
            raise

    @classmethod
    def upgrade(cls, root: str | Path) -> tuple[str | None, str]:
        """Upgrade the database schema of the registry at ``root`` (``registry upgrade``).

        Returns:
            (revision before, revision after).
        """
        root = Path(root)
        database = root / DB_FILE
        if not database.is_file():
            raise NotARegistryError(root)
        engine = make_engine(database)
        try:
            with registry_lock(root, exclusive=True):
                before = current_revision(engine)
                head = head_revision()
                if before is not None and not known_revision(before):
                    raise SchemaTooNewError(root, before, head)
                if before != head:
                    upgrade_schema(database)
                return before, current_revision(engine) or head
        finally:
            engine.dispose()

    @classmethod
    def init_from_bundle(cls, root: str | Path, bundle: str | Path, *, weights: str | Path | None = None) -> Registry:
        """Create an empty registry at ``root`` in the feature space of ``bundle`` (W included).

        The bundle is validated first; import its categories with :meth:`import_` afterwards.
        ``weights`` is the backbone's weights file where the backbone does not embed its own.
        """
        root = Path(root)
        validated = read_bundle(Path(bundle))
        _check_init_target(root)
        weights_path = None if weights is None else str(Path(weights).resolve())
        return cls._create(root, validated.space, weights_path=weights_path, seed=None)

    def close(self) -> None:
        """Release the database connections."""
        self._prototypes.clear()
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self._root)!r})"

    # ----------------------------------------------------------------- properties
    @property
    def root(self) -> Path:
        """The registry folder."""
        return self._root

    @property
    def read_only(self) -> bool:
        """True when opened read-only."""
        return self._read_only

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine on ``registry.sqlite``."""
        return self._engine

    def schema_revision(self) -> str | None:
        """The database's schema revision."""
        return current_revision(self._engine)

    def _check_writable(self, action: str) -> None:
        if self._read_only:
            raise ReadOnlyError(self._root, action)

    # ----------------------------------------------------------------- feature space
    @property
    def feature_space(self) -> FeatureSpace:
        """The registry's feature space, W included (read and checksum-verified on first use)."""
        if self._space is None:
            row = self._row
            store = self._root / row.projection_path
            try:
                projection = storage.read_array(store, "projection")
            except Exception as error:
                raise IntegrityError("<feature space>", 0, store, f"cannot be read ({error})") from error
            key = (str(store.resolve()), "projection", row.projection_sha256)
            if key not in _VERIFIED:
                if array_sha256(projection) != row.projection_sha256:
                    raise IntegrityError("<feature space>", 0, store / "projection", "does not match its checksum")
                differences = feature_space_differences(row, store)
                if differences:
                    problem = (
                        f"and its row in {DB_FILE} disagree on {', '.join(differences)} (one of the two is damaged)"
                    )
                    raise IntegrityError("<feature space>", 0, store / "zarr.json", problem)
                with _VERIFIED_LOCK:
                    _VERIFIED.add(key)
            self._space = FeatureSpace.from_description(row.description(), projection)
        return self._space

    def feature_space_info(self) -> dict[str, Any]:
        """The feature space's description plus its stored extras (weights path, W checksum)."""
        row = self._row
        info: dict[str, Any] = dict(row.description())
        info.update(
            weights_path=row.weights_path,
            projection_seed=row.projection_seed,
            projection_path=row.projection_path,
            projection_sha256=row.projection_sha256,
            library_version=row.library_version,
            created_at=row.created_at.isoformat() + "Z",
        )
        return info

    def extractor(self, batch_size: int = DEFAULT_BATCH_SIZE) -> FeatureExtractor:
        """A :class:`FeatureExtractor` for this registry's feature space (the backbone is built once per process).

        Raises:
            BackboneLoadError: the backbone's weights are missing.
            FeatureSpaceMismatchError: the weights found are not the ones the registry was made with.
        """
        from registry.detector import extractor_for

        return extractor_for(self.feature_space, self._weights_override or self._row.weights_path, batch_size)

    # ----------------------------------------------------------------- writing
    def add_category(
        self,
        name: str,
        train_images: Sequence[ImageSource],
        model: CategoryModel | None = None,
        progress: ProgressCallback | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        description: str | None = None,
        keep_patches: bool = False,
    ) -> VersionInfo:
        """Embed ``train_images``, fit a category and store it as a new version of ``name``.

        Refitting an existing name adds a version that becomes current; other categories are
        never touched. The fit (:func:`structcore.model.fit_category`) runs outside any database
        transaction or lock.

        Args:
            name: category name (see :data:`NAME_PATTERN`).
            train_images: good images (paths, PIL images or arrays).
            model: an unfitted :class:`CategoryModel` giving the settings (it is not modified).
            progress: receives a :class:`structcore.progress.Progress` per embedded batch
                (stage ``embed``) and at the start of the stages ``fit``, ``coreset``,
                ``prototypes``, ``calibration``, ``write`` and ``done``.
            batch_size: images per backbone call.
            description: free text stored with the category.
            keep_patches: also store the train images' projected patch vectors (float16, about
                2.3 MB per image at 392 px), so that :mod:`registry.updates` grows the category
                without embedding them again; without them the first update refits from the
                image files (and keeps the patches from then on).

        Raises:
            structcore.preprocess.ImageReadError: a train image cannot be read.
        """
        self._check_writable("add a category")
        validate_name(name)
        sources = list(train_images)
        if len(sources) < MIN_CALIBRATION_IMAGES:
            msg = (
                f"category {name!r} needs at least {MIN_CALIBRATION_IMAGES} train images, got {len(sources)}; "
                "pass more good images"
            )
            raise RegistryError(msg)
        from structcore.model import fit_category
        from structcore.progress import Progress, quiet

        report = progress or quiet
        fitted = fit_category(
            self.extractor(batch_size), sources, model, report, category=name, keep_patches=keep_patches
        )
        report(Progress("write", category=name))
        info = self.add_fitted(name, fitted, train_images=sources, description=description)
        report(Progress("done", category=name))
        return info

    def add_fitted(
        self,
        name: str,
        model: CategoryModel,
        train_images: Sequence[ImageSource] = (),
        *,
        description: str | None = None,
    ) -> VersionInfo:
        """Store an already fitted model (fitted in this registry's feature space) as a new version."""
        self._check_writable("add a category")
        validate_name(name)
        if not hasattr(model, "bank_"):
            msg = f"the model for category {name!r} is not fitted; use add_category to fit it"
            raise RegistryError(msg)
        n_calibration = int(getattr(model.calibrator_, "n_samples_", 0))
        if n_calibration < MIN_CALIBRATION_IMAGES:
            msg = (
                f"category {name!r} was calibrated on {n_calibration} images, fewer than "
                f"{MIN_CALIBRATION_IMAGES} (its thresholds would be meaningless); add good images"
                + (" or use loo calibration" if model.calibration == "holdout" else "")
            )
            raise RegistryError(msg)
        if model.bank_.shape[1] != self._row.dim or model.map_size_ != self._row.crop:
            differences = [
                f"dim: {model.bank_.shape[1]} vs {self._row.dim}",
                f"map size: {model.map_size_} vs crop {self._row.crop}",
            ]
            raise FeatureSpaceMismatchError(f"the model for {name!r}", differences, "fit it with registry.extractor()")
        geometry = self._row.input_geometry
        tiled = getattr(model, "tile_overlap_", None) is not None
        fitted_as = ("tile" if tiled else "fit") if getattr(model, "fitted_on_contents_", False) else "squash"
        overlap = self._row.tile_overlap if geometry == "tile" else None
        if fitted_as != geometry or (tiled and model.tile_overlap_ != overlap):  # its maps would differ
            differences = [f"input_geometry: fitted as {fitted_as} vs {geometry}"]
            raise FeatureSpaceMismatchError(
                f"the model for {name!r}",
                differences,
                "fit it with structcore.model.fit_category(registry.extractor(), ...)",
            )
        arrays = model.to_arrays()
        patches = getattr(model, "train_patches_", None)
        if patches is not None and len(patches) == model.n_train_images_:
            arrays[TRAIN_PATCHES] = np.asarray(patches, dtype=np.float16)  # for `registry update`
            arrays.update(train_distance_arrays(model))
        names = [_source_name(s, i) for i, s in enumerate(train_images)]
        metadata = model.to_metadata()
        if names:
            metadata[TRAIN_IMAGE_INFO] = [
                {"name": image_name, "sha256": image_sha256(source), "source": "fit"}
                for image_name, source in zip(names, train_images, strict=True)
            ]
        pending = PendingVersion(
            name=name,
            arrays=lambda: arrays,
            metadata=_name_outliers(metadata, names),
            train_images=names,
            origin="fit",
            description=description,
        )
        return self.commit_versions([pending])[0]

    def commit_versions(self, pending: Sequence[PendingVersion]) -> list[VersionInfo]:
        """Write stores to ``tmp/``, move them into ``stores/``, then commit all rows at once.

        A crash before the commit leaves only unreferenced folders (found by :meth:`verify`,
        removed by :meth:`gc`); the commit is the single point where the new versions appear.
        """
        published: list[Path] = []
        temporary: list[Path] = []
        committed = False
        with registry_lock(self._root, exclusive=False):
            try:
                records: list[dict[str, ArrayRecord]] = []
                for item in pending:
                    tmp = storage.new_tmp_path(self._root)
                    temporary.append(tmp)
                    attributes = {
                        "category": item.name,
                        "uuid": item.uuid,
                        "metadata": item.metadata,
                        "origin": item.origin,
                        "train_images": item.train_images,
                    }
                    if item.arrays_path is None:
                        leading = {
                            array: (self._root / store / array, rows)
                            for array, (store, rows) in (item.leading_rows or {}).items()
                        }
                        records.append(storage.write_store(tmp, item.arrays(), attributes, leading=leading))
                    else:  # shares another version's arrays: its own store holds attributes only
                        shared = {k: ArrayRecord.from_json(v) for k, v in (item.shared_arrays or {}).items()}
                        attributes["arrays_path"] = item.arrays_path
                        records.append(storage.write_store(tmp, {}, attributes, shared=shared))
                    checkpoint("tmp-written")
                    final = self._root / store_path(item.name, item.uuid)
                    storage.publish(tmp, final)
                    published.append(final)
                checkpoint("renamed")
                infos = run_write(self._engine, lambda session: self._insert_versions(session, pending, records))
                committed = True
                checkpoint("committed")
            except BaseException:
                if not committed:  # nothing refers to the new stores: remove them now (else gc will)
                    for path in published + temporary:
                        storage.discard(self._root, path)
                raise
        return infos

    def _insert_versions(
        self, session: Session, pending: Sequence[PendingVersion], records: Sequence[dict[str, ArrayRecord]]
    ) -> list[VersionInfo]:
        space_row = session.get(FeatureSpaceRow, 1)
        if space_row is None or space_row.projection_sha256 != self._projection_sha:
            raise FeatureSpaceMismatchError(
                "the registry's feature space changed while fitting, so this fit",
                ["projection matrix W was replaced"],
                "open the registry again and refit",
            )
        infos = []
        now = utcnow()
        for item, record in zip(pending, records, strict=True):
            category = session.scalars(select(CategoryRow).where(CategoryRow.name == item.name)).one_or_none()
            if category is None:
                category = CategoryRow(name=item.name, last_version=0, created_at=now, description=item.description)
                session.add(category)
                session.flush()
            elif item.must_be_new:
                msg = (
                    f"category {item.name!r} was added to the registry during the import; "
                    "import again with rename or replace"
                )
                raise BundleNameCollisionError(msg)
            elif item.description is not None:
                category.description = item.description
            category.last_version += 1
            metadata = item.metadata
            params = dict(metadata["params"])
            unknown_threshold = finite_or_none(metadata.get("unknown_threshold"))
            row = CategoryVersionRow(
                category_id=category.id,
                version=category.last_version,
                uuid=item.uuid,
                store_path=store_path(item.name, item.uuid),
                arrays={name: rec.to_json() for name, rec in record.items()},
                coreset_ratio=float(params["coreset_ratio"]),
                seed=int(params["seed"]),
                n_train_images=int(metadata["n_train_images"]),
                calibration_mode=str(params["calibration"]),
                calibration=dict(metadata["calibrator"]),
                route_threshold=float(metadata["route_threshold"]),
                model_metadata=metadata,
                train_images=item.train_images,
                fit_seconds=finite_or_none(metadata.get("fit_seconds")),
                library_version=library_version(),
                created_at=now,
                origin=item.origin,
                unknown_statistic=None if unknown_threshold is None else params.get("unknown_statistic"),
                unknown_threshold=unknown_threshold,
                far_threshold=finite_or_none(metadata.get("far_threshold")),
                arrays_path=item.arrays_path,
            )
            session.add(row)
            session.flush()
            category.current_version_id = row.id
            infos.append(VersionInfo.from_row(row, item.name, is_current=True))
        session.flush()
        checkpoint("in-transaction")
        return infos

    def add_threshold_version(
        self,
        name: str,
        hybrid_threshold: float,
        record: Mapping[str, Any],
        *,
        version: int | None = None,
    ) -> VersionInfo:
        """A new current version of ``name`` that differs from ``version`` (current by default) only in its threshold.

        No refit and no copy: the new version's store holds only its attributes and it shares the
        arrays of ``version`` (``arrays_path``); ``record`` says how the threshold was chosen and is
        stored as ``calibration["threshold_rule"]`` with the parent version. ``set_current`` goes back.

        Raises:
            UnknownCategoryError, UnknownVersionError: no such category / version.
            ValueError: ``hybrid_threshold`` is not a finite number.
            IntegrityError: the parent's row and store disagree.
        """
        self._check_writable("set a threshold")
        value = float(hybrid_threshold)
        if not math.isfinite(value):
            msg = f"the threshold must be a finite number, got {hybrid_threshold}"
            raise ValueError(msg)
        info, metadata, train_images = self._stored_row(name, version)
        self._check_row(info, {"metadata": metadata, "train_images": train_images})
        metadata = copy.deepcopy(metadata)
        calibrator = metadata["calibrator"]
        calibrator["thresholds"] = {**dict(calibrator["thresholds"]), "hybrid": value}
        calibrator["threshold_rule"] = {
            **dict(record),
            "source": "registry threshold",
            "parent_version": info.version,
            "parent_uuid": info.uuid,
            "parent_threshold": info.thresholds.get("hybrid"),
        }
        pending = PendingVersion(
            name=name,
            arrays=dict,
            metadata=_name_outliers(metadata, [str(path) for path in train_images]),
            train_images=list(train_images),
            origin=f"threshold:v{info.version}",
            arrays_path=info.array_store,
            shared_arrays=dict(info.arrays),
        )
        return self.commit_versions([pending])[0]

    def train_scores(self, name: str, version: int | None = None, kind: str = "hybrid") -> np.ndarray:
        """The stored leave-one-out train-good scores of one version (``kind``: base, struct or hybrid), verified."""
        info = self.version_info(name, version)
        return np.asarray(self._read_checked(info, f"calibration_{kind}"), dtype=np.float64)

    def set_current(self, name: str, version: int) -> VersionInfo:
        """Make ``version`` the current version of ``name``."""
        self._check_writable("change the current version")

        def work(session: Session) -> VersionInfo:
            category = self._category_row(session, name)
            row = self._version_row(session, category, version)
            category.current_version_id = row.id
            return VersionInfo.from_row(row, name, is_current=True)

        return run_write(self._engine, work)

    def remove(self, name: str, version: int | None = None) -> list[VersionInfo]:
        """Remove one version of ``name``, or the whole category (``version=None``).

        Removing the current version makes the newest remaining one current; removing the last
        version removes the category. Rows are deleted first, then the stores (a crash in
        between leaves orphan stores for :meth:`gc`). Returns the removed versions.
        """
        self._check_writable("remove a category")

        def work(session: Session) -> list[VersionInfo]:
            doomed_stores.clear()  # a retried transaction starts over
            category = self._category_row(session, name)
            versions = list(
                session.scalars(
                    select(CategoryVersionRow)
                    .where(CategoryVersionRow.category_id == category.id)
                    .order_by(CategoryVersionRow.version)
                )
            )
            doomed = versions if version is None else [self._version_row(session, category, version)]
            remaining = [v for v in versions if v not in doomed]
            infos = [VersionInfo.from_row(v, name, v.id == category.current_version_id) for v in doomed]
            # a store whose arrays a remaining version shares stays (it is removed with the last one)
            still_used = {v.store_path for v in remaining} | {v.arrays_path for v in remaining if v.arrays_path}
            doomed_stores.extend(
                path
                for path in dict.fromkeys(p for v in doomed for p in (v.store_path, v.arrays_path) if p)
                if path not in still_used
            )
            if not remaining:
                category.current_version_id = None
            elif category.current_version_id in {v.id for v in doomed}:
                category.current_version_id = remaining[-1].id
            session.flush()
            for row in doomed:
                session.delete(row)
            session.flush()  # versions first: the database would cascade them with the category
            if not remaining:
                session.delete(category)
            return infos

        doomed_stores: list[str] = []
        with registry_lock(self._root, exclusive=False):
            removed = run_write(self._engine, work)
            checkpoint("row-deleted")
            for path in doomed_stores:
                storage.discard(self._root, self._root / path)
            for info in removed:
                self._prototypes.pop(info.uuid, None)
            category_dir = self._root / STORES_DIR / name
            if category_dir.is_dir() and not any(category_dir.iterdir()):
                category_dir.rmdir()
        return removed

    # ----------------------------------------------------------------- reading
    def _category_row(self, session: Session, name: str) -> CategoryRow:
        category = session.scalars(select(CategoryRow).where(CategoryRow.name == name)).one_or_none()
        if category is None:
            raise UnknownCategoryError(name, session.scalars(select(CategoryRow.name)).all())
        return category

    def _version_row(self, session: Session, category: CategoryRow, version: int | None) -> CategoryVersionRow:
        if version is None:
            if category.current_version_id is None:
                msg = (
                    f"category {category.name!r} has no current version; pick one with "
                    f"`registry set-current {category.name} N` (`registry show {category.name}` lists its versions)"
                )
                raise RegistryError(msg)
            row = session.get(CategoryVersionRow, category.current_version_id)
        else:
            row = session.scalars(
                select(CategoryVersionRow).where(
                    CategoryVersionRow.category_id == category.id, CategoryVersionRow.version == version
                )
            ).one_or_none()
        if row is None:
            if version is None:  # the current-version pointer names a missing row
                problem = f"records current version id {category.current_version_id}, which has no row"
                raise DatabaseDamagedError(self._root / DB_FILE, problem, category.name)
            known = session.scalars(
                select(CategoryVersionRow.version)
                .where(CategoryVersionRow.category_id == category.id)
                .order_by(CategoryVersionRow.version)
            ).all()
            if not known:  # a category row is removed with its last version: none left means damage
                problem = f"has a row for category {category.name!r} but no row for any of its versions"
                raise DatabaseDamagedError(self._root / DB_FILE, problem, category.name)
            raise UnknownVersionError(category.name, version, known)
        return row

    def names(self) -> list[str]:
        """Category names, sorted."""
        return self._catalogue.names()

    def __len__(self) -> int:
        return len(self._catalogue.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._catalogue.names()

    def categories(self) -> list[CategoryInfo]:
        """Every category with its versions, sorted by name."""
        return self._catalogue.categories()

    def show(self, name: str) -> CategoryInfo:
        """One category with all its versions."""
        return self._catalogue.show(name)

    def version_info(self, name: str, version: int | None = None) -> VersionInfo:
        """One version (the current one by default)."""
        with read_session(self._engine) as session:
            category = self._category_row(session, name)
            row = self._version_row(session, category, version)
            return VersionInfo.from_row(row, name, row.id == category.current_version_id)

    def _read_checked(self, info: VersionInfo, array: str) -> np.ndarray:
        """Read one array of a version, checking shape, dtype and (once per process) sha256."""
        store = self._root / info.array_store
        file = Path(info.array_store) / array
        record = ArrayRecord.from_json(info.arrays[array])
        try:
            data = storage.read_array(store, array)
        except Exception as error:
            raise IntegrityError(info.category, info.version, file, f"cannot be read ({error})") from error
        found = ArrayRecord(tuple(int(v) for v in data.shape), storage.dtype_name(data), "")
        if (found.shape, found.dtype) != (record.shape, record.dtype):
            problem = f"has shape {list(found.shape)} {found.dtype}, expected {list(record.shape)} {record.dtype}"
            raise IntegrityError(info.category, info.version, file, problem)
        key = (str(store.resolve()), array, record.sha256)
        if key not in _VERIFIED:
            if array_sha256(data) != record.sha256:
                raise IntegrityError(info.category, info.version, file, "does not match its checksum")
            with _VERIFIED_LOCK:
                _VERIFIED.add(key)
        return data

    def read_version(self, name: str, version: int | None = None) -> StoredVersion:
        """The stored arrays and metadata of one version (current by default), verified, without building a model.

        Raises:
            UnknownCategoryError, UnknownVersionError: no such category / version.
            IntegrityError: a stored array is missing, unreadable or fails its checksum, or the
                row and its store disagree.
        """
        info, metadata, train_images = self._stored_row(name, version)
        return StoredVersion(info, metadata, train_images, self._verified_arrays(info, metadata, train_images))

    def _stored_row(self, name: str, version: int | None) -> tuple[VersionInfo, dict[str, Any], list[Any]]:
        """A version's record, model metadata and train image list, read in one transaction."""
        try:
            with read_session(self._engine) as session:
                category = self._category_row(session, name)
                row = self._version_row(session, category, version)
                info = VersionInfo.from_row(row, name, row.id == category.current_version_id)
                metadata = dict(row.model_metadata)
                train_images = list(row.train_images)
        except DatabaseDamagedError as error:
            raise error.for_row(name, version) from error.__cause__
        return info, metadata, train_images

    def _verified_arrays(
        self, info: VersionInfo, metadata: Mapping[str, Any], train_images: Sequence[Any]
    ) -> dict[str, np.ndarray]:
        try:
            self._check_row(info, {"metadata": metadata, "train_images": train_images})
            return {array: self._read_checked(info, array) for array in ARRAY_NAMES}
        except IntegrityError:
            if not self._version_exists(info.uuid):  # removed by another process meanwhile
                msg = (
                    f"category {info.category!r} version {info.version} was removed while it was being loaded; "
                    "try again"
                )
                raise RegistryError(msg) from None
            raise

    def load_category(self, name: str, version: int | None = None) -> CategoryModel:
        """The fitted :class:`CategoryModel` of ``name`` (current version by default), built from verified arrays.

        Each call reads the store again; to score images, hold a :meth:`detector` (it keeps the
        models it loaded).

        Raises:
            UnknownCategoryError, UnknownVersionError: no such category / version.
            IntegrityError: a stored array is missing, unreadable or fails its checksum.
        """
        info, metadata, train_images = self._stored_row(name, version)
        return self._build_model(info, metadata, train_images)

    def _build_model(self, info: VersionInfo, metadata: dict[str, Any], train_images: list[Any]) -> CategoryModel:
        arrays = self._verified_arrays(info, metadata, train_images)
        try:
            from structcore.model import CategoryModel

            model = CategoryModel.from_parts(arrays, metadata)
        except (KeyError, TypeError, ValueError) as error:  # the row matched its store: the store is old or odd
            problem = f"holds metadata that does not rebuild a model ({type(error).__name__}: {error})"
            raise IntegrityError(info.category, info.version, Path(info.store_path) / "zarr.json", problem) from error
        return model

    def _load_pinned(self, info: VersionInfo) -> CategoryModel:
        """The model of exactly the version ``info`` (by its uuid: a removed version is not replaced by a namesake)."""
        with read_session(self._engine) as session:
            found = session.scalars(select(CategoryVersionRow).where(CategoryVersionRow.uuid == info.uuid))
            row = found.one_or_none()
            if row is None:
                msg = f"category {info.category!r} version {info.version} was removed; score again (current version)"
                raise RegistryError(msg)
            metadata = dict(row.model_metadata)
            train_images = list(row.train_images)
        return self._build_model(info, metadata, train_images)

    def _check_row(self, info: VersionInfo, extra: Mapping[str, Any] | None = None) -> None:
        """Compare a version's database row with its store's attributes (once per process).

        Raises:
            IntegrityError: they disagree (a damaged database row or store), or the store's
                attributes cannot be read.
        """
        fields = {**info.row_fields(), **dict(extra or {})}
        store = self._root / info.store_path
        key = (str(store.resolve()), "<row>", _fields_digest(fields))
        if key in _VERIFIED:
            return
        file = Path(info.store_path) / "zarr.json"
        try:
            attributes = storage.read_attributes(store)
        except (OSError, ValueError) as error:
            raise IntegrityError(info.category, info.version, file, f"cannot be read ({error})") from error
        differences = row_differences(fields, attributes)
        if differences:
            problem = f"and its row in {DB_FILE} disagree on {', '.join(differences)} (one of the two is damaged)"
            raise IntegrityError(info.category, info.version, file, problem)
        with _VERIFIED_LOCK:
            _VERIFIED.add(key)

    def _version_exists(self, version_uuid: str) -> bool:
        with read_session(self._engine) as session:
            found = session.scalars(select(CategoryVersionRow.id).where(CategoryVersionRow.uuid == version_uuid))
            return found.one_or_none() is not None

    def _current_versions(self) -> list[VersionInfo]:
        with read_session(self._engine) as session:
            rows = session.execute(
                select(CategoryRow.name, CategoryVersionRow)
                .join(CategoryVersionRow, CategoryRow.current_version_id == CategoryVersionRow.id)
                .order_by(CategoryRow.name)
            ).all()
            return [VersionInfo.from_row(row, name, is_current=True) for name, row in rows]

    def current_version(self, name: str) -> int:
        """The number of the current version of ``name``."""
        return self.version_info(name).version

    def detector(self, categories: Iterable[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Detector:
        """A :class:`~registry.detector.Detector` pinned to the current version of every category (or ``categories``).

        The versions are read in one transaction, so the Detector routes and scores with one
        consistent set: a refit committed later is seen by the next Detector only. Reads the
        prototypes now (small, verified); each category's bank when an image is first routed to it.

        Raises:
            UnknownCategoryError: a name in ``categories`` is not in the registry.
            BackboneLoadError, FeatureSpaceMismatchError: the backbone cannot be built.

        ``batch_size`` is the batch of the extractor's ``iter_embeddings`` (``predict`` takes its own).
        """
        from registry.detector import Detector

        infos = self._current_versions()
        if categories is not None:
            by_name = {info.category: info for info in infos}
            wanted = list(dict.fromkeys(categories))
            for name in wanted:
                if name not in by_name:
                    raise UnknownCategoryError(name, list(by_name))
            infos = [by_name[name] for name in wanted]
        pinned = [self._pinned(info) for info in infos]
        return Detector(self.extractor(batch_size), pinned, source=self._root, cache_size=self._cache_size)

    def _pinned(self, info: VersionInfo) -> PinnedCategory:
        from registry.detector import PinnedCategory
        from structcore.routing import DEFAULT_UNKNOWN_STATISTIC

        self._check_row(info)
        prototypes = self._prototypes.get(info.uuid)
        if prototypes is None:
            prototypes = self._read_checked(info, "prototypes")
            self._prototypes[info.uuid] = prototypes
        return PinnedCategory(
            name=info.category,
            version=info.version,
            prototypes=prototypes,
            route_threshold=info.route_threshold,
            unknown_threshold=info.unknown_threshold if info.unknown_statistic else None,
            unknown_statistic=info.unknown_statistic or DEFAULT_UNKNOWN_STATISTIC,
            far_threshold=info.far_threshold,
            load=lambda: self._load_pinned(info),
        )

    def predict(
        self,
        sources: Sequence[ImageSource],
        category: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
        on_image: ImageCallback | None = None,
    ) -> list[PredictionRecord]:
        """Score images with a new :meth:`detector` (see :meth:`Detector.predict <registry.detector.Detector.predict>`).

        A convenience: each call pins the current versions and loads the models it needs; hold
        a Detector to score many calls' worth of images.
        """
        detector = self.detector() if category is None else self.detector([category])
        return detector.predict(sources, category, batch_size=batch_size, progress=progress, on_image=on_image)

    # ----------------------------------------------------------------- bundles
    def export(self, names: Iterable[str] | None, path: str | Path) -> Path:
        """Write the current version of each of ``names`` (all when ``None``) to one HDF5 bundle."""
        if names is None:
            names = self.names()
            if not names:
                raise RegistryError(f"nothing to export: the registry at {self._root} has no categories")
        return export_bundle(self.feature_space, list(names), self.read_version, Path(path))

    def import_(
        self, path: str | Path, rename: Mapping[str, str] | None = None, replace: bool = False
    ) -> list[VersionInfo]:
        """Import a bundle; everything is validated before anything is written.

        Args:
            path: the bundle file.
            rename: ``{name in bundle: name in registry}``.
            replace: a bundled category whose name exists becomes that category's new current
                version (older versions are kept) instead of being refused.

        Raises:
            BundleError: (a subclass naming the problem) when the bundle is refused.
        """
        self._check_writable("import a bundle")
        bundle = read_bundle(Path(path))
        plan = plan_import(
            bundle,
            space=self.feature_space,
            empty=len(self) == 0,
            grid=self.patch_grid(),
            existing=self.names(),
            rename=rename,
            replace=replace,
        )
        if plan.adopt_feature_space:
            self.adopt_feature_space(bundle.space, weights_path=None)
        return self.commit_versions(plan.pending)

    def patch_grid(self) -> tuple[int, int] | None:
        """The patch grid of the registry's categories (``None`` while it has none)."""
        with read_session(self._engine) as session:
            metadata = session.scalars(select(CategoryVersionRow.model_metadata).limit(1)).one_or_none()
        if not isinstance(metadata, dict) or not isinstance(metadata.get("grid"), list):
            return None
        return tuple(int(v) for v in metadata["grid"])  # type: ignore[return-value]

    def adopt_feature_space(self, space: FeatureSpace, *, weights_path: str | None) -> None:
        """Replace the feature space of a registry without categories (used by import)."""
        self._check_writable("replace the feature space")
        with registry_lock(self._root, exclusive=True):
            _install_feature_space(self._root, self._engine, space, weights_path=weights_path, seed=None)
        self._row = feature_space_row(self._engine, self._root)
        self._projection_sha = self._row.projection_sha256
        self._space = None

    # ----------------------------------------------------------------- checks
    def verify(self, repair: bool = False, checksums: bool = True) -> VerifyReport:
        """Check the database and every store; with ``repair`` also remove leftovers (as :meth:`gc`).

        Always re-reads and re-hashes every array (``checksums=False`` checks shapes only).
        Holds the registry lock exclusively, so writers pause their final step meanwhile.
        See :class:`registry.checks.RegistryCheck`.
        """
        if repair:
            self._check_writable("repair the registry")
        return RegistryCheck(self._root, self._engine).verify(repair=repair, checksums=checksums)

    def gc(self) -> GcReport:
        """Remove orphan stores (no database row), temporary folders and stray files."""
        self._check_writable("collect garbage")
        return RegistryCheck(self._root, self._engine).gc()


# ---------------------------------------------------------------------------- helpers
def train_distance_arrays(model: CategoryModel) -> dict[str, np.ndarray]:
    """The model's train k-nearest distances as stored arrays (``TRAIN_DISTANCES``); empty when it has none."""
    found = getattr(model, "train_distances_", None) or {}
    return {
        TRAIN_DISTANCES[kind]: np.asarray(values, dtype=np.int32 if values.dtype.kind in "iu" else np.float32)
        for kind, values in found.items()
        if kind in TRAIN_DISTANCES and len(values) == model.n_train_images_
    }


def image_sha256(source: object) -> str:
    """sha256 of an image's content: a file's bytes, or an in-memory image's pixel bytes."""
    digest = hashlib.sha256()
    if isinstance(source, str | Path):
        with Path(source).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(np.ascontiguousarray(np.asarray(source)).tobytes())
    return digest.hexdigest()


def _source_name(source: object, index: int) -> str:
    if isinstance(source, str | Path):
        return str(Path(source).resolve())
    return f"<in-memory image {index}>"


def _name_outliers(metadata: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``metadata`` with each outlying train image of its threshold rule named (``registry show`` lists them)."""
    rule = metadata.get("calibrator", {}).get("threshold_rule")
    if isinstance(rule, dict) and rule.get("outliers"):
        for outlier in rule["outliers"]:
            index = int(outlier["index"])
            if 0 <= index < len(names):
                outlier["path"] = names[index]
    return metadata


def _fields_digest(fields: Mapping[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: Files and folders a registry folder may hold before ``init`` (leftovers of a crashed init).
_OWN_ENTRIES = frozenset({DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", storage.LOCK_FILE, TMP_DIR, STORES_DIR})


def _check_init_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        msg = f"{root} is a file; choose a folder for the registry"
        raise RegistryExistsError(msg)
    if not root.exists():
        return
    database = root / DB_FILE
    if database.is_file():
        engine = make_engine(database)
        try:
            revision = current_revision(engine)
            if revision is not None and known_revision(revision):
                with read_session(engine) as session:
                    try:
                        count = session.scalar(select(func.count()).select_from(CategoryRow)) or 0
                    except Exception:  # schema too old to query: treat as populated, refuse
                        count = 1
                if count:
                    msg = (
                        f"a registry with {count} categor{'y' if count == 1 else 'ies'} already exists at {root}; "
                        "open it with `registry list`, or choose an empty folder"
                    )
                    raise RegistryExistsError(msg)
            elif revision is not None:
                raise SchemaTooNewError(root, revision, head_revision())
        finally:
            engine.dispose()
        return
    foreign = sorted(
        e.name for e in root.iterdir() if e.name not in _OWN_ENTRIES and not e.name.startswith("feature_space")
    )
    if foreign:
        msg = f"folder {root} is not empty ({', '.join(foreign[:3])}) and holds no registry; choose an empty folder"
        raise RegistryExistsError(msg)


def _install_feature_space(
    root: Path, engine: Engine, space: FeatureSpace, *, weights_path: str | None, seed: int | None
) -> None:
    """Write W and the feature-space row (only while the registry has no categories).

    Call with the registry lock held exclusively. W goes to ``feature_space.zarr`` unless that
    store is in use (re-initialisation), then to ``feature_space-<id>.zarr``; the old store is
    removed after the commit.
    """
    with read_session(engine) as session:
        old = session.get(FeatureSpaceRow, 1)
    old_path = None if old is None else old.projection_path
    if old is not None and old.weights_path == weights_path:
        try:
            projection = storage.read_array(root / old.projection_path, "projection")
        except Exception:  # unreadable: replace it
            projection = None
        if projection is not None:
            existing = FeatureSpace.from_description(old.description(), projection)
            if not existing.differences(space):
                return  # the same feature space: nothing to do
    target = FEATURE_SPACE_STORE
    if old_path == target:
        target = f"feature_space-{uuid_module.uuid4().hex[:12]}.zarr"
    storage.discard(root, root / target)  # an unreferenced leftover of a crashed init
    tmp = storage.new_tmp_path(root)
    records = storage.write_store(tmp, {"projection": space.projection}, {"feature_space": space.describe()})
    storage.publish(tmp, root / target)

    def work(session: Session) -> None:
        count = session.scalar(select(func.count()).select_from(CategoryRow)) or 0
        if count:
            msg = f"the registry at {root} has categories; its feature space cannot be replaced"
            raise RegistryExistsError(msg)
        row = session.get(FeatureSpaceRow, 1) or FeatureSpaceRow(id=1)
        row.backbone = space.backbone
        row.weights_sha256 = space.weights_sha256
        row.weights_path = weights_path
        row.layers = list(space.layers)
        row.channels = [int(c) for c in space.channels]
        row.mean = [float(v) for v in space.mean]
        row.std = [float(v) for v in space.std]
        row.local_pool = int(space.local_pool)
        row.resize = int(space.resize)
        row.crop = int(space.crop)
        row.input_geometry = space.input_geometry
        row.tile_max_side = space.tile_max_side
        row.tile_overlap = space.tile_overlap
        row.dim = int(space.dim)
        row.projection_seed = seed
        row.projection_path = target
        row.projection_sha256 = records["projection"].sha256
        row.library_version = library_version()
        row.created_at = utcnow()
        session.add(row)

    try:
        run_write(engine, work)
    except BaseException:
        storage.discard(root, root / target)
        raise
    if old_path is not None and old_path != target:
        storage.discard(root, root / old_path)


__all__ = [
    "ARRAY_NAMES",
    "NAME_PATTERN",
    "BackboneLoadError",
    "CategoryInfo",
    "GcReport",
    "Problem",
    "Registry",
    "VerifyReport",
    "VersionInfo",
    "library_version",
    "validate_name",
]
