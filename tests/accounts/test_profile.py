"""The profile: a name of spaces only is refused as empty (page and API), nothing is saved; the page's two
name fields (the person's, a new token's) have their own ids, so each label belongs to its field."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer_headers, login_web, make_user


@pytest.mark.parametrize("name", ["", "   ", "\u3000 "])
async def test_blank_name_refused_on_the_page(client: httpx.AsyncClient, session: AsyncSession, name: str) -> None:
    user = await make_user(session, name="张三")
    await login_web(session, client, user)
    r = await client.post("/profile", data={"name": name, "phone": ""})
    assert r.status_code == 422 and "太短（至少 1 个字符）" in r.text
    await session.refresh(user)
    assert user.name == "张三"


async def test_name_is_trimmed_and_blank_refused_by_the_api(client: httpx.AsyncClient,
                                                             session: AsyncSession) -> None:
    user = await make_user(session, name="张三")
    headers = await bearer_headers(session, user)
    r = await client.patch("/api/v1/me", headers=headers, json={"name": "  "})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    r = await client.patch("/api/v1/me", headers=headers, json={"name": " 李四 "})
    assert r.status_code == 200 and r.json()["name"] == "李四"


async def test_ids_are_unique(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await login_web(session, client, await make_user(session))
    page = (await client.get("/profile")).text
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert '<label for="f-token-name">令牌名称' in page
