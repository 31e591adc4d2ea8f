"""The types of the study's comparison families: an arm, a paired comparison, a unit, a family.

Data of these types (which arm against which, in which Holm family) are declared beside the
groups in :mod:`agile.paper.study`, which re-exports these names; the report
(:mod:`agile.paper.report`) analyses and renders them.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Arm:
    """One side of a comparison: a trial of a group, and the name the report gives it."""

    group: str
    trial: str
    label: str


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``first - second`` in its family's loss on the seeds both arms have (negative: first
    is lower).

    ``paper_difference`` is the same difference in the paper's Table 1, where it has both.
    ``theme`` and ``clause`` place the comparison in its family's findings: the comparisons
    of one theme make one sentence, ``"<theme><family.theme_end><clause>: <outcome>; ..."``
    (an empty ``clause`` is the comparison's :attr:`name`).
    """

    first: Arm
    second: Arm
    paper_difference: float | None = None
    theme: str = ""
    clause: str = ""

    @property
    def name(self) -> str:
        """``"first − second"`` in the arms' labels."""
        return f"{self.first.label} − {self.second.label}"


@dataclasses.dataclass(frozen=True)
class Unit:
    """How a family reports its loss: ``scale`` times the loss in nats, called ``name`` in the
    report's headers ("" for nats, the study's default, which the headers leave unsaid)."""

    name: str = ""
    scale: float = 1.0


NATS = Unit()
BITS = Unit("bits", 1 / math.log(2))  # e.g. a language model's loss in bits per character
RESOLUTION = 0.006  # the best-test-loss difference the study sets out to resolve (issue #21)
IN_SECTION, POWER_SECTION = "section", "power"  # where a family's power table is shown


@dataclasses.dataclass(frozen=True)
class Family:
    """One question of the study: paired comparisons, one Holm family, and its report section.

    The numbers: each of ``comparisons`` pairs its arms on the seeds both have (of ``seeds``
    only, if given) in ``metric`` times ``unit.scale``; Holm's correction runs over exactly
    these comparisons (one in two families has a Holm p in each). ``power`` says where the
    report shows what the seeds resolve (:data:`IN_SECTION`, :data:`POWER_SECTION` or None),
    against a difference of ``resolution``. ``beside`` names a family with comparisons of the
    same names (e.g. Table 1 on another data set beside MNIST's): the report then says, per
    comparison, whether the two verdicts agree or differ.

    The words: the family's section is headed ``title`` (``contents`` in the report's list of
    sections); under it ``question``, the tables of ``groups``, under "Comparisons" ``note``,
    the comparisons, the figure ``figure`` (a key of ``report.figures.FIGURES``), where the
    ``curve`` (``(group, label, x)`` per point, e.g. the a/b rate) is lowest for each first
    arm's trial, and, if ``findings_in_section``, its findings. ``{m}`` (the family's size),
    ``{confidence}`` and ``{alpha}`` in the texts are filled in. Findings are one sentence per
    theme of the comparisons (``findings="themes"``) or Table 1's counts, ranks and one verdict
    per comparison (``"table1"``); the conclusion shows them under ``conclusion_title`` after
    ``conclusion_lead``, among the first if ``conclusion_first`` (the paper's own questions).
    Empty titles are ``title``.
    """

    name: str
    title: str
    comparisons: tuple[Comparison, ...]
    question: str = ""
    groups: tuple[str, ...] = ()
    note: str = ""
    contents: str = ""
    figure: str | None = None
    figure_title: str = ""
    power: str | None = IN_SECTION
    power_title: str = ""
    findings: str = "themes"
    findings_in_section: bool = True
    theme_end: str = ": "
    conclusion_title: str = ""
    conclusion_lead: str = ""
    conclusion_first: bool = False
    seeds: range | None = None
    metric: str = "best_test_loss"
    unit: Unit = NATS
    resolution: float = RESOLUTION
    beside: str | None = None
    curve: tuple[tuple[str, str, float], ...] = ()  # (group, label, x): say where it is lowest

    def __post_init__(self):
        for field in ("figure_title", "power_title", "conclusion_title"):
            if not getattr(self, field):
                object.__setattr__(self, field, self.title)
        if not self.contents:
            object.__setattr__(self, "contents", self.title[:1].lower() + self.title[1:])

    def arm_groups(self) -> list[str]:
        """The groups of the comparisons' arms, first seen first."""
        return list(dict.fromkeys(arm.group for c in self.comparisons
                                  for arm in (c.first, c.second)))
