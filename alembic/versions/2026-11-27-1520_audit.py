"""audit: usage summary kept exact by triggers, published-availability spans, frozen month-end figures

Reviewed by hand. `audit_usage_monthly` sums service-record facts per instrument, month ended and month known; the
statement-level triggers below (with transition tables, so a bulk COPY costs one grouped upsert, not a trigger per
row) add every inserted record, subtract every deleted one and do both for updates, so the summary always equals
the raw rows. The upgrade back-fills it from the records already stored. The three indexes on `service_records`
serve the audit's as-of windows (declared in booking/audit/models.py, which owns them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 14:43:36.169435
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Facts of a set of service records: a usage fact known when the record was stored (never before the service
# ended), and a rating fact known when the rating was given. Months are Asia/Shanghai calendar months.
_FACTS = """
SELECT instrument_id, month, known_month,
       sum(records) AS records, sum(external_records) AS external_records, sum(hours) AS hours,
       sum(external_hours) AS external_hours, sum(amount) AS amount, sum(external_amount) AS external_amount,
       sum(rating_count) AS rating_count, sum(rating_sum) AS rating_sum, sum(rating_1) AS rating_1,
       sum(rating_2) AS rating_2, sum(rating_3) AS rating_3, sum(rating_4) AS rating_4, sum(rating_5) AS rating_5
FROM (
  SELECT instrument_id,
         date_trunc('month', ended_at AT TIME ZONE 'Asia/Shanghai')::date AS month,
         date_trunc('month', greatest(created_at, ended_at) AT TIME ZONE 'Asia/Shanghai')::date AS known_month,
         {sign} AS records, {sign} * is_external::int AS external_records, {sign} * hours AS hours,
         CASE WHEN is_external THEN {sign} * hours ELSE 0 END AS external_hours, {sign} * amount AS amount,
         CASE WHEN is_external THEN {sign} * amount ELSE 0 END AS external_amount,
         0 AS rating_count, 0 AS rating_sum, 0 AS rating_1, 0 AS rating_2, 0 AS rating_3, 0 AS rating_4,
         0 AS rating_5
  FROM {source}
  UNION ALL
  SELECT instrument_id,
         date_trunc('month', ended_at AT TIME ZONE 'Asia/Shanghai')::date,
         date_trunc('month', greatest(coalesce(rated_at, created_at), created_at, ended_at)
                    AT TIME ZONE 'Asia/Shanghai')::date,
         0, 0, 0, 0, 0, 0, {sign}, {sign} * rating, {sign} * (rating = 1)::int, {sign} * (rating = 2)::int,
         {sign} * (rating = 3)::int, {sign} * (rating = 4)::int, {sign} * (rating = 5)::int
  FROM {source} WHERE rating IS NOT NULL
) f
GROUP BY instrument_id, month, known_month
"""

_UPSERT = """
INSERT INTO audit_usage_monthly AS s (instrument_id, month, known_month, records, external_records, hours,
    external_hours, amount, external_amount, rating_count, rating_sum, rating_1, rating_2, rating_3, rating_4,
    rating_5)
{facts}
ON CONFLICT (instrument_id, month, known_month) DO UPDATE SET
    records = s.records + EXCLUDED.records, external_records = s.external_records + EXCLUDED.external_records,
    hours = s.hours + EXCLUDED.hours, external_hours = s.external_hours + EXCLUDED.external_hours,
    amount = s.amount + EXCLUDED.amount, external_amount = s.external_amount + EXCLUDED.external_amount,
    rating_count = s.rating_count + EXCLUDED.rating_count, rating_sum = s.rating_sum + EXCLUDED.rating_sum,
    rating_1 = s.rating_1 + EXCLUDED.rating_1, rating_2 = s.rating_2 + EXCLUDED.rating_2,
    rating_3 = s.rating_3 + EXCLUDED.rating_3, rating_4 = s.rating_4 + EXCLUDED.rating_4,
    rating_5 = s.rating_5 + EXCLUDED.rating_5
"""


def _upsert(source: str, sign: str) -> str:
    return _UPSERT.format(facts=_FACTS.format(source=source, sign=sign))


_FUNCTION = f"""
CREATE FUNCTION audit_usage_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    {_upsert('old_rows', '-1')};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {_upsert('new_rows', '1')};
  END IF;
  RETURN NULL;
END
$$
"""

_TRUNCATE_FUNCTION = """
CREATE FUNCTION audit_usage_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE audit_usage_monthly;
  RETURN NULL;
END
$$
"""

_TRIGGERS = [
    "CREATE TRIGGER audit_usage_insert AFTER INSERT ON service_records REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_usage_apply()",
    "CREATE TRIGGER audit_usage_update AFTER UPDATE ON service_records"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_usage_apply()",
    "CREATE TRIGGER audit_usage_delete AFTER DELETE ON service_records REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_usage_apply()",
    "CREATE TRIGGER audit_usage_truncate AFTER TRUNCATE ON service_records"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_usage_truncate()",
]



def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table('audit_monthly_figures',
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('city_code', sa.String(length=6), nullable=False),
    sa.Column('registered', sa.Integer(), nullable=False),
    sa.Column('open', sa.Integer(), nullable=False),
    sa.Column('shared', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('month', 'city_code', name=op.f('pk_audit_monthly_figures'))
    )
    op.create_table('audit_usage_monthly',
    sa.Column('instrument_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('known_month', sa.Date(), nullable=False),
    sa.Column('records', sa.Integer(), server_default='0', nullable=False),
    sa.Column('external_records', sa.Integer(), server_default='0', nullable=False),
    sa.Column('hours', sa.Numeric(precision=14, scale=2), server_default='0', nullable=False),
    sa.Column('external_hours', sa.Numeric(precision=14, scale=2), server_default='0', nullable=False),
    sa.Column('amount', sa.Numeric(precision=16, scale=2), server_default='0', nullable=False),
    sa.Column('external_amount', sa.Numeric(precision=16, scale=2), server_default='0', nullable=False),
    sa.Column('rating_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_sum', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_1', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_2', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_3', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_4', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rating_5', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('instrument_id', 'month', 'known_month', name=op.f('pk_audit_usage_monthly'))
    )
    op.create_index('ix_audit_usage_monthly_month', 'audit_usage_monthly', ['month', 'known_month'], unique=False)
    op.create_table('audit_published_spans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instrument_id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_to', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['instrument_id'], ['instruments.id'], name=op.f('fk_audit_published_spans_instrument_id_instruments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_published_spans'))
    )
    op.create_index(op.f('ix_audit_published_spans_instrument_id'), 'audit_published_spans', ['instrument_id'], unique=False)
    op.create_index('uq_audit_published_spans_open', 'audit_published_spans', ['instrument_id'], unique=True, postgresql_where=sa.text('valid_to IS NULL'))
    op.create_index('ix_service_records_created_at', 'service_records', ['created_at'], unique=False)
    op.create_index('ix_service_records_ended_at', 'service_records', ['ended_at', 'instrument_id'], unique=False)
    op.create_index('ix_service_records_rated_at', 'service_records', ['rated_at'], unique=False)
    op.create_index('ix_audit_usage_monthly_external', 'audit_usage_monthly', ['month', 'known_month', 'instrument_id'], unique=False, postgresql_where=sa.text('external_records > 0'))
    op.create_index('ix_service_records_external_ended', 'service_records', ['ended_at', 'instrument_id'], unique=False, postgresql_include=['created_at'], postgresql_where=sa.text('is_external'))
    op.create_index('ix_service_records_external_created', 'service_records', ['created_at', 'instrument_id'], unique=False, postgresql_include=['ended_at'], postgresql_where=sa.text('is_external'))
    # ### end Alembic commands ###
    op.execute(_FUNCTION)
    op.execute(_TRUNCATE_FUNCTION)
    for statement in _TRIGGERS:
        op.execute(statement)
    op.execute(_upsert("service_records", "1"))


def downgrade() -> None:
    for name in ("audit_usage_insert", "audit_usage_update", "audit_usage_delete", "audit_usage_truncate"):
        op.execute(f"DROP TRIGGER {name} ON service_records")
    op.execute("DROP FUNCTION audit_usage_apply()")
    op.execute("DROP FUNCTION audit_usage_truncate()")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_index('ix_service_records_external_created', table_name='service_records')
    op.drop_index('ix_service_records_external_ended', table_name='service_records')
    op.drop_index('ix_audit_usage_monthly_external', table_name='audit_usage_monthly')
    op.drop_index('ix_service_records_rated_at', table_name='service_records')
    op.drop_index('ix_service_records_ended_at', table_name='service_records')
    op.drop_index('ix_service_records_created_at', table_name='service_records')
    op.drop_index('uq_audit_published_spans_open', table_name='audit_published_spans', postgresql_where=sa.text('valid_to IS NULL'))
    op.drop_index(op.f('ix_audit_published_spans_instrument_id'), table_name='audit_published_spans')
    op.drop_table('audit_published_spans')
    op.drop_index('ix_audit_usage_monthly_month', table_name='audit_usage_monthly')
    op.drop_table('audit_usage_monthly')
    op.drop_table('audit_monthly_figures')
    # ### end Alembic commands ###
