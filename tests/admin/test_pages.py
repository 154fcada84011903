"""Administration pages: the activity log names who acted and marks unsealed entries; the user list."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.service import record
from tests.factories import login_web, make_user


async def test_actor_names_and_unsealed_entries(client: httpx.AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(session, role="platform_admin", name="日志管理员")
    actor = await make_user(session, name="张三丰")
    record(session, actor_id=actor.id, action="test.page_entry", target_type="thing", target_id=1)
    record(session, actor_id=None, action="test.page_entry", target_type="thing", target_id=2)
    await session.flush()
    await login_web(session, client, admin)
    page = await client.get("/admin/activity", params={"action": "test.page_entry"})
    assert page.status_code == 200
    assert "张三丰" in page.text and f"#{actor.id}" in page.text and "系统" in page.text
    assert "待封存" in page.text and "None" not in page.text


async def test_user_list_shows_institution_and_status(client: httpx.AsyncClient, session: AsyncSession) -> None:
    from tests.factories import make_institution

    admin = await make_user(session, role="platform_admin")
    uni = await make_institution(session, name="列表测试大学")
    await make_user(session, institution=uni, name="在职用户甲", email="jia@example.cn")
    await make_user(session, institution=uni, name="停用用户乙", email="yi@example.cn", is_active=False)
    await login_web(session, client, admin)
    page = await client.get("/admin/users", params={"q": "用户"})
    assert page.status_code == 200
    assert page.text.count("列表测试大学") == 2 and f'href="/institutions/{uni.id}"' in page.text
    assert "已停用" in page.text and "正常" in page.text


async def test_user_list_pages_keep_the_search(client: httpx.AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(session, role="platform_admin")
    for i in range(51):
        await make_user(session, name=f"翻页用户{i:02d}", email=f"fanye{i:02d}@example.cn")
    await login_web(session, client, admin)
    first = await client.get("/admin/users", params={"q": "翻页用户"})
    assert "共 51 位用户" in first.text and "上一页" not in first.text
    assert 'href="/admin/users?q=%E7%BF%BB%E9%A1%B5%E7%94%A8%E6%88%B7&amp;offset=50"' in first.text
    second = await client.get("/admin/users", params={"q": "翻页用户", "offset": 50})
    assert "上一页" in second.text and "下一页" not in second.text


async def test_entry_values_read_as_written(client: httpx.AsyncClient, session: AsyncSession) -> None:
    """Before/after values are shown as text: Chinese as is, markup escaped once (not as \\u003c)."""
    admin = await make_user(session, role="platform_admin")
    record(session, actor_id=admin.id, action="test.values_entry", target_type="thing", target_id=3,
           before={"name": "旧名"}, after={"name": "<script>alert(1)</script> & 新名"})
    await session.flush()
    await login_web(session, client, admin)
    page = await client.get("/admin/activity", params={"action": "test.values_entry"})
    assert "&#34;旧名&#34;" in page.text or '"旧名"' in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; 新名" in page.text
    assert "\\u003c" not in page.text and "<script>alert" not in page.text


async def test_a_stalled_seal_is_pointed_out(client: httpx.AsyncClient, session: AsyncSession) -> None:
    """Entries wait seconds for the seal job; minutes mean no job runner is running, and the page says so."""
    from datetime import UTC, datetime, timedelta

    from booking.core.clock import set_clock

    written = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    set_clock(lambda: written)
    admin = await make_user(session, role="platform_admin")
    record(session, actor_id=admin.id, action="test.fresh_entry", target_type="thing", target_id=4)
    await session.flush()
    await login_web(session, client, admin)
    set_clock(lambda: written + timedelta(seconds=30))
    assert 'data-testid="seal-stalled"' not in (await client.get("/admin/activity")).text
    set_clock(lambda: written + timedelta(minutes=10))
    page = await client.get("/admin/activity")
    assert 'data-testid="seal-stalled"' in page.text and "booking scheduler" in page.text
