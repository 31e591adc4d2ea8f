"""What the command-line scripts share: one clear line for a user's mistake, quieter logs.

``run(main)`` replaces ``absl.app.run(main)``: a bad flag or ``--config.<field>`` override
and any :class:`~agile.errors.UserError` raised by ``main`` print one line to stderr and
exit with status 2; Ctrl-C prints one line and exits with 130; every other exception (a bug)
keeps its traceback. Every script also gets JAX's persistent compilation cache, on by default
(``--compilation_cache_dir``, ``--nocompilation_cache``): a second run of a config starts in
about half the time.
"""

from __future__ import annotations

import errno
import logging as std_logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from agile.errors import UserError

_COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache", True,
    "Keep compiled XLA programs in JAX's persistent compilation cache, so a second run of the "
    "same config skips most of its compilation (--nocompilation_cache: off).")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "The cache's folder (default: $JAX_COMPILATION_CACHE_DIR if set, else "
    "$XDG_CACHE_HOME/agile/jax, i.e. ~/.cache/agile/jax).")

USAGE_ERROR_STATUS = 2
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
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


def _flag_error(err: flags.Error) -> str:
    """One line for a flag absl refused; a config file that raised while loading
    (``--config=configs/default.py:13``) is named with its exception's last line, not the
    traceback ml_collections puts in the message."""
    text = str(err)
    if "Traceback (most recent call last)" not in text:
        return text
    flag = re.match(r"flag (--\S+?): ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = re.sub(r"^ValueError: ", "", lines[-1]).rstrip(".")
    return (f"Cannot load {flag.group(1) if flag else 'a config file'}: {cause} (the text after "
            "':' is passed to the config file's get_config).")


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
        fail(_flag_error(err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # --config.x overrides
        fail(_override_error(argv, err))
    _check_config_files()
    return rest


def config_fields_help(*sources: Callable[..., Any]) -> str:
    """Every config field with its default and what its comment says, as ``--help`` text:
    ``--config.<field>=<value>`` sets any of them. ``sources``: ``get_config`` and the
    functions that add a model's or data source's fields (``config.FIELD_SOURCES``), each
    after a line of its docstring's first line."""
    import inspect

    lines, notes = [], []
    source_lines = []
    for index, source in enumerate(sources):
        if index:
            source_lines.append(f"#: {inspect.getdoc(source).splitlines()[0]}")
        source_lines += inspect.getsource(source).splitlines()
    for line in source_lines:
        if line.startswith("#: "):
            lines.append(f"\n  Only where {line[3:]}")
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            notes.append(stripped.lstrip("# "))
            continue
        match = re.match(r"config\.([\w.]+) = (.*?)(?:\s+#\s*(.*))?$", stripped)
        if not match or match.group(2).startswith("ml_collections.ConfigDict()"):
            notes = []
            continue
        field, default, comment = match.groups()
        default = re.sub(r"ml_collections\.FieldReference\((\w+), field_type=\w+\)", r"\1",
                         default)
        text = " ".join([*notes, comment or ""]).strip()
        lines.append(f"  --config.{field}={default}")
        lines += textwrap.wrap(text, 96, initial_indent="      ", subsequent_indent="      ")
        notes = []
    return ("\nConfig fields (set any with --config.<field>=<value>; defined in "
            "agile/paper/config.py):\n" + "\n".join(lines) + "\n")


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


def compilation_cache_dir() -> Path | None:
    """The persistent compilation cache's folder the flags ask for, or None (off)."""
    if not _COMPILATION_CACHE.value:
        return None
    if _COMPILATION_CACHE_DIR.value:
        return Path(_COMPILATION_CACHE_DIR.value).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agile" / "jax"


def use_compilation_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache in :func:`compilation_cache_dir` (every
    compiled program, however quick to compile); returns the folder (None: left off)."""
    import jax

    folder = compilation_cache_dir()
    if folder is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def user_error_message(err: BaseException) -> str | None:
    """The one line a user error is reported with (a :class:`UserError`, or a full or
    read-only disk outside a run's own handling); None for anything else (a bug)."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError) and (err.errno in _DISK_ERRNOS or (
            err.errno == errno.EPERM and err.filename)):  # EPERM on a file: an immutable one
        return f"Cannot write {err.filename or 'a file'}: [Errno {err.errno}] {err.strerror}."
    return None


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with one-line user errors (see the module docstring)."""

    def guarded(argv: list[str]) -> None:
        quiet_dependency_logs()
        use_compilation_cache()
        try:
            main(argv)
        except (UserError, OSError) as err:
            message = user_error_message(err)
            if message is None:
                raise
            fail(message)
        except KeyboardInterrupt:
            print("Interrupted. Rerun the same command to resume from the last checkpoint.",
                  file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)

    app.run(guarded, flags_parser=parse_flags)
