"""``--overrides`` of ``scripts/study.py``: ``name=value`` items, each value JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agile.errors import ConfigError


def split_overrides(text: str) -> list[str]:
    """The ``name=value`` items of ``text``, split at its commas but not at those inside
    brackets, braces or a double-quoted string (``a=[8,4],b=2`` gives two items)."""
    items, depth, quoted, escaped, start = [], 0, False, False, 0
    for index, char in enumerate(text):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parse_overrides(values: Sequence[str]) -> dict[str, Any]:
    """``{field: value}`` from ``--overrides`` values (each one or more ``name=value`` items,
    split by :func:`split_overrides`); every value is JSON, and ``None`` or nothing is None.

    :class:`~agile.errors.ConfigError` naming the item for one without ``=``, a value that
    is not JSON, or a field set twice.
    """
    overrides: dict[str, Any] = {}
    for item in (item for value in values for item in split_overrides(value)):
        name, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise ConfigError(f"--overrides takes name=value items, got {item!r}.")
        if name in overrides:
            raise ConfigError(f"--overrides sets {name} twice.")
        try:
            overrides[name] = None if text in ("", "None") else json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"--overrides {item}: the value {text!r} is not JSON ({err.msg}); write numbers "
                "and true/false as they are, lists in brackets ([8,4]) and strings in double "
                "quotes (quote the flag for the shell: '--overrides=optimizer=\"sgd\"').") from None
    return overrides
