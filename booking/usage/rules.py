"""Payment of a service record, as pure rules: which state a record is in and what may happen to it next.

A record's fee (`amount`) is computed when the service is recorded, from the instrument's structured fees; an
instrument without them gives a record whose fee is not known (`NO_FEE_BASIS`), and the provider records what it
charged. The provider records the payment (the national platform and the innovation-voucher claim both ask for
the payment record), or waives the fee; a mistaken entry can be taken back. A record whose known fee is nil has
nothing to pay. Records from before payments were kept are `untracked` until someone records them."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

PaymentState = Literal["free", "unpaid", "paid", "waived", "untracked"]
PaymentAction = Literal["pay", "waive", "reset"]

# The fee basis of a record whose instrument had no structured fees (usage.service.record_from_booking).
NO_FEE_BASIS = "未设置结构化收费标准"

PAYMENT_STATE_LABELS: dict[str, str] = {
    "free": "无需付费", "unpaid": "待付款", "paid": "已付款", "waived": "已免收", "untracked": "付款情况未登记",
}
PAYMENT_METHODS: dict[str, str] = {
    "transfer": "银行转账", "online": "线上支付（扫码/刷卡）", "internal": "单位内部结算", "cash": "现金", "other": "其他",
}


def fee_known(fee_basis: str | None) -> bool:
    return fee_basis != NO_FEE_BASIS


def payment_state(amount: Decimal, status: str, fee_basis: str | None = None) -> PaymentState:
    """The stored status, except that an unpaid record whose known fee is nil has nothing to pay."""
    if status == "unpaid" and amount == 0 and fee_known(fee_basis):
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
    if action == "reset" and state in ("unpaid", "untracked"):
        return "该服务尚未登记付款或免收，无需撤销"
    return None
