"""The ``sipsilo`` command line.

Commands and the functions they call (imported inside the command, so that
starting the CLI loads no database driver; the server and the control client are
looked up by name, and a build without them says so in one line):

* ``serve`` → ``sipsilo.app.run(config)``
* ``check-config FILE [--check-db]`` → prints the effective configuration as TOML;
  with ``--check-db`` also ``sipsilo.admin.silo.check_db(config)`` (connects)
* ``location list [AOR]`` → ``sipsilo.control.client.request(config,
  {"cmd": "location.list", "aor": AOR or None})``
* ``stats`` → ``sipsilo.control.client.request(config, {"cmd": "stats"})``
* ``silo list [AOR]`` → ``sipsilo.admin.silo.list_messages(config, aor)``
* ``silo show ID`` → ``sipsilo.admin.silo.show_message(config, id)``
* ``silo delete ID`` → ``sipsilo.admin.silo.delete_message(config, id)``
* ``silo purge --expired | AOR | --all`` →
  ``sipsilo.admin.silo.purge(config, aor=None, expired=False)``
* ``cluster status`` → ``sipsilo.silo.cluster.cluster_status(config)``
* ``db init`` / ``db migrate`` → ``sipsilo.admin.silo.db_init(config)`` / ``db_migrate(config)``
* ``user add|passwd|remove|list`` → ``sipsilo.admin.users.user_add(config, aor, password)``...

Those functions may be plain or ``async``. ``show_message`` returns a dict or
None (no such message), ``delete_message`` a bool, ``purge`` the number deleted,
``db_init`` the schema version, ``db_migrate`` (version before, version after);
anything else returned is printed generically (a string as is, a mapping or
dataclass as one JSON line, an iterable one item per line). A failure meant for
the user is raised as a sipsilo exception class, ``LookupError``, ``ValueError``
or ``OSError``: it becomes one line and exit 1. Any other exception is reported
as an internal error in one line (``SIPSILO_DEBUG=1`` shows the traceback).

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 130 when
interrupted. Every error is a single line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

import click

from sipsilo import __version__, cli_format
from sipsilo.cli_agent import agent_options, make_agent
from sipsilo.config import Config, ConfigError, load_config

F = TypeVar("F", bound=Callable[..., Any])

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The one prefix of every error line: usage, configuration and runtime alike.
ERROR_PREFIX = "sipsilo: error: "


class CliError(click.ClickException):
    """A runtime failure reported as ``sipsilo: error: <message>``, exit 1."""

    exit_code = EXIT_RUNTIME


class _OneLineErrors(click.Group):
    """A group whose every error, usage or runtime, is one line on stderr.

    Click's standalone mode prints usage blocks and lets unknown exceptions
    escape; running it non-standalone and reporting here keeps one format for
    usage errors, config errors and runtime failures.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ConfigError as exc:
            code, line = EXIT_USAGE, f"{ERROR_PREFIX}{exc.detail}"
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx else "sipsilo"
            code = exc.exit_code
            line = (f"{ERROR_PREFIX}{exc.format_message().rstrip('.')}"
                    f" (see '{path} --help')")
            # Bare "sipsilo" (click >= 8.2 raises NoArgsIsHelpError): the help
            # text is the answer, not an error line.
            if type(exc).__name__ == "NoArgsIsHelpError":
                click.echo(exc.format_message(), err=True)
                line = ""
        except click.ClickException as exc:
            code, line = exc.exit_code, f"{ERROR_PREFIX}{exc.format_message()}"
        except click.Abort:
            code, line = EXIT_INTERRUPTED, ""
        else:
            if not standalone_mode:
                return rv
            sys.exit(rv if isinstance(rv, int) else 0)
        if line:
            click.echo(line, err=True)
        if not standalone_mode:
            return code
        sys.exit(code)


# --- shared options -------------------------------------------------------------

_set_option = click.option(
    "--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
    help="Override one key (repeatable). VALUE is read as TOML if it parses, else as a string.",
)
_data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), envvar="SIPSILO_DATA_DIR",
    help="Directory for relative database paths and the control socket [default: cwd].",
)
_config_option = click.option(
    "--config", "-c", "config_path", type=click.Path(dir_okay=False), envvar="SIPSILO_CONFIG",
    help="TOML configuration file.",
)


def config_options(func: F) -> F:
    """Add ``--config/--set/--data-dir`` and pass the loaded ``config: Config`` instead.

    Environment variables ``SIPSILO_SECTION__KEY`` are applied between the file
    and ``--set``; a config error propagates as ConfigError (one line, exit 2).
    """

    @functools.wraps(func)
    def wrapper(
        *args: Any, config_path: str | None, sets: tuple[str, ...], data_dir: str | None,
        **kwargs: Any,
    ) -> Any:
        config = load_config(config_path, list(sets), data_dir=data_dir)
        return func(*args, config=config, **kwargs)

    return _config_option(_set_option(_data_dir_option(wrapper)))  # type: ignore[return-value]


# --- lazy calls into other packages ---------------------------------------------


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only "this module (or its package) does not exist yet" is expected; a
        # missing third-party dependency inside it is reported with its name.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise CliError(f"{module} is not available in this build of sipsilo") from None
        raise CliError(f"cannot load {module}: {exc}") from None


def _resolve(module: str, name: str) -> Callable[..., Any]:
    func = getattr(_import(module), name, None)
    if not callable(func):
        raise CliError(f"{module}.{name} is not available in this build of sipsilo")
    return func  # type: ignore[no-any-return]


def _run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``, awaiting it if it is async; its exceptions become one line."""
    try:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:
        raise _failure(exc) from exc
    return result


def _call(module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    return _run(_resolve(module, name), *args, **kwargs)


def _failure(exc: Exception) -> CliError:
    """One line for an exception from the code a command called.

    Errors the callee means for the user (sipsilo's own exception classes, a
    missing message, an unreachable socket) read as they are; anything else is
    a bug, still one line, with SIPSILO_DEBUG=1 to get the traceback.
    """
    if os.environ.get("SIPSILO_DEBUG"):
        raise exc
    if isinstance(exc, OSError) and exc.strerror:
        return CliError(exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}")
    text = str(exc) or type(exc).__name__
    if isinstance(exc, LookupError | ValueError | OSError) or (
        type(exc).__module__.startswith("sipsilo.")
    ):
        return CliError(text)
    return CliError(f"internal error: {type(exc).__name__}: {text} "
                    "(run with SIPSILO_DEBUG=1 for details)")


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("json_output"))


def _emit(result: Any, empty: str = "none") -> None:
    """Print what an admin or control function returned: a table or aligned
    lines for people, one JSON document per item with ``sipsilo --json``.

    An empty list says so in words (*empty*), and ``[]`` in JSON: a blank line
    or no output at all reads as "something went wrong"."""
    if result is None:
        return
    if isinstance(result, (list, tuple)) and not result:
        click.echo("[]" if _json_wanted() else empty)
        return
    if not _json_wanted():
        click.echo(cli_format.as_text(result))
    elif isinstance(result, Iterable) and not isinstance(result, (str, Mapping)):
        for item in result:
            click.echo(cli_format.as_json(item))
    else:
        click.echo(cli_format.as_json(result))


def _control(config: Config, message: dict[str, Any], empty: str = "none") -> None:
    request = _resolve("sipsilo.control.client", "request")
    try:
        result = _run(request, config, message)
    except CliError as exc:
        # A socket error here almost always means the server is not running.
        if isinstance(exc.__cause__, OSError):
            raise CliError(f"cannot reach the running server at "
                           f"{config.control_socket_path()}: {exc.message}") from None
        raise
    _emit(result, empty)


def _version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from sipsilo.sip import core_build  # only here: the other commands start without it

    click.echo(f"sipsilo {__version__} ({core_build()})")
    ctx.exit()


# --- commands -------------------------------------------------------------------


@click.group(name="sipsilo", cls=_OneLineErrors,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _param, value: _version(ctx, value),
              help="Show the version, and whether the SIP core is compiled, and exit.")
@click.option("--json", "json_output", is_flag=True,
              help="Print results as JSON (one document per line) for scripts.")
def main(json_output: bool) -> None:
    """sipsilo: a SIP registrar and proxy that stores MESSAGEs for offline users."""


@main.command()
@config_options
def serve(config: Config) -> None:
    """Run the server."""
    run = getattr(_import("sipsilo.app"), "run", None)
    if not callable(run):
        raise CliError("sipsilo.app.run is not available in this build of sipsilo")
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data dir {config.data_dir}: {exc.strerror}") from None
    try:
        result = run(config)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except KeyboardInterrupt:
        raise click.Abort() from None
    except OSError as exc:
        # Port in use, permission denied, unreadable database...: the user's to fix.
        raise CliError(f"cannot run: {exc}") from None
    except Exception as exc:
        raise _failure(exc) from None
    if isinstance(result, int) and result:
        sys.exit(result)  # a worker process died (the log says which)


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--check-db", is_flag=True,
              help="Also connect to the configured databases (exit 1 if one is unreachable).")
@_set_option
@_data_dir_option
def check_config(file: str, sets: tuple[str, ...], data_dir: str | None, check_db: bool) -> None:
    """Validate FILE and print the effective configuration (file + environment + --set)."""
    config = load_config(file, list(sets), data_dir=data_dir)
    click.echo(config.dump_toml(), nl=False)
    if check_db:
        # Opt-in: validating a file must keep working where the database is not reachable
        # (a CI job, a laptop); the results go to stderr so stdout stays loadable TOML.
        from sipsilo.admin import silo as silo_admin

        for line in _run(silo_admin.check_db, config):
            click.echo(line, err=True)


@main.group()
def location() -> None:
    """Registered contacts (asks the running server)."""


@location.command("list")
@click.argument("aor", required=False)
@config_options
def location_list(config: Config, aor: str | None) -> None:
    """List bindings, all or of one AOR."""
    _control(config, {"cmd": "location.list", "aor": aor},
             f"no registrations{f' for {aor}' if aor else ''}")


@location.command("remove")
@click.argument("aor")
@config_options
def location_remove(config: Config, aor: str) -> None:
    """Unregister every contact of AOR (asks the running server)."""
    _control(config, {"cmd": "location.remove", "aor": aor})


@main.command()
@config_options
def stats(config: Config) -> None:
    """Counters of the running server."""
    _control(config, {"cmd": "stats"})


@main.group()
def cluster() -> None:
    """Instances sharing one database (docs/scaling.md)."""


@cluster.command("status")
@config_options
def cluster_status(config: Config) -> None:
    """Live instances (heartbeat rows), their bindings and delivery claims."""
    rows = _call("sipsilo.silo.cluster", "cluster_status", config)
    if _json_wanted() or not rows:
        _emit(list(rows or ()), "no live instances")
        return
    table = [("INSTANCE", "HOP", "UP", "SEEN", "BINDINGS", "CLAIMS")] + [
        (r["instance"], r["hop"] or "-", f"{r['up_seconds']}s", f"{r['seen_seconds_ago']}s",
         str(r["bindings"]), str(r["claims"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


@main.group()
def silo() -> None:
    """Stored messages (works on the database directly)."""


@silo.command("list")
@click.argument("aor", required=False)
@config_options
def silo_list(config: Config, aor: str | None) -> None:
    """List stored messages, all or for one AOR."""
    from sipsilo.admin.silo import list_messages

    rows = _run(list_messages, config, aor)
    if _json_wanted() or not rows:
        _emit(list(rows or ()), f"no messages waiting{f' for {aor}' if aor else ''}")
    else:
        _emit([cli_format.message_summary(r) for r in rows])


@silo.command("show")
@click.argument("message_id", metavar="ID", type=int)
@config_options
def silo_show(config: Config, message_id: int) -> None:
    """Show one stored message."""
    from sipsilo.admin.silo import show_message

    message = _run(show_message, config, message_id)
    if message is None:
        raise CliError(f"no stored message {message_id}")
    _emit(message)


@silo.command("delete")
@click.argument("message_id", metavar="ID", type=int)
@config_options
def silo_delete(config: Config, message_id: int) -> None:
    """Delete one stored message."""
    from sipsilo.admin.silo import delete_message

    deleted = _run(delete_message, config, message_id)
    if deleted is False:
        raise CliError(f"no stored message {message_id}")
    click.echo(f"deleted message {message_id}")


@silo.command("purge")
@click.argument("aor", required=False)
@click.option("--expired", is_flag=True, help="Delete the expired messages.")
@click.option("--all", "purge_all", is_flag=True, help="Delete every stored message.")
@config_options
def silo_purge(config: Config, aor: str | None, expired: bool, purge_all: bool) -> None:
    """Delete the messages of AOR, the expired ones (--expired) or all (--all)."""
    if [aor is not None, expired, purge_all].count(True) != 1:
        # Deleting everything must be asked for explicitly, never a default.
        raise click.UsageError("give exactly one of AOR, --expired or --all")
    from sipsilo.admin.silo import purge

    count = _run(purge, config, aor=aor, expired=expired)
    if isinstance(count, int):
        click.echo(f"purged {count} message{'s' if count != 1 else ''}")
    else:
        _emit(count)


@main.group()
def db() -> None:
    """Message store schema."""


@db.command("init")
@config_options
def db_init(config: Config) -> None:
    """Create the message table (idempotent)."""
    from sipsilo.admin.silo import db_init

    version = _run(db_init, config)
    if isinstance(version, int):
        click.echo(f"message store ready, schema version {version}")
    else:
        _emit(version)


@db.command("migrate")
@config_options
def db_migrate(config: Config) -> None:
    """Bring an existing message table up to date."""
    from sipsilo.admin.silo import db_migrate

    versions = _run(db_migrate, config)
    if isinstance(versions, tuple) and len(versions) == 2:
        before, after = versions
        click.echo(f"schema version {after}" + (" (unchanged)" if before == after
                                                else f" (was {before})"))
    else:
        _emit(versions)


@main.group()
def user() -> None:
    """Subscribers who authenticate (works on the database directly)."""


def _read_password(password_stdin: bool) -> str:
    # Never an argument or an option value: those end up in shell history and ps.
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    if not password:
        raise CliError("empty password")
    return password


_password_stdin_option = click.option(
    "--password-stdin", is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)


@user.command("add")
@click.argument("aor", metavar="USER@DOMAIN")
@_password_stdin_option
@config_options
def user_add(config: Config, aor: str, password_stdin: bool) -> None:
    """Add a user; the password is asked twice (no echo) or read with --password-stdin."""
    password = _read_password(password_stdin)
    from sipsilo.admin.users import user_add

    _emit(_run(user_add, config, aor, password))


@user.command("passwd")
@click.argument("aor", metavar="USER@DOMAIN")
@_password_stdin_option
@config_options
def user_passwd(config: Config, aor: str, password_stdin: bool) -> None:
    """Change a user's password."""
    password = _read_password(password_stdin)
    from sipsilo.admin.users import user_passwd

    _emit(_run(user_passwd, config, aor, password))


@user.command("remove")
@click.argument("aor", metavar="USER@DOMAIN")
@config_options
def user_remove(config: Config, aor: str) -> None:
    """Remove a user."""
    from sipsilo.admin.users import user_remove

    _emit(_run(user_remove, config, aor))


@user.command("list")
@config_options
def user_list(config: Config) -> None:
    """List users (and which password hashes they have)."""
    from sipsilo.admin.users import user_list

    _emit(_run(user_list, config), "no users")


# --- a client to try the server with ----------------------------------------------


def _credentials(password_stdin: bool) -> Any:
    from sipsilo.agent import Password

    return Password(_read_password(True)) if password_stdin else None



@main.command()
@click.option("--from", "from_", required=True, metavar="USER@HOST", help="The sender.")
@click.option("--to", "to", required=True, metavar="USER@HOST", help="The recipient.")
@click.option("--content-type", default=None, metavar="TYPE",
              help="Content type of the body [default: text/plain; charset=UTF-8].")
@click.argument("text", required=False)
@agent_options
@config_options
def send(config: Config, from_: str, to: str, content_type: str | None, text: str | None,
         transport: str, server: str | None, password_stdin: bool,
         secure: dict[str, Any]) -> None:
    """Send one MESSAGE with TEXT (or standard input) and print the final answer.

    Exit status 0 when the answer is 2xx (202: stored for an offline user), else 1.
    """
    from sipsilo.agent import AgentError, send_message, sip_uri

    if text is None and password_stdin:
        raise click.UsageError("give TEXT when the password comes on stdin")
    try:
        from_uri, to_uri = sip_uri(from_, "--from"), sip_uri(to, "--to")
    except AgentError as exc:
        raise click.UsageError(str(exc)) from None
    if text is None and sys.stdin.isatty():
        # Waiting silently for a body nobody is typing looks like a hang.
        raise click.UsageError("give TEXT, or pipe the body on stdin")
    body = text.encode() if text is not None else sys.stdin.buffer.read()
    if not body:
        raise click.UsageError("empty message: give TEXT or a body on stdin")
    ctype = content_type or "text/plain; charset=UTF-8"
    credentials = _credentials(password_stdin)

    async def go() -> Any:
        async with make_agent(config, transport, server, secure) as agent:
            return await send_message(agent, from_uri, to_uri, body, ctype, credentials)

    response = _run(go)
    click.echo(f"{response.status} {response.reason}")
    if not 200 <= response.status < 300:
        sys.exit(EXIT_RUNTIME)


@main.command()
@click.argument("aor", metavar="USER@HOST")
@click.option("--expires", type=click.IntRange(1, 86400), default=60, show_default=True,
              help="Seconds the registration lasts (renew by running again).")
@click.option("--for", "for_seconds", type=click.FloatRange(0, 86400), default=None,
              metavar="SECONDS", help="Stay online this long, then unregister "
              "[default: until Ctrl-C].")
@agent_options
@config_options
def register(config: Config, aor: str, expires: int, for_seconds: float | None,
             transport: str, server: str | None, password_stdin: bool,
             secure: dict[str, Any]) -> None:
    """Be USER's phone: register, print the MESSAGEs that arrive, unregister at the end.

    Stored messages are delivered as soon as the registration is in place.
    """
    from sipsilo.agent import AgentError, register_and_wait, sip_uri

    try:
        uri = sip_uri(aor, "USER@HOST")
    except AgentError as exc:
        raise click.UsageError(str(exc)) from None
    if for_seconds is not None and for_seconds > expires:
        expires = int(for_seconds) + 1  # the binding must last as long as we stay
    credentials = _credentials(password_stdin)

    async def go() -> Any:
        async with make_agent(config, transport, server, secure) as agent:
            return await register_and_wait(agent, uri, expires, for_seconds, credentials,
                                           click.echo)

    _run(go)
