"""Payment of a service record, as pure rules: which state a record is in and what may happen to it next.

A record's fee (`amount`) is computed when the service is recorded. The provider then records the payment (the
national platform and the innovation-voucher claim both ask for the payment record), or waives the fee; a mistaken
entry can be taken back. A record with no fee has nothing to pay."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

PaymentState = Literal["free", "unpaid", "paid", "waived"]
PaymentAction = Literal["pay", "waive", "reset"]

PAYMENT_STATE_LABELS: dict[str, str] = {"free": "无需付费", "unpaid": "待付款", "paid": "已付款", "waived": "已免收"}
PAYMENT_METHODS: dict[str, str] = {
    "transfer": "银行转账", "online": "线上支付（扫码/刷卡）", "internal": "单位内部结算", "cash": "现金", "other": "其他",
}


def payment_state(amount: Decimal, status: str) -> PaymentState:
    """The stored status, except that a record without a fee that nobody settled has nothing to pay."""
    if status == "unpaid" and amount == 0:
        return "free"
    return status  # type: ignore[return-value]


def payment_refusal(state: PaymentState, action: PaymentAction) -> str | None:
    """Why `action` may not be taken on a record in `state`, in words for the user; None when it may."""
    if state == "free":
        return "该服务没有产生费用，无需登记付款"
    if action in ("pay", "waive") and state == "paid":
        return "该服务已登记付款；如登记有误，请先撤销付款记录"
    if action in ("pay", "waive") and state == "waived":
        return "该服务已免收费用；如有误，请先撤销免收"
    if action == "reset" and state == "unpaid":
        return "该服务尚未登记付款或免收，无需撤销"
    return None
