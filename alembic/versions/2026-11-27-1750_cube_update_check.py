"""cube update check: linear, not quadratic

instrument_facet_counts_refresh() decided whether an UPDATE of instrument_search changed any facet by joining the
statement's old and new transition tables on instrument_id. Transition tables have no statistics, the planner
picks a nested loop, and the check grows with the square of the rows updated: 2,000 rows took 0.8 s, 8,000 took
5 s, and a whole-catalogue update (100,000 rows) did not finish in 15 minutes. Any bulk update of instruments
(a re-import, an institution changing kind) pays it.

The counts change exactly when the multiset of (restricted, facets) tuples changes, which EXCEPT ALL answers by
hashing or sorting. Edits that touch no facet still skip the cube and its advisory lock.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 17:50:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHECK = """EXISTS (SELECT FROM new_rows AS n JOIN old_rows AS o USING (instrument_id)
                  WHERE (n.restricted, n.city_code, n.institution_kind, n.category_code, n.sharing_mode, n.status)
                        IS DISTINCT FROM
                        (o.restricted, o.city_code, o.institution_kind, o.category_code, o.sharing_mode, o.status))"""
NEW_CHECK = """EXISTS (SELECT restricted, city_code, institution_kind, category_code, sharing_mode, status FROM new_rows
                  EXCEPT ALL
                  SELECT restricted, city_code, institution_kind, category_code, sharing_mode, status FROM old_rows)"""


def _revision_0005() -> ModuleType:
    # The cube's SQL pieces as revision 0005 froze them (its file name is not an importable module name).
    path = Path(__file__).with_name("2026-11-27-1535_search.py")
    spec = importlib.util.spec_from_file_location("booking_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(changed_check: str) -> str:
    m = _revision_0005()
    return f"""
CREATE OR REPLACE FUNCTION instrument_facet_counts_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM new_rows) THEN {m.CUBE_APPLY.format(deltas=m.NEW_ROWS)}
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT FROM old_rows) THEN {m.CUBE_APPLY.format(deltas=m.OLD_ROWS)}
        END IF;
    ELSIF {changed_check}
    THEN {m.CUBE_APPLY.format(deltas=m.NEW_ROWS + " UNION ALL " + m.OLD_ROWS)}
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(_function(NEW_CHECK))


def downgrade() -> None:
    op.execute(_function(OLD_CHECK))
