"""Versions that can be updated: stored train patch vectors and train image provenance.

No column changes. From this revision on a version's ``arrays`` may list the optional array
``train_patches`` (its train images' projected patch vectors, float16, what ``registry update``
continues from), its metadata may hold ``train_image_info`` (name, content sha256 and source,
``fit`` / ``update`` / ``feedback``, of each train image), and its ``origin`` may be
``update:vN`` or ``feedback:vN``. Existing rows stay as they are (an update of them refits). A
library at revision 0005 would report every such version's ``arrays`` as damaged, so it refuses
the registry as written by a newer library instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change in the tables: the new data live in existing JSON columns and in the stores."""


def downgrade() -> None:
    """Nothing to undo in the tables (versions holding ``train_patches`` are not readable by 0005)."""
