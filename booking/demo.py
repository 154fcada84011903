"""Demo data for `booking demo`: accounts first; each domain adds its own demo data when the database is empty."""

from __future__ import annotations

from rich.console import Console
from rich.progress import TaskID
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import service as accounts
from booking.accounts.models import Facility, InstitutionKind, Role, RoleGrant, User
from booking.accounts.schemas import InstitutionCreate, UserCreate
from booking.core.db import dispose_engine, init_engine, unit_of_work

DEMO_PASSWORD = "demo-pass-2027"  # noqa: S105 - documented demo credential, demo mode only

DEMO_ACCOUNT_LABELS = [
    ("admin@demo.local", "平台管理员 platform admin"),
    ("auditor@demo.local", "省级审计 provincial auditor (科技厅)"),
    ("manager@demo.local", "仪器管理员 facility manager, 四川大学"),
    ("researcher@demo.local", "研究人员 researcher, 电子科技大学"),
]


async def _seed_catalogue(session: AsyncSession, console: Console) -> None:
    """The demo province's institutions and instruments (instruments.seed), with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from booking.core.clock import to_local, utcnow
    from instruments.seed import seed_province

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"演示数据：{stage}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        counts = await seed_province(session, today=to_local(utcnow()).date(), progress=progress)
    console.print(f"[green]demo province: {counts['institutions']} institutions, "
                  f"{counts['instruments']} instruments[/]")


async def _seed_bookings(session: AsyncSession, console: Console) -> None:
    from booking.core.clock import utcnow
    from booking.reservations.seed import seed_bookings

    counts = await seed_bookings(session, utcnow())
    console.print(f"[green]demo bookings: opening hours for {counts['rules']} instruments, "
                  f"{counts['bookings']} bookings[/]")


async def seed_if_empty(console: Console) -> bool:
    init_engine()
    try:
        async with unit_of_work() as session:
            existing = await session.scalar(select(func.count()).select_from(User))
            if existing:
                return False
            scu = await accounts.create_institution(session, None, InstitutionCreate(
                name="四川大学", kind=InstitutionKind.university, city_code="510100",
                address="成都市武侯区一环路南一段24号"))
            uestc = await accounts.create_institution(session, None, InstitutionCreate(
                name="电子科技大学", kind=InstitutionKind.university, city_code="510100",
                address="成都市高新区西源大道2006号"))
            lab = Facility(institution_id=scu.id, name="分析测试中心", description="大型仪器共享平台")  # type: ignore[arg-type]
            session.add(lab)
            await session.flush()
            people = [
                ("admin@demo.local", "平台管理员", None, [RoleGrant(role=Role.platform_admin)]),
                ("auditor@demo.local", "科技厅审计员", None, [RoleGrant(role=Role.auditor)]),
                ("manager@demo.local", "川大仪器管理员", scu.id,
                 [RoleGrant(role=Role.facility_manager, institution_id=scu.id)]),
                ("researcher@demo.local", "电子科大研究员", uestc.id, []),
            ]
            for email, name, inst_id, grants in people:
                await accounts.create_user(session, None, UserCreate(
                    email=email, password=DEMO_PASSWORD, name=name, institution_id=inst_id), grants=grants)
            console.print("[green]demo accounts created[/]")
            await _seed_catalogue(session, console)
            await _seed_bookings(session, console)
            from scheduling.seed import seed_demo

            await seed_demo(session, console)
        # Audit demo data goes after the catalogue's and the bookings': a year of past service records.
        from booking.audit.seed import seed_usage

        async with unit_of_work() as session:
            seeded = await seed_usage(session)
            console.print(f"[green]demo usage: {seeded.records} service records"
                          f" ({seeded.instruments_added} instruments added for the audit demo)[/]")
        return True
    finally:
        await dispose_engine()
