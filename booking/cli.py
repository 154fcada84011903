"""The `booking` command: serve, demo, database, users, activity log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="四川省大型科研仪器共享预约平台 / Sichuan shared instrument booking service",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database migrations", no_args_is_help=True)
users_app = typer.Typer(help="User accounts", no_args_is_help=True)
activity_app = typer.Typer(help="Activity log", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(activity_app, name="activity")

console = Console(stderr=True)


def _database_url() -> str:
    from booking.core.db import resolve_database_url

    return resolve_database_url()


def _migrate(url: str) -> None:
    from booking.core import migrations

    migrations.upgrade(url)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # uvicorn answers SIGTERM with a graceful shutdown and then raises the signal again once it is done. With
    # Python's default action the process would end right there, skipping the command's own cleanup (stopping the
    # job runner) and the atexit hook that stops the embedded PostgreSQL. As SystemExit it unwinds normally, and
    # exits 0 (a stop that was asked for); a second SIGTERM while cleaning up is ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from booking.core.settings import get_settings

    if not os.environ.get("BOOKING_BASE_URL"):
        # Without a configured public address, links and calendar files point at where this server listens
        # (the workers read the environment when they start).
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host  # noqa: S104
        os.environ["BOOKING_BASE_URL"] = f"http://{shown}:{port}"
        get_settings.cache_clear()
    settings = get_settings()
    uvicorn.run("booking.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=None, access_log=False, proxy_headers=True,
                forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
                timeout_graceful_shutdown=10, log_level=settings.log_level.lower())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Web worker processes")] = 1,
) -> None:
    """Apply pending migrations, then serve."""
    started = time.perf_counter()
    url = _database_url()
    _migrate(url)
    console.print(f"[green]database ready and migrated in {time.perf_counter() - started:.2f}s[/]")
    _serve(host, port, workers)


def _start_jobs() -> subprocess.Popen[bytes]:
    """The background jobs in a process of their own beside the server, on the same database (DATABASE_URL is
    exported by then): holds expire, reminders go out, the activity log is sealed, as in production."""
    # The runner stops by itself if this process dies without stopping it (SIGKILL, out of memory).
    env = {**os.environ, "BOOKING_JOBS_PARENT_PID": str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "booking.cli", "scheduler"], env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=32)] = 1,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Seed only, do not serve")] = False,
    no_jobs: Annotated[bool, typer.Option("--no-jobs", help="Serve without the background jobs")] = False,
) -> None:
    """Create demo accounts and data if the database is empty, print them, then serve with the background jobs
    running beside the server."""
    from booking import demo as demo_data

    url = _database_url()
    _migrate(url)
    created = asyncio.run(demo_data.seed_if_empty(console))
    table = Table(title="演示账号 / demo accounts (password: demo-pass-2027)")
    table.add_column("email")
    table.add_column("role")
    for email, role in demo_data.DEMO_ACCOUNT_LABELS:
        table.add_row(email, role)
    console.print(table)
    if not created:
        console.print("[yellow]database already had data: nothing seeded[/]")
    console.print(f"open http://{host}:{port}/login")
    if no_serve:
        return
    jobs = None if no_jobs else _start_jobs()
    try:
        _serve(host, port, workers)
    finally:
        if jobs is not None:
            _stop(jobs)


@app.command()
def scheduler() -> None:
    """Run the background job runner (reminders, expiries, no-shows); safe to run in several processes."""
    from booking.core.db import dispose_engine, init_engine
    from booking.core.logging import configure_logging
    from booking.core.settings import get_settings
    from scheduling.runner import run_forever

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    url = _database_url()

    parent = os.environ.get("BOOKING_JOBS_PARENT_PID", "")

    async def run() -> None:
        init_engine(url)
        try:
            await run_forever(parent_pid=int(parent) if parent.isdigit() else None)
        finally:
            await dispose_engine()

    asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from booking.core import migrations

    migrations.upgrade(_database_url(), revision)
    console.print("[green]upgraded[/]")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default one step)."""
    from booking.core import migrations

    migrations.downgrade(_database_url(), revision)
    console.print("[green]downgraded[/]")


@db_app.command("check")
def db_check() -> None:
    """Exit non-zero unless the database is at head and the models match the migrations."""
    from alembic.util.exc import AutogenerateDiffsDetected, CommandError

    from alembic import command
    from booking.core import migrations
    from booking.core.db import make_engine

    url = _database_url()

    async def current() -> str | None:
        engine = make_engine(url)
        try:
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    cur, head = asyncio.run(current()), migrations.head_revision()
    if cur != head:
        console.print(f"[red]database at {cur}, head is {head}: run `booking db upgrade`[/]")
        raise typer.Exit(1)
    try:
        command.check(migrations.alembic_config(url))
    except (AutogenerateDiffsDetected, CommandError) as exc:
        console.print(f"[red]models and migrations differ: {exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"[green]database at head ({head}); models match migrations[/]")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="Email (login)")],
    role: Annotated[str, typer.Option(help="researcher | facility_manager | institution_admin | auditor | "
                                           "platform_admin")] = "researcher",
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    password: Annotated[str | None, typer.Option(help="Password (prompted if omitted)")] = None,
    institution: Annotated[int | None, typer.Option(help="Institution id")] = None,
    facility: Annotated[int | None, typer.Option(help="Facility id (managers)")] = None,
    city: Annotated[str | None, typer.Option(help="市州 code (city auditors)")] = None,
) -> None:
    """Create an account, optionally with a role (recorded in the activity log)."""
    from booking.accounts import service
    from booking.accounts.models import Role, RoleGrant
    from booking.accounts.schemas import UserCreate
    from booking.core.db import dispose_engine, init_engine, unit_of_work
    from booking.core.errors import DomainError

    valid_roles = {r.value for r in Role}
    if role not in valid_roles:
        console.print(f"[red]--role: unknown role {role!r}; choose one of {', '.join(sorted(valid_roles))}[/]")
        raise typer.Exit(2)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def run() -> int:
        init_engine(_database_url())
        try:
            async with unit_of_work() as session:
                grants = [] if role == Role.researcher else [
                    RoleGrant(role=role, institution_id=institution, facility_id=facility, city_code=city)
                ]
                data = UserCreate(email=email, password=password or "", name=name or email.split("@")[0],
                                  institution_id=institution)
                user = await service.create_user(session, None, data, grants=grants)
                return user.id  # type: ignore[return-value]
        finally:
            await dispose_engine()

    try:
        user_id = asyncio.run(run())
    except DomainError as exc:
        for p in exc.problems or []:
            console.print(f"[red]--{(p.field or 'input').replace('_id', '')}: {p.message}[/]")
        if not exc.problems:
            console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    console.print(f"[green]created user {user_id} ({email}) with role {role}[/]")


@app.command("import")
def import_instruments(
    file: Annotated[str, typer.Argument(help="CSV or XLSX in the import template's layout")],
    institution: Annotated[int | None, typer.Option(help="Default institution id for rows without 所属单位")] = None,
    as_email: Annotated[str | None, typer.Option("--as-email", help="Act as this user (their permissions apply); "
                                                  "default: the operator, with full rights")] = None,
) -> None:
    """Import instruments, all or nothing: any bad cell rejects the file and nothing is written."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from booking.accounts import repository as accounts_repo
    from booking.auth.principal import Principal
    from booking.auth.repository import grants_for
    from booking.core.db import dispose_engine, init_engine, unit_of_work
    from booking.core.errors import DomainError
    from instruments.importer import ImportRejected, import_file

    path = Path(file)
    if not path.is_file():
        console.print(f"[red]FILE: {file} does not exist[/]")
        raise typer.Exit(2)
    content = path.read_bytes()

    async def run():  # type: ignore[no-untyped-def]
        init_engine(_database_url())
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console) as bar:
                tasks: dict[str, TaskID] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(stage, total=total)
                    bar.update(tasks[stage], completed=done, total=total)

                async with unit_of_work() as session:
                    actor = None
                    if as_email:
                        user = await accounts_repo.user_by_email(session, as_email)
                        if user is None:
                            raise DomainError(f"--as-email: 用户 {as_email} 不存在")
                        actor = Principal(user=user, grants=tuple(await grants_for(session, user.id)))  # type: ignore[arg-type]
                    return await import_file(session, actor, filename=path.name, content=content,
                                             institution_id=institution, progress=progress)
        finally:
            await dispose_engine()

    try:
        result = asyncio.run(run())
    except ImportRejected as exc:
        table = Table(title=f"未导入：{exc.error_count} 处错误（没有写入任何数据）")
        table.add_column("行", justify="right")
        table.add_column("列")
        table.add_column("问题")
        for e in exc.row_errors:
            table.add_row(str(e.row) if e.row else "文件", e.column or "", e.message)
        console.print(table)
        raise typer.Exit(1) from None
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1) from None
    console.print(f"[green]imported {result.rows} rows: {result.created} created, {result.updated} updated, "
                  f"{result.unchanged} unchanged[/]")


@activity_app.command("verify")
def activity_verify() -> None:
    """Seal pending entries, then recompute the hash chain; exit 1 if any row was altered, removed or inserted."""
    from booking.activity.service import seal, verify_chain
    from booking.core.db import dispose_engine, init_engine, unit_of_work

    async def run():  # type: ignore[no-untyped-def]
        init_engine(_database_url())
        try:
            async with unit_of_work() as session:
                await seal(session)
            async with unit_of_work() as session:
                return await verify_chain(session)
        finally:
            await dispose_engine()

    result = asyncio.run(run())
    if result.ok:
        console.print(f"[green]activity log intact: {result.checked} entries verified[/]")
        return
    for problem in result.problems[:50]:
        console.print(f"[red]{problem}[/]")
    console.print(f"[red]activity log TAMPERED: {len(result.problems)} problem(s) in {result.checked} entries[/]")
    raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app(prog_name="booking")


if __name__ == "__main__":  # pragma: no cover
    main()
