"""Evaluation of StructCore registries on benchmark and user datasets (issue 5).

Entry point: :func:`run_evaluation`. Building blocks: dataset loaders
(:mod:`evaluation.datasets`), benchmark manifests and the copy check
(:mod:`evaluation.manifest`), category stores (:mod:`evaluation.store`), the protocols
(:mod:`evaluation.protocols`), and the writers (:mod:`evaluation.report`,
:mod:`evaluation.plots`). See ``docs/evaluation.md``.
"""

from evaluation.datasets import (
    LAYOUTS,
    CategoryData,
    Dataset,
    DatasetLayoutError,
    detect_layout,
    load_dataset,
    load_folder,
    load_mvtec,
    load_visa,
)
from evaluation.manifest import DatasetCheck, category_digest, check_dataset, continual_orders, load_manifest
from evaluation.protocols import (
    PROTOCOLS,
    MapCache,
    Progress,
    ProgressCallback,
    collect,
    evaluate_continual,
    evaluate_muad,
    evaluate_separate,
    forgetting,
    normalize_order,
)
from evaluation.runner import EvaluationResult, library_versions, print_progress, run_evaluation
from evaluation.store import CategoryStore, InMemoryStore, RegistryStore, open_registry_store

__all__ = [
    "LAYOUTS",
    "PROTOCOLS",
    "CategoryData",
    "CategoryStore",
    "Dataset",
    "DatasetCheck",
    "DatasetLayoutError",
    "EvaluationResult",
    "InMemoryStore",
    "MapCache",
    "Progress",
    "ProgressCallback",
    "RegistryStore",
    "category_digest",
    "check_dataset",
    "collect",
    "continual_orders",
    "detect_layout",
    "evaluate_continual",
    "evaluate_muad",
    "evaluate_separate",
    "forgetting",
    "library_versions",
    "load_dataset",
    "load_folder",
    "load_manifest",
    "load_mvtec",
    "load_visa",
    "normalize_order",
    "open_registry_store",
    "print_progress",
    "run_evaluation",
]
