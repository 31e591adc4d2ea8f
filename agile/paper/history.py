"""The evaluation rows of one training run (one seed): best row, patience, early stop, resume.

Pure Python, no JAX: a :class:`History` is saved inside every checkpoint (as JSON), so the
rows, the best step and the early-stopping state always agree with the checkpointed model,
and ``metrics.jsonl`` can be rebuilt from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Row = dict[str, Any]
SELECTION_KEYS = ("val_loss", "test_loss")


@dataclasses.dataclass
class History:
    """Evaluation rows of one run, in step order, and the model-selection rule over them.

    Attributes:
      select_on: the row key whose minimum picks the best row: ``"val_loss"`` with a
        validation split, else ``"test_loss"``.
      patience: evaluations without a better ``select_on`` after which the run stops early;
        0 never stops. Only a validation split stops a run (the test split is never used
        to decide anything).
      rows: one dict per evaluation, each with at least ``step`` and ``select_on``.
    """

    select_on: str
    patience: int = 0
    rows: list[Row] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.select_on not in SELECTION_KEYS:
            raise ValueError(
                f"History.select_on must be one of {', '.join(SELECTION_KEYS)}, "
                f"got {self.select_on!r}."
            )

    def record(self, row: Row) -> bool:
        """Appends ``row`` (a later step than the last); returns whether it is the new best."""
        if self.rows and row["step"] <= self.rows[-1]["step"]:
            raise ValueError(
                f"History rows must advance: step {row['step']} after {self.rows[-1]['step']}."
            )
        previous = self.best()
        self.rows.append(row)
        return previous is None or row[self.select_on] < previous[self.select_on]

    def best(self) -> Row | None:
        """The row with the lowest ``select_on`` (the earliest of equal ones), or None."""
        return min(self.rows, key=lambda row: row[self.select_on]) if self.rows else None

    def evaluations_without_improvement(self) -> int:
        """How many evaluations came after the best one."""
        best = self.best()
        return 0 if best is None else sum(row["step"] > best["step"] for row in self.rows)

    def should_stop(self) -> bool:
        """Whether early stopping ends the run: ``patience`` evaluations without improvement."""
        return (
            self.select_on == "val_loss"
            and self.patience > 0
            and self.evaluations_without_improvement() >= self.patience
        )

    def truncated(self, step: int) -> History:
        """A copy keeping only the rows up to ``step`` (what a checkpoint at ``step`` saw)."""
        rows = [row for row in self.rows if row["step"] <= step]
        return dataclasses.replace(self, rows=rows)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> History:
        """Rebuilds a History saved by :meth:`to_json`."""
        return cls(saved["select_on"], saved["patience"], [dict(row) for row in saved["rows"]])
