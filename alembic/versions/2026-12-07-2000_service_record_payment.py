"""service records: payment (paid, how, invoice number) or a waived fee, recorded by the provider

The fee of a service is computed when it is recorded; whether it was paid was not kept anywhere. The provider now
records the payment (when, how, the invoice number) or waives the fee with a reason, and may take a mistaken entry
back. The national platform's service record and an innovation-voucher claim both ask for the payment record.
The amount received is kept too: an instrument with only the free-text fee gives records whose fee is not known.

Records that exist when this runs are `untracked`, not unpaid: whether they were paid was never recorded, and
calling them unpaid would put every past service on the providers' list of fees to collect. A provider may still
record their payment.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in booking.usage.models (a migration keeps its own copy: the model may change later).
CONSISTENT_PAYMENT = (
    "(payment_status = 'paid' AND paid_at IS NOT NULL AND payment_method IS NOT NULL AND paid_amount IS NOT NULL)"
    " OR (payment_status = 'waived' AND paid_at IS NULL AND payment_method IS NULL AND paid_amount IS NULL"
    " AND invoice_number IS NULL AND payment_note IS NOT NULL)"
    " OR (payment_status IN ('unpaid', 'untracked') AND paid_at IS NULL AND payment_method IS NULL"
    " AND paid_amount IS NULL AND invoice_number IS NULL)"
)


def upgrade() -> None:
    op.add_column("service_records", sa.Column("payment_status", sa.Text(), server_default="unpaid", nullable=False))
    op.add_column("service_records", sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("service_records", sa.Column("payment_method", sa.Text(), nullable=True))
    op.add_column("service_records", sa.Column("paid_amount", sa.Numeric(precision=12, scale=2), nullable=True))
    op.add_column("service_records", sa.Column("invoice_number", sa.String(length=64), nullable=True))
    op.add_column("service_records", sa.Column("payment_note", sa.String(length=300), nullable=True))
    op.add_column("service_records", sa.Column("payment_recorded_by", sa.Integer(), nullable=True))
    op.add_column("service_records", sa.Column("payment_recorded_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE service_records SET payment_status = 'untracked'")
    op.create_foreign_key(op.f("fk_service_records_payment_recorded_by_users"), "service_records", "users",
                          ["payment_recorded_by"], ["id"])
    op.create_check_constraint(op.f("ck_service_records_payment_status"), "service_records",
                               "payment_status IN ('unpaid', 'paid', 'waived', 'untracked')")
    op.create_check_constraint(op.f("ck_service_records_paid_amount"), "service_records",
                               "paid_amount IS NULL OR paid_amount >= 0")
    op.create_check_constraint(
        op.f("ck_service_records_payment_method"), "service_records",
        "payment_method IS NULL OR payment_method IN ('transfer', 'online', 'internal', 'cash', 'other')")
    op.create_check_constraint(op.f("ck_service_records_payment_consistent"), "service_records", CONSISTENT_PAYMENT)


def downgrade() -> None:
    op.drop_constraint(op.f("ck_service_records_payment_consistent"), "service_records", type_="check")
    op.drop_constraint(op.f("ck_service_records_payment_method"), "service_records", type_="check")
    op.drop_constraint(op.f("ck_service_records_paid_amount"), "service_records", type_="check")
    op.drop_constraint(op.f("ck_service_records_payment_status"), "service_records", type_="check")
    op.drop_constraint(op.f("fk_service_records_payment_recorded_by_users"), "service_records", type_="foreignkey")
    for column in ("payment_recorded_at", "payment_recorded_by", "payment_note", "invoice_number", "paid_amount",
                   "payment_method", "paid_at", "payment_status"):
        op.drop_column("service_records", column)
