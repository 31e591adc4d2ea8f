"""What the command-line scripts share: one clear line for a user's mistake, quieter logs.

``run(main)`` replaces ``absl.app.run(main)``: a bad flag or ``--config.<field>`` override
and any :class:`~agile.errors.UserError` raised by ``main`` print one line to stderr and
exit with status 2; Ctrl-C prints one line and exits with 130; every other exception (a bug)
keeps its traceback.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from agile.errors import UserError

USAGE_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # what a shell reports for a process ended by Ctrl-C


def fail(message: str) -> None:
    """Prints ``error: <message>`` as one line to stderr and exits with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE_ERROR_STATUS)


def _override_error(argv: Sequence[str], err: Exception) -> str:
    """One line for a ``--config.<field>=`` override that ml_collections refused."""
    text: object = err
    while isinstance(text, BaseException):  # ml_collections nests a KeyError's message
        text = text.args[0] if text.args else str(text)
    match = re.search(r"'([^'\\]+)'", str(text))
    field = match.group(1) if match else None
    suggestion = re.search(r"Did you mean .*\?", str(text))
    culprit = next((arg for arg in argv[1:] if field and re.match(
        rf"--[\w.]*\b{re.escape(field)}\b", arg)), None)
    where = f" in {culprit.split('=')[0]}" if culprit else ""
    if isinstance(err, (AttributeError, KeyError)) and field:
        hint = f" {suggestion.group(0)}" if suggestion else ""
        return (f"Unknown config field {field!r}{where}.{hint} The fields and their defaults "
                "are in agile/paper/config.py.")
    return f"Bad config override{where}: {err}"


def _config_file_error(name: str, path: str | None, err: Exception) -> str:
    """One line for a config file ml_collections could not load (missing, or failing)."""
    cause = err.__cause__ or err
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"Cannot load --{name}={path}: {lines[-1] if lines else type(cause).__name__}."


def _check_config_files() -> None:
    """ml_collections keeps a config file's load error until the config is first used."""
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        try:
            path = config_flags.get_config_filename(flag)
        except TypeError:  # not a config flag
            continue
        try:
            if flag.value is not None:
                flag.value.get("")  # an unloadable file's config raises on any access
        except OSError as err:
            fail(_config_file_error(name, path, err))


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with one-line errors instead of tracebacks and usage dumps."""
    try:
        rest = flags.FLAGS(list(argv))
    except flags.Error as err:
        fail(str(err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # --config.x overrides
        fail(_override_error(argv, err))
    _check_config_files()
    return rest


def define_config_file(name: str, default: str | None, help_string: str) -> Any:
    """``config_flags.DEFINE_config_file`` with one-line errors.

    With a default, ml_collections loads the file and applies the ``--<name>.x`` overrides
    of ``sys.argv`` while the flag is being defined, before :func:`parse_flags` runs.
    """
    try:
        return config_flags.DEFINE_config_file(name, default, help_string)
    except OSError as err:
        fail(_config_file_error(name, default, err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        fail(_override_error(sys.argv, err))
    return None  # Not reached: fail exits.


class _DropDependencyInfo(std_logging.Filter):
    """Drops orbax's chatter (a dozen INFO lines per checkpoint, warnings about its own
    options); its errors still show. A run sends all of orbax's messages to its workdir's
    ``orbax.log`` (``agile.paper.workdir.dependency_output``)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.ERROR or "/orbax/" not in record.pathname


def quiet_dependency_logs() -> None:
    """Installs the filter on absl's logger (idempotent)."""
    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _DropDependencyInfo) for f in logger.filters):
        logger.addFilter(_DropDependencyInfo())


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with one-line user errors (see the module docstring)."""

    def guarded(argv: list[str]) -> None:
        quiet_dependency_logs()
        try:
            main(argv)
        except UserError as err:
            fail(str(err))
        except KeyboardInterrupt:
            print("Interrupted. Rerun the same command to resume from the last checkpoint.",
                  file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)

    app.run(guarded, flags_parser=parse_flags)
