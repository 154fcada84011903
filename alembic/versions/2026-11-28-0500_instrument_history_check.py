"""instrument_history must agree with the instruments: checked by the database at commit

The audit counts registered, shared and large instruments from instrument_history, the effective-dated record of
each instrument's sharing mode, status, 原值, institution and 市州. The application writes it in the same
transaction as the change (instruments.service), but nothing stopped another writer (a direct SQL fix, a script)
from changing an instrument without its history. The audit then kept counting the old values, with nothing to show
that it did.

A deferred constraint trigger now checks every instrument a transaction touched (and every instrument whose history
it touched), at commit: a live instrument has exactly one open history row and that row holds the instrument's
current values; a retired instrument has none. Otherwise the commit fails and names the instrument. Deferred,
because the application changes the instrument and its history in separate statements of one transaction; the
database does not write history itself because the time a change takes effect is the application's (its clock,
an import's effective date), not the database's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION instrument_history_matches() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    iid integer;
    problem text;
BEGIN
    IF TG_TABLE_NAME = 'instruments' THEN
        iid := NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        iid := OLD.instrument_id;
    ELSE
        iid := NEW.instrument_id;
    END IF;
    SELECT CASE
             WHEN i.retired_at IS NOT NULL THEN
               CASE WHEN h.id IS NOT NULL THEN 'it is retired but its history has an open row' END
             WHEN h.id IS NULL THEN 'it has no open history row'
             WHEN (h.sharing_mode, h.status, h.original_value, h.institution_id, h.city_code)
                  IS DISTINCT FROM (i.sharing_mode, i.status, i.original_value, i.institution_id, i.city_code)
               THEN 'its open history row does not hold its current values'
           END
      INTO problem
      FROM instruments AS i
      LEFT JOIN instrument_history AS h ON h.instrument_id = i.id AND h.valid_to IS NULL
     WHERE i.id = iid;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'instrument_history out of step with instrument %: %', iid, problem
            USING ERRCODE = 'check_violation', CONSTRAINT = 'instrument_history_matches',
                  HINT = 'Close the open row (valid_to) and open one with the new values in the same transaction.';
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    "CREATE CONSTRAINT TRIGGER instrument_history_matches"
    " AFTER INSERT OR UPDATE OF sharing_mode, status, original_value, institution_id, city_code, retired_at"
    " ON instruments DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION instrument_history_matches()",
    "CREATE CONSTRAINT TRIGGER instrument_history_matches"
    " AFTER INSERT OR UPDATE OR DELETE ON instrument_history"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION instrument_history_matches()",
)


def upgrade() -> None:
    op.execute(FUNCTION)
    for statement in TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER instrument_history_matches ON instrument_history")
    op.execute("DROP TRIGGER instrument_history_matches ON instruments")
    op.execute("DROP FUNCTION instrument_history_matches()")
