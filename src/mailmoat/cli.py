"""The `mailmoat` command."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# every check, so that the sections checks declare beside their code exist (config.sections)
import mailmoat.assembly  # noqa: F401
from mailmoat import config, config_checks, logs, privileges, startup
from mailmoat.limits import MANUAL_BAN_TIME
from mailmoat.server import sdnotify


@click.group()
@click.version_option(package_name="mailmoat")
def main() -> None:
    """mailmoat: a hardened SMTP filtering gateway."""


def _load(path: Path | None, overrides: dict[str, Any], *, files: bool = False) -> config.Settings:
    """The settings, or exit 2 with one line per problem; `files`: also check every file a
    setting names (what `config check` and `serve` need before anything starts)."""
    try:
        return _read(path, overrides) if files else config.load(path, overrides)
    except config.ConfigError as err:
        for key, reason in err.problems:
            click.echo(f"config error: {key}: {reason}", err=True)
        sys.exit(2)


def _read(path: Path | None, overrides: dict[str, Any]) -> config.Settings:
    """The settings with every file a setting names checked too (start, `config check` and
    reload), or ConfigError."""
    settings = config.load(path, overrides)
    if problems := config_checks.file_problems(settings):
        raise config.ConfigError(problems)
    return settings


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="TOML file.")
@click.option("--listen", multiple=True, help="HOST:PORT to listen on (repeatable).")
@click.option("--downstream", help="Internal server HOST:PORT (default: deliver to --maildir).")
@click.option("--lmtp", is_flag=True, default=None, help="Speak LMTP to the downstream server.")
@click.option("--domain", multiple=True, help="Local domain to accept mail for (repeatable).")
@click.option("--maildir", type=click.Path(path_type=Path), help="Maildir for local delivery.")
@click.option("--hostname", help="Name in the greeting and the Received: header.")
@click.option(
    "--workers", type=int, help="Worker processes (0 = one per CPU core, 1 = one process)."
)
def serve(
    config_file: Path | None,
    listen: tuple[str, ...],
    downstream: str | None,
    lmtp: bool | None,
    domain: tuple[str, ...],
    maildir: Path | None,
    hostname: str | None,
    workers: int | None,
) -> None:
    """Run the gateway. Flags override the config file."""
    # From here on a SIGHUP (logrotate, systemd) is never fatal: ignored until the reload
    # handler is in place (binding, workers and a directory to load take a while).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["server.workers"] = workers
    if listen:
        overrides["server.listen"] = list(listen)
    if hostname:
        overrides["server.hostname"] = hostname
    if downstream:
        overrides["relay.downstream"] = downstream
    if lmtp:
        overrides["relay.protocol"] = "lmtp"
    if domain:
        overrides["domains.local"] = list(domain)
    if maildir:
        overrides["maildir.path"] = str(maildir)
    settings = _load(config_file, overrides, files=True)
    logs.setup(settings.log)
    if not settings.domains.local:
        logs.event("warning", 30, message="no local domains configured: every recipient is refused")
    if settings.server.uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    asyncio.run(_serve(settings, worker_count(settings), lambda: _read(config_file, overrides)))


def worker_count(settings: config.Settings) -> int:
    """server.workers, where 0 means one per CPU core this process may run on."""
    if settings.server.workers:
        return settings.server.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


async def _serve(
    settings: config.Settings, workers: int, load: Callable[[], config.Settings]
) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the configuration (`load`)."""
    from mailmoat.console.users import UsersError
    from mailmoat.directory.static import StaticFileError
    from mailmoat.server.gateway import Gateway
    from mailmoat.server.reload import Reloader
    from mailmoat.server.supervisor import Supervisor

    console = None
    gateway = Supervisor(settings, workers) if workers > 1 else Gateway(settings)
    try:
        await gateway.bind()
        who = privileges.drop(settings.server.user, settings.server.group)
        if who is not None:
            logs.event("privileges", user=who.user, uid=who.uid, gid=who.gid)
        elif os.geteuid() == 0:
            logs.event("warning", 30, message=privileges.ROOT_WARNING)
        await gateway.start()
    except (OSError, StaticFileError, privileges.PrivilegeError) as err:
        click.echo(f"cannot start: {err}", err=True)
        await gateway.close_sides()
        await gateway.pipeline.close()
        if isinstance(gateway, Gateway):
            await gateway.delivery.close()
        await gateway.store.close()  # a packet filter's table goes with its store
        sys.exit(1)
    if settings.console.listen:  # its own thread and loop, outside the sessions' loops
        from mailmoat.console import server as console_server

        try:
            console = console_server.start(settings, gateway)
        except (OSError, UsersError) as err:
            click.echo(f"cannot start the console: {err}", err=True)
            await gateway.stop(0)
            sys.exit(1)
    # Everything made at start-up lives as long as the process: keep it out of every garbage
    # collection, so a full collection only walks the sessions (shorter pauses under load).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP (systemctl reload, logrotate) reloads the configuration; it never kills the gateway
    loop.add_signal_handler(signal.SIGHUP, Reloader(gateway, load).request)
    where = ", ".join(settings.server.listen) or "side services only"
    sdnotify.notify("READY=1", f"STATUS=listening on {where}")
    pings = asyncio.create_task(sdnotify.watchdog())
    warned = asyncio.create_task(startup.warn(settings))  # a dead resolver takes dns.timeout
    await stop.wait()
    # no reload builds anything while stopping: the handler is replaced by one that does
    # nothing (removing it would leave SIGHUP fatal for a moment)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    sdnotify.notify("STOPPING=1")
    pings.cancel()
    warned.cancel()
    logs.event("stopping", drain_time=settings.server.drain_time)
    if console is not None:
        await asyncio.to_thread(console.stop)
    await gateway.stop(settings.server.drain_time)


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="TOML file.")
@click.option("--admin", help="Admin endpoint HOST:PORT or socket path (default: admin.listen).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON document.")
def stats(config_file: Path | None, admin: str | None, as_json: bool) -> None:
    """Print a running mailmoat's counters (refusals by reason, bans, stress mode, ...)."""
    from mailmoat.server.admin import fetch

    endpoint, token = _admin_endpoint(config_file, admin)
    try:
        doc = fetch(endpoint, token=token)
    except (OSError, ValueError) as err:
        click.echo(f"cannot read stats from {endpoint}: {err}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    rows: list[tuple[str, object]] = [
        (k, doc[k]) for k in ("pid", "uptime", "rss_kib", "cpu_seconds") if k in doc
    ]
    for group in ("gauges", "counters"):
        values = doc.get(group)
        if isinstance(values, dict):
            rows += sorted(values.items())
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _admin_endpoint(config_file: Path | None, admin: str | None) -> tuple[str, str]:
    """The admin endpoint (--admin, else admin.listen) and its bearer token, or exit 2."""
    settings = _load(config_file, {})
    endpoint = admin or settings.admin.listen
    if not endpoint:
        click.echo("no admin endpoint: set admin.listen in the config or pass --admin", err=True)
        sys.exit(2)
    token_file = settings.admin.token_file
    return endpoint, config_checks.admin_token(token_file) if token_file else ""


def _bans_call(
    config_file: Path | None, admin: str | None, method: str, path: str
) -> tuple[int, bytes]:
    from mailmoat.server.admin import request

    endpoint, token = _admin_endpoint(config_file, admin)
    try:
        return request(endpoint, path, token=token, method=method)
    except (OSError, ValueError) as err:
        click.echo(f"cannot reach the admin endpoint {endpoint}: {err}", err=True)
        sys.exit(1)


_CONFIG_OPTION = click.option(
    "-c", "--config", "config_file", type=click.Path(path_type=Path), help="TOML file."
)
_ADMIN_OPTION = click.option(
    "--admin", help="Admin endpoint HOST:PORT or socket path (default: admin.listen)."
)


@main.command()
@click.argument("target")
@click.option("--for", "seconds", type=float, default=MANUAL_BAN_TIME, show_default=True,
              help="Seconds the ban lasts.")  # fmt: skip
@_CONFIG_OPTION
@_ADMIN_OPTION
def ban(target: str, seconds: float, config_file: Path | None, admin: str | None) -> None:
    """Refuse TARGET (an address or a network) at connect for --for seconds."""
    from mailmoat.server.admin import bans_path

    status, body = _bans_call(config_file, admin, "POST", bans_path(target, seconds))
    if status != 200:
        click.echo(f"ban refused: {body.decode(errors='replace').strip()}", err=True)
        sys.exit(2 if status == 400 else 1)
    done = json.loads(body)
    click.echo(f"banned {done['target']} for {done['seconds']:g} s")


@main.command()
@click.argument("target")
@_CONFIG_OPTION
@_ADMIN_OPTION
def unban(target: str, config_file: Path | None, admin: str | None) -> None:
    """Lift every ban of TARGET (strikes, harvest and the administrator's)."""
    from mailmoat.server.admin import bans_path

    status, body = _bans_call(config_file, admin, "DELETE", bans_path(target))
    if status == 404:
        click.echo(f"{target} is not banned", err=True)
        sys.exit(1)
    if status != 200:
        click.echo(f"unban refused: {body.decode(errors='replace').strip()}", err=True)
        sys.exit(2 if status == 400 else 1)
    click.echo(f"unbanned {target}")


@main.command()
@_CONFIG_OPTION
@_ADMIN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON list.")
def bans(config_file: Path | None, admin: str | None, as_json: bool) -> None:
    """List the running bans, longest first."""
    from mailmoat.server.admin import bans_path

    status, body = _bans_call(config_file, admin, "GET", bans_path())
    if status != 200:
        click.echo(f"cannot list bans: {body.decode(errors='replace').strip()}", err=True)
        sys.exit(1)
    listed = json.loads(body)
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    for entry in listed:
        click.echo(f"{entry['target']:<40}  {entry['kind']:<12}  {entry['seconds']:>10.1f} s")


@main.group(name="config")
def config_group() -> None:
    """Check a configuration file or list every setting."""


@config_group.command()
@click.argument("file", type=click.Path(path_type=Path))
def check(file: Path) -> None:
    """Validate FILE; print each problem as KEY: REASON."""
    _load(file, {}, files=True)
    click.echo(f"{file}: ok")


@config_group.command()
def defaults() -> None:
    """Print every setting with its default and what it does, as a TOML file (like postconf -d)."""
    click.echo(config.defaults_toml(), nl=False)


@main.group(name="console")
def console_group() -> None:
    """The web console's users."""


@console_group.command()
@click.argument("name")
@click.option("--file", "users_file", type=click.Path(path_type=Path), required=True,
              help="The users file (console.users_file).")  # fmt: skip
def adduser(name: str, users_file: Path) -> None:
    """Add NAME (or change its password) in FILE; the password is read from standard input."""
    from mailmoat.console.users import UsersError, add

    password = sys.stdin.readline().rstrip("\r\n")
    try:
        add(users_file, name, password)
    except UsersError as err:
        click.echo(f"cannot add {name}: {err}", err=True)
        sys.exit(2)
    click.echo(f"{name} added to {users_file}")
