"""foundation: extensions, cities, institutions, users and roles, sessions and tokens, the activity log

Hand-written parts: the extensions, the 21 市州 seed rows, and the activity log's hash-chain and append-only
triggers (functions and triggers are invisible to autogenerate, so they are kept here by hand). Rows arrive
unsealed; activity_seal() (run by the job runner every few seconds and by `booking activity verify`) links them into
the chain, so writers never wait on each other.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 14:21:11.619106
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from booking.core.regions import CITIES

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# asyncpg prepares each statement, so every DDL statement is executed on its own.
ACTIVITY_FUNCTIONS = [
"""
CREATE FUNCTION activity_row_hash(
    prev_hash text, seq bigint, at timestamptz, actor_id bigint, action text, target_type text, target_id text,
    before jsonb, after jsonb, request_id text
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws(chr(31),
        coalesce(prev_hash, ''), seq::text,
        -- epoch microseconds: independent of the session's TimeZone and DateStyle
        (extract(epoch FROM at) * 1000000)::bigint::text,
        coalesce(actor_id::text, ''), action, target_type, coalesce(target_id, ''),
        coalesce(before::text, ''), coalesce(after::text, ''), coalesce(request_id, '')
    ), 'UTF8')), 'hex')
$$
""",
"""
CREATE FUNCTION activity_log_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Writers never chain: a row arrives unsealed, so no writer waits for another (a chain lock held until
    -- commit serialised every booking). activity_seal() links rows into the chain in its own transaction.
    NEW.seq := NULL;
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    RETURN NEW;
END
$$
""",
"""
CREATE FUNCTION activity_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
    -- The only change ever allowed: sealing an unsealed row as the next link of the chain, content unchanged.
    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND (NEW.id, NEW.at, NEW.actor_id, NEW.action, NEW.target_type, NEW.target_id, NEW.before, NEW.after,
            NEW.request_id)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.actor_id, OLD.action, OLD.target_type, OLD.target_id, OLD.before, OLD.after,
            OLD.request_id) THEN
        SELECT a.seq, a.hash INTO last_seq, last_hash FROM activity_log a
        WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
        IF NEW.seq = coalesce(last_seq, 0) + 1 AND NEW.prev_hash IS NOT DISTINCT FROM last_hash
           AND NEW.hash = activity_row_hash(NEW.prev_hash, NEW.seq, NEW.at, NEW.actor_id, NEW.action,
                                            NEW.target_type, NEW.target_id, NEW.before, NEW.after,
                                            NEW.request_id) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'activity_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$
""",
"""
CREATE FUNCTION activity_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'activity_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$
""",
"""
CREATE FUNCTION activity_seal(max_rows integer DEFAULT 100000) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    last_seq bigint;
    last_hash text;
    sealed integer := 0;
BEGIN
    -- One sealer at a time; rows are chained in the order they became visible (committed), by id within that.
    PERFORM pg_advisory_xact_lock(7246001);
    SELECT a.seq, a.hash INTO last_seq, last_hash FROM activity_log a
    WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
    last_seq := coalesce(last_seq, 0);
    FOR r IN SELECT * FROM activity_log WHERE seq IS NULL ORDER BY id LIMIT max_rows LOOP
        last_seq := last_seq + 1;
        UPDATE activity_log
        SET seq = last_seq, prev_hash = last_hash,
            hash = activity_row_hash(last_hash, last_seq, r.at, r.actor_id, r.action, r.target_type, r.target_id,
                                     r.before, r.after, r.request_id)
        WHERE id = r.id
        RETURNING hash INTO last_hash;
        sealed := sealed + 1;
    END LOOP;
    RETURN sealed;
END
$$
""",
]

ACTIVITY_TRIGGERS = [
    "CREATE TRIGGER activity_log_on_insert BEFORE INSERT ON activity_log"
    " FOR EACH ROW EXECUTE FUNCTION activity_log_on_insert()",
    "CREATE TRIGGER activity_log_no_update_delete BEFORE UPDATE OR DELETE ON activity_log"
    " FOR EACH ROW EXECUTE FUNCTION activity_log_guard()",
    "CREATE TRIGGER activity_log_no_truncate BEFORE TRUNCATE ON activity_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION activity_log_refuse_change()",
]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # ### commands auto generated by Alembic, then reviewed ###
    op.create_table('activity_log',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.BigInteger(), nullable=True),
    sa.Column('action', sa.String(length=80), nullable=False),
    sa.Column('target_type', sa.String(length=40), nullable=False),
    sa.Column('target_id', sa.String(length=80), nullable=True),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activity_log')),
    sa.UniqueConstraint('seq', name=op.f('uq_activity_log_seq'))
    )
    op.create_index(op.f('ix_activity_log_action'), 'activity_log', ['action'], unique=False)
    op.create_index(op.f('ix_activity_log_actor_id'), 'activity_log', ['actor_id'], unique=False)
    op.create_index(op.f('ix_activity_log_at'), 'activity_log', ['at'], unique=False)
    op.create_index('ix_activity_log_target', 'activity_log', ['target_type', 'target_id'], unique=False)
    op.create_index('ix_activity_log_unsealed', 'activity_log', ['id'], unique=False,
                    postgresql_where=sa.text('seq IS NULL'))
    cities = op.create_table('cities',
    sa.Column('code', sa.String(length=6), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_cities'))
    )
    op.bulk_insert(cities, [{"code": code, "name": name} for code, name in CITIES.items()])
    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    op.create_index(op.f('ix_login_failures_address'), 'login_failures', ['address'], unique=False)
    op.create_index(op.f('ix_login_failures_at'), 'login_failures', ['at'], unique=False)
    op.create_index(op.f('ix_login_failures_email'), 'login_failures', ['email'], unique=False)
    op.create_table('institutions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('credit_code', sa.String(length=18), nullable=True),
    sa.Column('city_code', sa.String(length=6), nullable=False),
    sa.Column('address', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("credit_code ~ '^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$'", name=op.f('ck_institutions_credit_code_format')),
    sa.CheckConstraint("kind IN ('高校', '科研院所', '企业', '中试平台', '新型研发机构', '医疗机构', '其他')", name=op.f('ck_institutions_kind')),
    sa.ForeignKeyConstraint(['city_code'], ['cities.code'], name=op.f('fk_institutions_city_code_cities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_institutions')),
    sa.UniqueConstraint('credit_code', name=op.f('uq_institutions_credit_code')),
    sa.UniqueConstraint('name', name=op.f('uq_institutions_name'))
    )
    op.create_index(op.f('ix_institutions_city_code'), 'institutions', ['city_code'], unique=False)
    op.create_table('facilities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_facilities_institution_id_institutions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_facilities')),
    sa.UniqueConstraint('institution_id', 'name', name='uq_facilities_institution_name')
    )
    op.create_index(op.f('ix_facilities_institution_id'), 'facilities', ['institution_id'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('institution_id', sa.Integer(), nullable=True),
    sa.Column('locale', sa.String(length=8), server_default='zh-CN', nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("locale IN ('zh-CN', 'en')", name=op.f('ck_users_locale')),
    sa.CheckConstraint('email = lower(email)', name=op.f('ck_users_email_lowercase')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_users_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_index(op.f('ix_users_institution_id'), 'users', ['institution_id'], unique=False)
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('access', 'personal')", name=op.f('ck_api_tokens_kind')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('digest', name=op.f('uq_api_tokens_digest'))
    )
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    op.create_table('role_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=True),
    sa.Column('facility_id', sa.Integer(), nullable=True),
    sa.Column('city_code', sa.String(length=6), nullable=True),
    sa.Column('granted_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(role = 'auditor' OR city_code IS NULL)", name=op.f('ck_role_grants_city_scope')),
    sa.CheckConstraint("(role = 'facility_manager' OR facility_id IS NULL)", name=op.f('ck_role_grants_facility_scope')),
    sa.CheckConstraint("(role NOT IN ('facility_manager', 'institution_admin') OR institution_id IS NOT NULL)", name=op.f('ck_role_grants_institution_scope')),
    sa.CheckConstraint("role IN ('facility_manager', 'institution_admin', 'auditor', 'platform_admin')", name=op.f('ck_role_grants_role')),
    sa.ForeignKeyConstraint(['city_code'], ['cities.code'], name=op.f('fk_role_grants_city_code_cities')),
    sa.ForeignKeyConstraint(['facility_id'], ['facilities.id'], name=op.f('fk_role_grants_facility_id_facilities')),
    sa.ForeignKeyConstraint(['granted_by'], ['users.id'], name=op.f('fk_role_grants_granted_by_users')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_role_grants_institution_id_institutions')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_role_grants_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grants'))
    )
    op.create_index(op.f('ix_role_grants_facility_id'), 'role_grants', ['facility_id'], unique=False)
    op.create_index(op.f('ix_role_grants_institution_id'), 'role_grants', ['institution_id'], unique=False)
    op.create_index(op.f('ix_role_grants_user_id'), 'role_grants', ['user_id'], unique=False)
    op.create_index('uq_role_grants_scope', 'role_grants', ['user_id', 'role', 'institution_id', 'facility_id', 'city_code'], unique=True, postgresql_nulls_not_distinct=True)
    op.create_table('role_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=True),
    sa.Column('facility_id', sa.Integer(), nullable=True),
    sa.Column('city_code', sa.String(length=6), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('decided_by', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_note', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('facility_manager', 'institution_admin', 'auditor')", name=op.f('ck_role_requests_role')),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name=op.f('ck_role_requests_status')),
    sa.ForeignKeyConstraint(['city_code'], ['cities.code'], name=op.f('fk_role_requests_city_code_cities')),
    sa.ForeignKeyConstraint(['decided_by'], ['users.id'], name=op.f('fk_role_requests_decided_by_users')),
    sa.ForeignKeyConstraint(['facility_id'], ['facilities.id'], name=op.f('fk_role_requests_facility_id_facilities')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_role_requests_institution_id_institutions')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_role_requests_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_requests'))
    )
    op.create_index(op.f('ix_role_requests_facility_id'), 'role_requests', ['facility_id'], unique=False)
    op.create_index(op.f('ix_role_requests_institution_id'), 'role_requests', ['institution_id'], unique=False)
    op.create_index(op.f('ix_role_requests_user_id'), 'role_requests', ['user_id'], unique=False)
    op.create_table('web_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_web_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
    sa.UniqueConstraint('digest', name=op.f('uq_web_sessions_digest'))
    )
    op.create_index(op.f('ix_web_sessions_user_id'), 'web_sessions', ['user_id'], unique=False)
    # ### end Alembic commands ###
    for statement in ACTIVITY_FUNCTIONS + ACTIVITY_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER activity_log_no_truncate ON activity_log")
    op.execute("DROP TRIGGER activity_log_no_update_delete ON activity_log")
    op.execute("DROP TRIGGER activity_log_on_insert ON activity_log")
    op.execute("DROP FUNCTION activity_seal(integer)")
    op.execute("DROP FUNCTION activity_log_refuse_change()")
    op.execute("DROP FUNCTION activity_log_guard()")
    op.execute("DROP FUNCTION activity_log_on_insert()")
    op.execute("DROP FUNCTION activity_row_hash(text, bigint, timestamptz, bigint, text, text, text, jsonb, jsonb, text)")
    op.drop_index(op.f('ix_web_sessions_user_id'), table_name='web_sessions')
    op.drop_table('web_sessions')
    op.drop_index(op.f('ix_role_requests_user_id'), table_name='role_requests')
    op.drop_index(op.f('ix_role_requests_institution_id'), table_name='role_requests')
    op.drop_index(op.f('ix_role_requests_facility_id'), table_name='role_requests')
    op.drop_table('role_requests')
    op.drop_index('uq_role_grants_scope', table_name='role_grants', postgresql_nulls_not_distinct=True)
    op.drop_index(op.f('ix_role_grants_user_id'), table_name='role_grants')
    op.drop_index(op.f('ix_role_grants_institution_id'), table_name='role_grants')
    op.drop_index(op.f('ix_role_grants_facility_id'), table_name='role_grants')
    op.drop_table('role_grants')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index(op.f('ix_users_institution_id'), table_name='users')
    op.drop_table('users')
    op.drop_index(op.f('ix_facilities_institution_id'), table_name='facilities')
    op.drop_table('facilities')
    op.drop_index(op.f('ix_institutions_city_code'), table_name='institutions')
    op.drop_table('institutions')
    op.drop_index(op.f('ix_login_failures_email'), table_name='login_failures')
    op.drop_index(op.f('ix_login_failures_at'), table_name='login_failures')
    op.drop_index(op.f('ix_login_failures_address'), table_name='login_failures')
    op.drop_table('login_failures')
    op.drop_table('cities')
    op.drop_index('ix_activity_log_unsealed', table_name='activity_log', postgresql_where=sa.text('seq IS NULL'))
    op.drop_index('ix_activity_log_target', table_name='activity_log')
    op.drop_index(op.f('ix_activity_log_at'), table_name='activity_log')
    op.drop_index(op.f('ix_activity_log_actor_id'), table_name='activity_log')
    op.drop_index(op.f('ix_activity_log_action'), table_name='activity_log')
    op.drop_table('activity_log')
    # ### end Alembic commands ###
    # The extensions stay: other databases objects may use them and dropping them needs superuser rights.
