"""The click command class every liverseg command uses: one exit-code table, no tracebacks.

``@click.command(cls=Command)`` gives a command

* a ``--debug`` flag (also ``LIVERSEG_DEBUG=1``) that shows the traceback of an error, and
  ``--version``;
* ``--help`` in sections when the command names them (``sections=``: common options first),
  and old spellings of an option that still work without being shown (:class:`Option`);
* :class:`~liverseg.core.errors.LiversegError` -> ``error: <one line>`` on stderr and
  its exit code (2, or 3 for a full disk), before or during the work;
* ``ModuleNotFoundError`` for a package of an optional extra (torch, pydicom, ...) ->
  ``error: <command> needs <package>, which the '<extra>' extra installs: pip install ...``, exit 2;
* ``KeyboardInterrupt`` (Ctrl-C, and SIGTERM, which is turned into it) -> exit 130;
* ``OSError`` (a file the user named cannot be read or written) -> ``error: <file>: <reason>``
  and exit 2, or 3 when the disk is full.

Any other exception is a bug in liverseg and keeps its traceback.

The table itself lives in :mod:`liverseg.core.errors`; click's own usage errors
(a bad option value) already exit 2.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from liverseg.core.errors import EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_USAGE, LiversegError, describe, first_line
from liverseg.core.extras import missing_extra
from liverseg.core.pages import prefer_small_pages

DEBUG_ENV = "LIVERSEG_DEBUG"
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def debug_enabled(ctx: click.Context | None = None) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    ctx = ctx or click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.meta.get("liverseg_debug"):
            return True
        ctx = ctx.parent
    return False


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["liverseg_debug"] = True


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _eager_flag(name: str, callback: Callable[[click.Context, click.Parameter, bool], None], help: str) -> click.Option:
    return click.Option([name], is_flag=True, expose_value=False, is_eager=True, callback=callback, help=help)


def _debug_option() -> click.Option:
    return _eager_flag("--debug", _set_debug, f"Show tracebacks of errors (also {DEBUG_ENV}=1).")


def _version_option() -> click.Option:
    return _eager_flag("--version", _print_version, "Show the liverseg version and exit.")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from liverseg import __version__

    click.echo(f"{ctx.find_root().info_name or 'liverseg'} (liverseg) {__version__}")
    ctx.exit()


class Option(click.Option):
    """A click option whose ``aliases`` (old spellings, ``--output`` beside ``-o/--out``) work but are not shown."""

    def __init__(self, param_decls: Sequence[str], *, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__([*param_decls, *aliases], **kwargs)
        self.aliases = tuple(aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, every = [o for o in self.opts if o not in self.aliases], self.opts
        self.opts = shown
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = every


Sections = Sequence[tuple[str, list[str]]]


def _format_sections(cmd: click.Command, ctx: click.Context, out: click.HelpFormatter, sections: Sections) -> None:
    """The options under the headings of ``sections`` ((title, [parameter name, ...]), in that order), then the
    rest (``--debug``, ``--version``, ``--help`` and any option no section names) under "Other options"."""
    help_option = cmd.get_help_option(ctx)
    records = {
        "help" if p is help_option else p.name: record
        for p in cmd.get_params(ctx)
        if isinstance(p, click.Option) and (record := p.get_help_record(ctx)) is not None
    }
    placed: set[str | None] = set()
    for title, names in sections:
        rows = [records[n] for n in names if n in records]
        placed.update(names)
        if rows:
            with out.section(title):
                out.write_dl(rows)
    rest = [r for n, r in records.items() if n not in placed]
    if rest:
        with out.section("Other options"):
            out.write_dl(rest)


def _invoke_under_table(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    """Run ``invoke(ctx)``, mapping errors to the exit-code table of the module docstring."""
    prefer_small_pages()
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        return invoke(ctx)
    except LiversegError as e:
        if debug_enabled(ctx):
            raise
        fail(first_line(e), e.exit_code)
    except ModuleNotFoundError as e:  # a package of an optional extra: say which extra installs it
        message = missing_extra(e, ctx.command_path or "this command")
        if message is None or debug_enabled(ctx):
            raise
        fail(message)
    except KeyboardInterrupt:
        if debug_enabled(ctx):
            raise
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as e:  # a file or folder the user named: unreadable, unwritable, full disk
        if debug_enabled(ctx):
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        code = EXIT_DISK_FULL if e.errno in (errno.ENOSPC, errno.EDQUOT) else EXIT_USAGE
        fail(f"{where}{e.strerror or describe(e)}", code)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


class Command(click.Command):
    """A click command under the exit-code table above; keeps the raw arguments in ``ctx.meta``.

    ``sections``: [(title, [parameter name, ...]), ...] lays ``--help`` out under those headings.
    """

    def __init__(self, *args: Any, sections: Sections = (), **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT_SETTINGS))
        super().__init__(*args, **kwargs)
        self.sections = tuple(sections)
        self.params.extend([_debug_option(), _version_option()])

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.sections:
            _format_sections(self, ctx, formatter, self.sections)
        else:
            super().format_options(ctx, formatter)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["liverseg_argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_under_table(super().invoke, ctx)


class Group(click.Group):
    """A click group whose sub-commands run under the exit-code table above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT_SETTINGS))
        super().__init__(*args, **kwargs)
        self.params.extend([_debug_option(), _version_option()])

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_under_table(super().invoke, ctx)


def out_option(name: str, aliases: Sequence[str] = (), **kwargs: Any) -> Callable[[Any], Any]:
    """``-o/--out``, every command's spelling of where its output goes, into the parameter ``name``;
    ``aliases``: the command's old spellings, which still work and are not shown."""
    return click.option(name, "-o", "--out", cls=Option, aliases=aliases, **kwargs)


def command(**kwargs: Any) -> Callable[[Callable[..., Any]], Command]:
    """``@command(...)``: ``click.command(cls=Command, ...)``."""
    return click.command(cls=Command, **kwargs)


def group(**kwargs: Any) -> Callable[[Callable[..., Any]], Group]:
    """``@group(...)``: ``click.group(cls=Group, ...)``."""
    return click.group(cls=Group, **kwargs)


def raw_argv(prog: str) -> list[str]:
    """The command as typed (also under ``CliRunner``), for reports."""
    ctx = click.get_current_context(silent=True)
    args = ctx.meta.get("liverseg_argv") if ctx is not None else None
    return [prog, *(args if args is not None else sys.argv[1:])]


def device_name(ctx: click.Context | None, param: click.Parameter | None, value: str) -> str:
    """click callback for ``--device`` (:func:`liverseg.core.engine.check_device`'s rule) for the commands that
    take no options object; liverseg-infer's Options checks it instead."""
    from liverseg.core.engine import check_device

    try:
        return check_device(value)
    except LiversegError as e:
        raise click.BadParameter(str(e).removeprefix("--device ")) from None
