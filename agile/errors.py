"""One form for the package's "unknown value" errors.

Every lookup by name (activation, granularity, optimizer, data source, ...) that
meets a name it does not know raises the same one-line error::

    ValueError: Unknown granularity 'pixel'. Valid: element, channel, scalar.

so messages read alike and tests can match ``"Unknown <what> '<value>'"``.
"""

from __future__ import annotations

from collections.abc import Iterable


def unknown_value_error(what: str, value: object, valid: Iterable[object]) -> ValueError:
    """Returns (does not raise) ``ValueError("Unknown <what> <value!r>. Valid: <valid>.")``.

    ``what`` names the kind of value (``"activation"``, ``"data.source"``);
    ``valid`` lists the accepted values, shown in the given order. Use it as
    ``raise unknown_value_error("pooling", pooling, POOLINGS)``.
    """
    return ValueError(f"Unknown {what} {value!r}. Valid: {', '.join(map(str, valid))}.")
