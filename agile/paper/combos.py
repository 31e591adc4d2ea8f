"""The paper's Table 1: the 12 (conv activation, dense activation) combinations, defined once."""

from __future__ import annotations

COMBOS: dict[int, tuple[str, str]] = {
    1: ("sigmoid", "relu"),
    2: ("sigmoid", "agile_relu"),
    3: ("sigmoid", "agile_sigmoid"),
    4: ("agile_sigmoid", "relu"),
    5: ("agile_sigmoid", "agile_relu"),
    6: ("agile_sigmoid", "agile_sigmoid"),
    7: ("relu", "relu"),
    8: ("relu", "agile_relu"),
    9: ("relu", "agile_sigmoid"),
    10: ("agile_relu", "relu"),
    11: ("agile_relu", "agile_relu"),
    12: ("agile_relu", "agile_sigmoid"),
}

# Table 1's reported test loss and "iteration count" for each combination.
PAPER_TABLE1: dict[int, tuple[float, int]] = {
    1: (0.18850, 5030),
    2: (0.16094, 5045),
    3: (0.14456, 9908),
    4: (0.16259, 5036),
    5: (0.16684, 4317),
    6: (0.15600, 7808),
    7: (0.18127, 1187),
    8: (0.17529, 1187),
    9: (0.16031, 3400),
    10: (0.17666, 1050),
    11: (0.18261, 809),
    12: (0.15027, 3261),
}


def combo_activations(combo: int) -> tuple[str, str]:
    """(conv activation, dense activation) of Table 1's row ``combo`` (1..12)."""
    if isinstance(combo, bool) or combo not in COMBOS:
        raise ValueError(f"Unknown combination {combo!r}: the paper's Table 1 has rows 1..12.")
    return COMBOS[combo]


def combo_number(conv_activation: str, dense_activation: str) -> int | None:
    """Table 1's row for an activation pair, or None if the pair is not in the table."""
    for combo, pair in COMBOS.items():
        if pair == (conv_activation, dense_activation):
            return combo
    return None
