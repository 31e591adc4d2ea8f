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

from collections.abc import Iterable


class UserError(Exception):
    """An error the user caused and can fix; its message alone says what and how."""


class ConfigError(UserError, ValueError):
    """A config field, argument or option with a bad value."""


class FoldError(UserError, ValueError):
    """:func:`agile.fold` refused (a layer that does not fold, a link that does not fit the
    model) or a folded network computes something else; the message names the layers and why.
    """


def unknown_value_error(what: str, value: object, valid: Iterable[object]) -> ConfigError:
    """Returns (does not raise) ``ConfigError("Unknown <what> <value!r>. Valid: <valid>.")``.

    ``what`` names the kind of value (``"activation"``, ``"data.source"``);
    ``valid`` lists the accepted values, shown in the given order. Use it as
    ``raise unknown_value_error("pooling", pooling, POOLINGS)``.
    """
    return ConfigError(f"Unknown {what} {value!r}. Valid: {', '.join(map(str, valid))}.")
