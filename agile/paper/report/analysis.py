"""What the report computes from the results: tables, paired comparisons, the fold check.

Pure functions of the records of :mod:`agile.paper.report.results` (and of the code's own
defaults: the groups and comparison families of :mod:`agile.paper.study`, the paper's Table
1, the CNN's parameter counts). :func:`analyse_family` computes any family the same way: its
comparisons on their common seeds, Holm's correction over exactly them, their power. Every
statistic comes from :mod:`agile.paper.stats`. A comparison that cannot be made (an arm
without results) is a :class:`PairedResult` that is not ``available`` and says why, so
nothing fails for want of a group.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agile.folding import Link, fold
from agile.paper import stats, study
from agile.paper.combos import COMBOS, PAPER_TABLE1
from agile.paper.data.images import SIDE as MNIST_SIDE
from agile.paper.report.results import Curve, Range, Results, Run
from agile.paper.study import RESOLUTION, Arm, Comparison, Family
from agile.paper.trials import trial_name

IMAGE_DATA = ("mnist", "fashion_mnist")  # 28x28 grey images: a model's size needs no data

ALPHA = 0.05  # Family-wise error rate of the Holm-corrected tests.
CONFIDENCE = stats.CONFIDENCE
METRIC = "best_test_loss"  # Test loss of each seed's model at its best validation loss.
Summary = dict[str, float]  # stats.summarize: n, mean, std, ci_low, ci_high


# ---------------------------------------------------------------------------------------------
# Selecting and summarising runs.


def groups_present(runs: Iterable[Run]) -> list[str]:
    """Groups with at least one row, in ``study.GROUPS`` order (unknown groups after)."""
    found = {row.group for row in runs}
    known = [group.name for group in study.GROUPS if group.name in found]
    return known + sorted(found - set(known))


def seed_values(runs: Iterable[Run], group: str, trial: str,
                field: str = METRIC) -> dict[int, float]:
    """``{seed: value of field}`` for one trial of one group (seeds without a value left out)."""
    return {row.seed: float(getattr(row, field)) for row in runs
            if row.group == group and row.trial == trial and getattr(row, field) is not None}


def wall_times(runs: Iterable[Run]) -> dict[str, dict[str, float]]:
    """Per group: trials, seeds and wall time (each trial's ``wall_time_s`` counted once).

    A trial trains its seeds together, so its wall time is repeated on every seed row.
    """
    runs = list(runs)
    totals: dict[str, dict[str, Any]] = {}
    for row in runs:
        entry = totals.setdefault(row.group, {"trials": {}, "seeds": set()})
        entry["seeds"].add(row.seed)
        entry["trials"].setdefault(row.trial, row.wall_time_s or 0.0)
    return {group: {"trials": len(totals[group]["trials"]), "seeds": len(totals[group]["seeds"]),
                    "seconds": float(sum(totals[group]["trials"].values()))}
            for group in groups_present(runs)}


def combo_trial(combo: int) -> str:
    """The trial name of Table 1's row ``combo`` (``combo_NN``)."""
    return trial_name(*COMBOS[combo])


@dataclasses.dataclass(frozen=True)
class Table1Row:
    """One Table 1 combination: the paper's loss and iterations beside our seed summaries.

    ``loss``, ``accuracy``, ``best_step`` and ``steps`` are ``stats.summarize`` dicts over
    the seeds of group ``table1`` (None when the combination has no rows).
    """

    combo: int
    conv: str
    dense: str
    paper_loss: float
    paper_iterations: int
    loss: Summary | None
    accuracy: Summary | None
    best_step: Summary | None
    steps: Summary | None


def table1_rows(runs: Sequence[Run]) -> list[Table1Row]:
    """One :class:`Table1Row` per Table 1 combination, in Table 1's order."""
    rows = []
    for combo, (conv, dense) in COMBOS.items():
        trial = combo_trial(combo)
        fields = {key: stats.summarize(seed_values(runs, "table1", trial, field).values())
                  for key, field in (("loss", METRIC), ("accuracy", "best_test_accuracy"),
                                     ("best_step", "best_step"), ("steps", "steps"))}
        paper_loss, paper_iterations = PAPER_TABLE1[combo]
        rows.append(Table1Row(combo, conv, dense, paper_loss, paper_iterations, **fields))
    return rows


def ranks(values: Mapping[Any, float]) -> dict[Any, int]:
    """Rank of each key by value, 1 for the lowest (ties keep key order)."""
    order = sorted(values, key=lambda key: values[key])
    return {key: rank for rank, key in enumerate(order, start=1)}


def rank_agreement(table: Sequence[Table1Row], ours: str,
                   paper: str) -> dict[str, float] | None:
    """Spearman's rho (and p) between the paper's column and our means over the rows run.

    ``ours`` names a summary field of :class:`Table1Row` (``"loss"``), ``paper`` the
    paper's (``"paper_loss"``). None with fewer than three rows run or a constant column.
    """
    pairs = [(getattr(row, paper), getattr(row, ours)["mean"]) for row in table
             if getattr(row, ours) is not None]
    if len(pairs) < 3 or len({p for p, _ in pairs}) < 2 or len({o for _, o in pairs}) < 2:
        return None  # Too few, or a constant column: no rank correlation is defined.
    rho, p_value = stats.spearman([p for p, _ in pairs], [o for _, o in pairs])
    return {"rho": rho, "p_value": p_value, "n": len(pairs)}


def curve_band(curves: Iterable[Curve], group: str, trial: str, column: str = "test_loss",
               min_fraction: float = 0.5) -> dict[str, Any]:
    """Mean and sample std over seeds of ``column`` per step, where enough seeds have it.

    Seeds stop at different steps (early stopping), so a step is kept only when at least
    ``min_fraction`` of the trial's seeds have a value there. Returns ``steps``, ``mean``,
    ``std`` (arrays) and ``seeds`` (how many seeds the trial has).
    """
    points: dict[int, list[float]] = {}
    seeds = set()
    for row in curves:
        if row.group == group and row.trial == trial:
            seeds.add(row.seed)
            if getattr(row, column) is not None:
                points.setdefault(row.step, []).append(float(getattr(row, column)))
    need = max(1, math.ceil(min_fraction * len(seeds)))
    steps = sorted(step for step, values in points.items() if len(values) >= need)
    moments = [stats.mean_std_ci(points[step], CONFIDENCE)[:2] for step in steps]
    return {"steps": np.array(steps, np.int64), "mean": np.array([m for m, _ in moments]),
            "std": np.array([s for _, s in moments]), "seeds": len(seeds)}


# ---------------------------------------------------------------------------------------------
# Paired comparisons on the same seeds, a family at a time (the families: study.FAMILIES).


@dataclasses.dataclass(frozen=True)
class PairedResult:
    """The outcome of one :class:`~agile.paper.study.Comparison`: its numbers, or why it
    could not be made.

    Available (``missing`` is None): the mean of the per-seed differences, its t-interval
    (not adjusted), the paired t-test's p-value and, once its family is corrected
    (:func:`compare_family`), Holm's p-value and ``significant`` (Holm p < ``ALPHA``).
    Not available: ``missing`` says which arm has no results; the numbers are None.
    """

    comparison: Comparison
    seeds: int
    missing: str | None = None
    mean_difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    holm_p: float | None = None
    significant: bool | None = None

    @property
    def available(self) -> bool:
        """Whether the comparison was made (at least two seeds in common)."""
        return self.missing is None


def _missing_reason(runs: Sequence[Run], arms: Sequence[Arm]) -> str:
    """Why a comparison has fewer than two common seeds: which group or trial has no rows."""
    present = set(groups_present(runs))
    reasons = []
    for arm in arms:
        if arm.group not in present:
            reasons.append(f"group {arm.group} was not run")
        elif not seed_values(runs, arm.group, arm.trial):
            reasons.append(f"trial {arm.trial} of group {arm.group} has no results")
    return "; ".join(dict.fromkeys(reasons)) or "fewer than 2 seeds in common"


def paired_values(runs: Sequence[Run], comparison: Comparison, field: str = METRIC,
                  scale: float = 1.0, seeds: range | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``field`` times ``scale`` of the first and the second arm on the seeds both have (of
    ``seeds`` only, if given), in seed order: the pairs a comparison is made of."""
    first = seed_values(runs, comparison.first.group, comparison.first.trial, field)
    second = seed_values(runs, comparison.second.group, comparison.second.trial, field)
    common = sorted(set(first) & set(second) & (set(seeds) if seeds is not None else set(first)))
    return (np.array([first[s] * scale for s in common], np.float64),
            np.array([second[s] * scale for s in common], np.float64))


def compare(runs: Sequence[Run], comparison: Comparison, field: str = METRIC,
            scale: float = 1.0, seeds: range | None = None) -> PairedResult:
    """The paired comparison (``stats.paired_comparison``) on the seeds both arms have.

    Not available (``missing`` says why) with fewer than two seeds in common; Holm's
    correction is :func:`compare_family`'s.
    """
    first, second = paired_values(runs, comparison, field, scale, seeds)
    if len(first) < 2:
        return PairedResult(comparison, len(first),
                            _missing_reason(runs, (comparison.first, comparison.second)))
    return PairedResult(comparison, **stats.paired_comparison(first.tolist(), second.tolist(),
                                                              CONFIDENCE))


def compare_family(runs: Sequence[Run], comparisons: Sequence[Comparison],
                   **options: Any) -> list[PairedResult]:
    """Each comparison (:func:`compare` with ``options``), with Holm's correction over
    those that could be made: one Holm family.

    Every available result gets ``holm_p`` and ``significant`` (``holm_p < ALPHA``).
    """
    results = [compare(runs, comparison, **options) for comparison in comparisons]
    adjusted = iter(stats.holm([r.p_value for r in results if r.available]))
    return [dataclasses.replace(r, holm_p=(p := next(adjusted)), significant=p < ALPHA)
            if r.available else r for r in results]


def paper_agreement(result: PairedResult) -> str | None:
    """``"agrees"``, ``"contradicts"`` or ``"not confirmed"``: our result against the paper's
    direction (None where the paper has no such difference or we have no result)."""
    paper = result.comparison.paper_difference
    if paper is None or not result.available:
        return None
    if not result.significant:
        return "not confirmed"
    return "agrees" if (result.mean_difference < 0) == (paper < 0) else "contradicts"


def beside_agreement(result: PairedResult, other: PairedResult | None) -> str | None:
    """``"agrees"`` or ``"differs"``: this verdict against the same comparison's in the family
    it is shown beside (the same verdict: both not significant, or both significant in the
    same direction); None where either has no result."""
    if other is None or not (result.available and other.available):
        return None
    same = (not result.significant and not other.significant) or (
        result.significant and other.significant
        and (result.mean_difference < 0) == (other.mean_difference < 0))
    return "agrees" if same else "differs"


def family_counts(results: Sequence[PairedResult]) -> dict[str, list[PairedResult]]:
    """The available results split into significantly lower, significantly higher, neither."""
    available = [r for r in results if r.available]
    return {"lower": [r for r in available if r.significant and r.mean_difference < 0],
            "higher": [r for r in available if r.significant and r.mean_difference > 0],
            "neither": [r for r in available if not r.significant],
            "available": available}


# ---------------------------------------------------------------------------------------------
# Power: what each family's seeds can resolve.


@dataclasses.dataclass(frozen=True)
class PowerRow:
    """What a paired comparison's seeds can resolve, from the seed-to-seed spread seen.

    ``correlation``: Pearson's r of the two arms over the common seeds (pairing removes
    variance where r > 0); ``std``: the per-seed differences' sample std; ``mde``: the
    smallest true difference the paired t-test finds with 80% power at these seeds (α =
    0.05), ``mde_holm`` at Holm's strictest level (α / family size); ``needed``: seeds to
    find the observed mean difference with 80% power (α = 0.05; ``needed_holm`` at α / m);
    ``for_resolution``: seeds for an mde_holm of the family's resolution (:data:`RESOLUTION`
    by default); ``settled``: the difference is significant after Holm, or mde_holm <= the
    resolution (no difference of that size is there to find); ``missing``: why there are
    no numbers.
    """

    comparison: Comparison
    seeds: int
    missing: str | None = None
    correlation: float | None = None
    std: float | None = None
    mde: float | None = None
    mde_holm: float | None = None
    needed: int | None = None
    needed_holm: int | None = None
    for_resolution: int | None = None
    settled: bool | None = None


def power_row(runs: Sequence[Run], result: PairedResult, family_size: int,
              resolution: float = RESOLUTION, **options: Any) -> PowerRow:
    """The :class:`PowerRow` of one available (or not) paired result of a family
    (``options``: :func:`paired_values`'s, as the result was computed with)."""
    comparison = result.comparison
    if not result.available or result.seeds < 3:
        return PowerRow(comparison, result.seeds, result.missing or "fewer than 3 seeds")
    x, y = paired_values(runs, comparison, **options)
    std = float(np.std(x - y, ddof=1))
    if std == 0:
        return PowerRow(comparison, len(x), "the differences do not vary")
    strict = ALPHA / family_size
    mde_holm = stats.min_detectable_effect(std, len(x), strict)
    return PowerRow(
        comparison, len(x), None, stats.pair_correlation(x, y), std,
        stats.min_detectable_effect(std, len(x)), mde_holm,
        stats.seeds_needed(result.mean_difference, std),
        stats.seeds_needed(result.mean_difference, std, strict),
        stats.seeds_needed(resolution, std, strict),
        bool(result.significant) or mde_holm <= resolution)


def power_rows(runs: Sequence[Run], results: Sequence[PairedResult],
               resolution: float = RESOLUTION, **options: Any) -> list[PowerRow]:
    """:func:`power_row` of each result of one Holm family."""
    return [power_row(runs, result, len(results), resolution, **options) for result in results]


@dataclasses.dataclass(frozen=True)
class FamilyResult:
    """One family of :data:`agile.paper.study.FAMILIES`, its paired results and their power."""

    family: Family
    results: list[PairedResult]
    power: list[PowerRow]


def analyse_family(runs: Sequence[Run], family: Family) -> FamilyResult:
    """A family's comparisons (one Holm family) on its seeds, metric and unit, with power."""
    options = {"field": family.metric, "scale": family.unit.scale, "seeds": family.seeds}
    results = compare_family(runs, family.comparisons, **options)
    return FamilyResult(family, results, power_rows(runs, results, family.resolution, **options))


# ---------------------------------------------------------------------------------------------
# Parameters: counts, combo 12's learned a and b, and the fold of its dense layer.


def parameter_counts(group: str, conv: str, dense: str) -> tuple[int, int] | None:
    """(all parameters, the activations' own) of the network ``group`` trains for (conv,
    dense): agile a and b, or a baseline's PReLU slopes, Swish betas, APL hinges, xIELU's
    alphas (the parameters of modules named ``*act*``).

    Counted with ``agile.paper.models.paper_cnn.count_params`` on the model's abstract
    parameters; None for a model on text (its size depends on the corpus' vocabulary, which
    the report does not read) or one that cannot be built.
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from agile.paper.models.paper_cnn import count_params
    from agile.paper.tasks import create_model

    config = study.GROUPS_BY_NAME[group].trial_config(conv, dense)
    if config.data.name not in IMAGE_DATA:
        return None
    images = jnp.zeros((1, MNIST_SIDE, MNIST_SIDE, 1), jnp.float32)
    try:
        shapes = jax.eval_shape(functools.partial(create_model(config).init, train=False),
                                jax.random.key(0), images)["params"]
    except ValueError:
        return None
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    flat = traverse_util.flatten_dict(params)
    learned = [leaf for path, leaf in flat.items() if any("act" in part for part in path[:-1])]
    return count_params(params), count_params(learned)


def combo12_ranges(ranges: Iterable[Range]) -> dict[str, dict[int, dict[str, Range]]]:
    """``{layer: {seed: {"a": row, "b": row}}}`` of Table 1's combo 12 (final a and b)."""
    out: dict[str, dict[int, dict[str, Range]]] = {}
    for row in ranges:
        if row.group == "table1" and row.trial == combo_trial(12):
            out.setdefault(row.layer, {}).setdefault(row.seed, {})[row.param] = row
    return {layer: out[layer] for layer in sorted(out)}


def smallest_conv_a(ranges: Iterable[Range], group: str) -> float | None:
    """The smallest final a in any conv layer of ``group``'s runs (None without rows)."""
    values = [row.min for row in ranges if row.group == group and row.param == "a"
              and row.layer.startswith("conv")]
    return min(values) if values else None


def params_tree(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A linen params dict from the npz's flattened ``"layer/param"`` keys."""
    from flax import traverse_util

    return traverse_util.unflatten_dict({tuple(key.split("/")): value
                                         for key, value in flat.items()})


def combo12_layers(flat: Mapping[str, np.ndarray]) -> dict[str, str]:
    """``{agile layer: its activation}`` in combo 12's parameters (conv layers: conv's)."""
    conv, dense = COMBOS[12]
    layers = sorted({key.rsplit("/", 1)[0] for key in flat if key.endswith("/a")})
    return {layer: conv if layer.startswith("conv") else dense for layer in layers}


@dataclasses.dataclass(frozen=True)
class FoldCheck:
    """Combo 12's trained network against its folded plain twin, on fixed inputs.

    ``max_abs_difference``: largest absolute logit difference (agile against folded);
    ``max_abs_logit``: largest absolute logit; ``dropped_difference``: the change when a
    and b are dropped without folding; ``plain``: the twin's dense activation;
    ``dense_agile`` / ``conv_agile``: agile parameter counts of the dense / conv layers.
    """

    inputs: int
    seed: int
    plain: str
    max_abs_difference: float
    max_abs_logit: float
    dropped_difference: float
    dense_agile: int
    conv_agile: int


def fold_check(flat: Mapping[str, np.ndarray], inputs: int = 64, seed: int = 0) -> FoldCheck:
    """Combo 12's network against its folded plain twin (``agile.fold``).

    Applies both to ``inputs`` fixed images (uniform in [0, 1), numpy seed ``seed``).
    """
    import jax

    from agile.activations import plain_name
    from agile.paper.config import get_config
    from agile.paper.tasks import create_model

    params = params_tree(flat)
    agile_config, plain_config = get_config(12), get_config(12)
    plain_config.model.dense_activation = plain_name(agile_config.model.dense_activation)
    images = np.random.default_rng(seed).uniform(
        0, 1, (inputs, MNIST_SIDE, MNIST_SIDE, 1)).astype(np.float32)
    agile_logits = np.asarray(jax.jit(create_model(agile_config).apply)({"params": params},
                                                                         images))
    plain = jax.jit(create_model(plain_config).apply)
    # Only the dense layer folds; the twin keeps the agile conv layers (a partial fold).
    folded = fold(params, [Link("hidden", "hidden_act", "output")], strict=False).params
    dropped = {name: layer for name, layer in params.items() if name != "hidden_act"}
    folded_logits = np.asarray(plain({"params": folded}, images))
    dropped_logits = np.asarray(plain({"params": dropped}, images))
    agile_counts = {layer: int(sum(np.size(flat[f"{layer}/{p}"]) for p in ("a", "b")))
                    for layer in combo12_layers(flat)}
    return FoldCheck(
        inputs=inputs, seed=seed, plain=plain_config.model.dense_activation,
        max_abs_difference=float(np.abs(agile_logits - folded_logits).max()),
        max_abs_logit=float(np.abs(agile_logits).max()),
        dropped_difference=float(np.abs(agile_logits - dropped_logits).max()),
        dense_agile=agile_counts.get("hidden_act", 0),
        conv_agile=sum(n for layer, n in agile_counts.items() if layer != "hidden_act"))


# ---------------------------------------------------------------------------------------------
# Everything at once.


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Everything the report computes from the results before writing: Table 1's rows, each
    family's results in the order of ``families`` (:data:`agile.paper.study.FAMILIES`), the
    fold check."""

    table: list[Table1Row]
    families: tuple[FamilyResult, ...]
    fold: FoldCheck | None

    def family(self, name: str) -> FamilyResult:
        """The results of the family called ``name``."""
        return {result.family.name: result for result in self.families}[name]


def analyse(results: Results, families: Sequence[Family] = study.FAMILIES) -> Analysis:
    """Table 1's rows, each family of paired comparisons with its power, the fold check."""
    params = results.params or {}
    fold = fold_check(params) if "hidden_act/a" in params else None
    return Analysis(table1_rows(results.runs),
                    tuple(analyse_family(results.runs, family) for family in families), fold)
