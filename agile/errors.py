"""One form for the package's "unknown value" errors.

Every lookup by name (activation, granularity, optimizer, data source, ...) that
meets a name it does not know raises the same one-line error::

    ValueError: Unknown granularity 'pixel'. Valid: element, channel, scalar.

so messages read alike and tests can match ``"Unknown <what> '<value>'"``.

Errors a user can cause and fix (a bad config value, a missing data file, a workdir in
use) derive from :class:`UserError`; the command-line scripts print those as one line
and exit non-zero, and keep Python's traceback for everything else (bugs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator


class UserError(Exception):
    """An error the user caused and can fix; its message alone says what and how."""


class ArgumentError(UserError, ValueError):
    """An argument of a library call with a bad value (an unknown activation name,
    granularity or figure format)."""


class ConfigError(ArgumentError):
    """A field of an experiment's config (or a command-line option) with a bad value; the
    experiments (``agile.paper``) raise it, and turn the library's :class:`ArgumentError`
    for a config's value into it (:func:`as_config_error`)."""


class FoldError(UserError, ValueError):
    """:func:`agile.fold` refused (a layer that does not fold, a link that does not fit the
    model) or a folded network computes something else; the message names the layers and why.
    """


def unknown_value_error(what: str, value: object, valid: Iterable[object],
                        error: type[ArgumentError] = ConfigError) -> ArgumentError:
    """Returns (does not raise) ``error("Unknown <what> <value!r>. Valid: <valid>.")``.

    ``what`` names the kind of value (``"activation"``, ``"data.source"``);
    ``valid`` lists the accepted values, shown in the given order. Use it as
    ``raise unknown_value_error("pooling", pooling, POOLINGS)``; the library passes
    ``error=ArgumentError`` (its mistakes are not a config's).
    """
    return error(f"Unknown {what} {value!r}. Valid: {', '.join(map(str, valid))}.")


@contextlib.contextmanager
def as_config_error() -> Iterator[None]:
    """Re-raises a library :class:`ArgumentError` met while checking a config as the
    :class:`ConfigError` it is there (same message)."""
    try:
        yield
    except ConfigError:
        raise
    except ArgumentError as err:
        raise ConfigError(str(err)) from None
