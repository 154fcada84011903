"""What the activity log's action codes and object types mean, in the words the log's readers use. A code without a
label is shown as it is (the code stays beside the label, so the action-prefix filter can still be used)."""

from __future__ import annotations

ACTION_LABELS = {
    "allocation_round.closed": "分配轮次截止", "allocation_round.previewed": "生成分配预览",
    "allocation_round.published": "发布分配结果",
    "auth.login": "登录", "auth.login_failed": "登录失败", "auth.logout": "退出登录", "auth.token_issued": "签发访问令牌",
    "blackout.created": "新增停机维护", "blackout.deleted": "删除停机维护",
    "booking.created": "提交预约", "booking.held": "保留时段", "booking.approve": "批准预约",
    "booking.reject": "拒绝预约", "booking.cancel": "取消预约", "booking.check_in": "签到上机",
    "booking.check_out": "签退", "booking.no_show": "记为爽约", "booking.record_service": "登记服务",
    "booking.expire": "申请过期未审批", "booking.accept": "接受保留时段", "booking.accept_pending": "接受保留时段（待审批）",
    "booking.decline": "放弃保留时段", "booking.expire_hold": "保留时段过期",
    "booking_block.created": "暂停预约资格", "booking_block.lifted": "恢复预约资格",
    "booking_series.created": "提交周期预约",
    "calendar_token.created": "创建日历订阅", "calendar_token.revoked": "撤销日历订阅",
    "chain.created": "新增产业链标签", "chain.renamed": "重命名产业链标签", "chain.deleted": "删除产业链标签",
    "demo.bookings_seeded": "生成演示预约", "demo.seeded": "生成演示数据",
    "equivalence_group.created": "新建等效仪器组", "equivalence_group.member_added": "加入等效仪器",
    "equivalence_group.member_removed": "移出等效仪器", "equivalence_group.updated": "修改等效仪器组",
    "facility.created": "新增实验室/平台",
    "flexible_request.cancelled": "撤销灵活预约", "flexible_request.created": "提交灵活预约",
    "flexible_request.expired": "灵活预约过期", "flexible_request.placed": "安排灵活预约",
    "flexible_request.weight": "调整灵活预约权重",
    "holiday.override_deleted": "删除节假日调整", "holiday.override_set": "设置节假日调整",
    "institution.created": "新增单位", "institution.updated": "修改单位",
    "instrument.access_granted": "授权查看涉密仪器", "instrument.access_revoked": "撤销涉密仪器授权",
    "instrument.created": "发布仪器", "instrument.imported": "导入仪器", "instrument.retired": "仪器退役",
    "instrument.updated": "修改仪器", "instrument_category.created": "新增分类编码",
    "qualification.expired": "上机资格到期", "qualification.granted": "授予上机资格",
    "qualification.revoked": "撤销上机资格",
    "role.granted": "授予角色", "role_request.created": "申请角色", "role_request.approved": "批准角色申请",
    "role_request.rejected": "拒绝角色申请",
    "rules.updated": "修改预约规则", "schedule.override_deleted": "删除特殊日期",
    "schedule.override_set": "设置特殊日期", "schedule.updated": "修改开放时间",
    "service_record.created": "生成服务记录", "service_record.rated": "评价服务",
    "stats.exported": "导出统计", "token.created": "创建 API 令牌", "token.revoked": "撤销 API 令牌",
    "user.created": "创建账号", "user.password_changed": "修改密码", "user.registered": "注册账号",
    "user.updated": "修改账号",
    "waitlist.accepted": "接受候补时段", "waitlist.auto_booked": "候补自动预约", "waitlist.cancelled": "取消候补",
    "waitlist.joined": "加入候补", "waitlist.offered": "为候补保留时段", "waitlist.priority": "调整候补优先级",
}

TARGET_LABELS = {
    "user": "用户", "booking": "预约", "instrument": "仪器", "institution": "单位", "facility": "实验室/平台",
    "stats": "统计", "equivalence_group": "等效仪器组", "allocation_round": "分配轮次", "waitlist": "候补",
    "flexible_request": "灵活预约", "service_record": "服务记录", "role_request": "角色申请", "token": "API 令牌",
    "calendar_token": "日历订阅", "blackout": "停机维护", "chain": "产业链标签", "qualification": "上机资格",
    "booking_block": "预约资格暂停", "booking_series": "周期预约", "instrument_category": "分类编码",
    "holiday": "节假日", "schedule": "开放时间", "rules": "预约规则", "api_token": "访问令牌", "catalogue": "仪器目录",
    "service_records": "服务记录", "system": "系统", "waitlist_entry": "候补",
}
