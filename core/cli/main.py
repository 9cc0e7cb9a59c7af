"""`main`: parse, run one command, and turn every way it can end into one line and an exit status."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import errors
from ..errors import CoreError
from .console import one_line, prog
from .parser import build_parser
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError

__all__ = ["main"]

FIX_FIRST = (errors.ConfigurationError, errors.MissingDependencyError, errors.StoreError, errors.EndpointError)
"""Errors the user must fix before anything can work (setting, package, database, embeddings endpoint): exit 2."""


def _stop_on_signals() -> Any:
    """SIGTERM and SIGHUP stop the command like Ctrl-C (cleanups run, the embedded server is let go of)."""
    try:
        from ..embedded.server import stop_on_signals
    except ImportError:  # an embedded module without it: the default handlers end the process
        return contextlib.nullcontext()
    return stop_on_signals()


def _error(name: str, exc: BaseException) -> None:
    print(f"{name}: error: {one_line(str(exc) or type(exc).__name__)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some sections failed, 2 fix this first)."""
    name = prog()
    try:
        args = build_parser(name).parse_args(list(argv) if argv is not None else None)
        with _stop_on_signals():
            return int(importlib.import_module(f"{__package__}.{args.run}").run(args))
    except CliError as exc:
        _error(name, exc)
        return exc.exit_code
    except FIX_FIRST as exc:
        _error(name, exc)
        return EXIT_USAGE
    except CoreError as exc:  # e.g. the search query could not be embedded
        _error(name, exc)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # Ctrl-C; SIGTERM / SIGHUP (core.embedded.server.Terminated)
        print(f"{name}: interrupted (sections stored so far stay stored; re-run to continue)", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_INTERRUPTED))
    except BrokenPipeError:  # `... | head`
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter from complaining at exit
        return EXIT_OK
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except Exception as exc:  # a bug: one line, the traceback on demand
        if os.environ.get("CORE_DEBUG"):
            raise
        print(
            f"{name}: error: unexpected {type(exc).__name__}: {one_line(str(exc))} (set CORE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
