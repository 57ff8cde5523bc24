"""Evaluation of StructCore registries on benchmark and user datasets (issue 5).

Entry point: :func:`run_evaluation`. Building blocks: dataset loaders
(:mod:`evaluation.datasets`), benchmark manifests and the copy check
(:mod:`evaluation.manifest`), category stores (:mod:`evaluation.store`), the protocols
(:mod:`evaluation.protocols`), and the writers (:mod:`evaluation.report`,
:mod:`evaluation.plots`). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from evaluation.runner import EvaluationResult, library_versions, run_evaluation
    from evaluation.store import CategoryStore, InMemoryStore, RegistryStore, open_registry_store

#: Names served from their modules on first use (PEP 562): importing a light part of the package
#: (``evaluation.manifest`` for ``registry data check``) does not load the model code.
_ON_FIRST_USE = {
    "CategoryData": "evaluation.datasets",
    "CategoryStore": "evaluation.store",
    "Dataset": "evaluation.datasets",
    "DatasetCheck": "evaluation.manifest",
    "DatasetLayoutError": "evaluation.datasets",
    "EvaluationResult": "evaluation.runner",
    "InMemoryStore": "evaluation.store",
    "LAYOUTS": "evaluation.datasets",
    "MapCache": "evaluation.protocols",
    "PROTOCOLS": "evaluation.protocols",
    "Progress": "structcore.progress",
    "ProgressCallback": "structcore.progress",
    "RegistryStore": "evaluation.store",
    "category_digest": "evaluation.manifest",
    "check_dataset": "evaluation.manifest",
    "collect": "evaluation.protocols",
    "continual_orders": "evaluation.manifest",
    "detect_layout": "evaluation.datasets",
    "evaluate_continual": "evaluation.protocols",
    "evaluate_muad": "evaluation.protocols",
    "evaluate_separate": "evaluation.protocols",
    "forgetting": "evaluation.protocols",
    "library_versions": "evaluation.runner",
    "load_dataset": "evaluation.datasets",
    "load_folder": "evaluation.datasets",
    "load_manifest": "evaluation.manifest",
    "load_mvtec": "evaluation.datasets",
    "load_visa": "evaluation.datasets",
    "normalize_order": "evaluation.protocols",
    "open_registry_store": "evaluation.store",
    "run_evaluation": "evaluation.runner",
}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        msg = f"module 'evaluation' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "run_evaluation",
]
