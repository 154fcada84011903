"""`booking import FILE --institution ID`: all or nothing, errors printed by row and column, exit 1 on errors.
Runs the real CLI in a subprocess against a scratch database it commits to."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from booking.core import migrations
from tests.db import REPO, TestDatabase, _create, _drop, _with_database


@pytest.fixture
def scratch(test_database: TestDatabase) -> Iterator[tuple[str, int]]:
    name = f"booking_cli_{os.getpid()}"
    asyncio.run(_create(test_database.admin_dsn, name))
    dsn = _with_database(test_database.admin_dsn, name)
    migrations.upgrade(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))

    async def institution() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "INSERT INTO institutions (name, kind, city_code) VALUES ('命令行测试大学', '高校', '510100') RETURNING id"
                )
            )
        finally:
            await conn.close()

    yield dsn, asyncio.run(institution())
    asyncio.run(_drop(test_database.admin_dsn, name))


def _count(dsn: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM instruments"))
        finally:
            await conn.close()

    return asyncio.run(run())


def _run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "booking.cli", "import", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(path: Path, bad: bool) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["所在单位仪器内部编码", "中文名称", "设备分类编码", "原值（万元）", "共享模式"])
        for i in range(50):
            w.writerow([f"CLI-{i}", f"命令行导入质谱仪{i}", "010200", "88.5", "外部共享"])
        if bad:
            w.writerow(["CLI-X", "坏行", "010200", "很多", "外部共享"])


def test_cli_import_rejects_then_imports(scratch: tuple[str, int], tmp_path: Path) -> None:
    dsn, institution_id = scratch
    file = tmp_path / "instruments.csv"
    _write(file, bad=True)
    rejected = _run(dsn, str(file), "--institution", str(institution_id))
    assert rejected.returncode == 1, rejected.stderr
    assert "52" in rejected.stderr and "原值（万元）" in rejected.stderr and "应为数字" in rejected.stderr
    assert _count(dsn) == 0
    _write(file, bad=False)
    ok = _run(dsn, str(file), "--institution", str(institution_id))
    assert ok.returncode == 0, ok.stderr
    assert "50 created" in ok.stderr
    again = _run(dsn, str(file), "--institution", str(institution_id))
    assert again.returncode == 0 and "0 created" in again.stderr and "50 unchanged" in again.stderr
    assert _count(dsn) == 50
    unknown = _run(dsn, str(file), "--institution", str(institution_id), "--as-email", "nobody@example.cn")
    assert unknown.returncode == 1
