"""The record of one scored image: the fields of ``registry infer``'s JSONL (standard library only).

The one list of the fields: the runtime writes them and ``registry``'s command line
(``cli/output.py``) reads its order from here.
"""

from __future__ import annotations

from typing import Any

#: The fields of a record, in ``registry infer``'s order.
RECORD_FIELDS = (
    "path",
    "category",
    "version",
    "route_score",
    "unknown",
    "unknown_score",
    "score_base",
    "score_struct",
    "score_hybrid",
    "threshold",
    "anomalous",
    "error",
    "overlay",
    "regions",
)


def error_record(path: str, message: str) -> dict[str, Any]:
    """The record of an image that could not be scored (every other field ``None``)."""
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    record.update(path=path, error=message)
    return record
