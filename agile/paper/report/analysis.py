"""What the report computes from the results: tables, paired comparisons, the fold check.

Pure functions of the records of :mod:`agile.paper.report.results` (and of the code's own
defaults: the groups of :mod:`agile.paper.study`, the paper's Table 1, the CNN's parameter
counts). Every statistic comes from :mod:`agile.paper.stats`. A comparison that cannot be
made (an arm without results) is a :class:`PairedResult` that is not ``available`` and says
why, so nothing fails for want of a group.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agile.folding import Link, fold
from agile.paper import stats, study
from agile.paper.combos import COMBOS, PAPER_TABLE1
from agile.paper.config import MNIST_SIDE
from agile.paper.report.results import Curve, Range, Results, Run
from agile.paper.trials import trial_name

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
# Paired comparisons on the same seeds.


@dataclasses.dataclass(frozen=True)
class Arm:
    """One side of a comparison: a trial of a group, and the name the report gives it."""

    group: str
    trial: str
    label: str


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``first - second`` in best test loss on the seeds both have (negative: first is lower).

    ``paper_difference`` is the same difference in the paper's Table 1, where it has both.
    """

    first: Arm
    second: Arm
    paper_difference: float | None = None

    @property
    def name(self) -> str:
        """``"first − second"`` in the arms' labels."""
        return f"{self.first.label} − {self.second.label}"


@dataclasses.dataclass(frozen=True)
class PairedResult:
    """The outcome of one :class:`Comparison`: its numbers, or why it could not be made.

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


def combo_arm(combo: int, group: str = "table1", setting: str = "") -> Arm:
    """Table 1's row ``combo`` as trained in ``group`` (``setting`` qualifies its label)."""
    return Arm(group, combo_trial(combo), f"combo {combo}{f' ({setting})' if setting else ''}")


def pair_arm(group: str, conv: str, dense: str, label: str) -> Arm:
    """The trial of ``group`` that trains the pair (conv, dense)."""
    return Arm(group, study.GROUPS_BY_NAME[group].trial_name(conv, dense), label)


def table1_comparisons() -> list[Comparison]:
    """``study.PAIRED_COMPARISONS``: each agile variant against its plain counterpart."""
    return [Comparison(combo_arm(agile), combo_arm(plain),
                       PAPER_TABLE1[agile][0] - PAPER_TABLE1[plain][0])
            for agile, plain in study.PAIRED_COMPARISONS]


def ablation_comparisons() -> list[Comparison]:
    """The natural comparisons of the groups the paper did not run (one Holm family)."""
    out = []
    for combo in (11, 12):
        for granularity, setting in (("channel", "per channel"), ("scalar", "one per layer")):
            out.append(Comparison(combo_arm(combo, f"granularity_{granularity}", setting),
                                  combo_arm(combo, setting="per element")))
    for name in ("tanh", "gelu"):
        out.append(Comparison(pair_arm("tanh_gelu", f"agile_{name}", f"agile_{name}",
                                       f"agile {name} / agile {name}"),
                              pair_arm("tanh_gelu", name, name, f"{name} / {name}")))
    (_, plain), (_, agile) = study.GROUPS_BY_NAME["dense_only"].pairs
    out.append(Comparison(pair_arm("dense_only", "relu", agile, f"dense-only {agile}"),
                          pair_arm("dense_only", "relu", plain, f"dense-only {plain}")))
    for group, setting in (("table1", "Adam"), ("sgd", "SGD with momentum"),
                           ("full_data", "all training images")):
        out.append(Comparison(combo_arm(12, group, setting), combo_arm(7, group, setting),
                              PAPER_TABLE1[12][0] - PAPER_TABLE1[7][0] if group == "table1"
                              else None))
    conv, dense = study.GROUPS_BY_NAME["combined"].pairs[0]
    combined = pair_arm("combined", conv, dense, f"{conv} / {dense}")
    out += [Comparison(combined, combo_arm(12)), Comparison(combined, combo_arm(6))]
    return out


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


def compare(runs: Sequence[Run], comparison: Comparison, field: str = METRIC) -> PairedResult:
    """The paired comparison (``stats.paired_comparison``) on the seeds both arms have.

    Not available (``missing`` says why) with fewer than two seeds in common; Holm's
    correction is :func:`compare_family`'s.
    """
    first = seed_values(runs, comparison.first.group, comparison.first.trial, field)
    second = seed_values(runs, comparison.second.group, comparison.second.trial, field)
    seeds = sorted(set(first) & set(second))
    if len(seeds) < 2:
        return PairedResult(comparison, len(seeds),
                            _missing_reason(runs, (comparison.first, comparison.second)))
    result = stats.paired_comparison([first[s] for s in seeds], [second[s] for s in seeds],
                                     CONFIDENCE)
    return PairedResult(comparison, **result)


def compare_family(runs: Sequence[Run], comparisons: Sequence[Comparison]) -> list[PairedResult]:
    """Each comparison, with Holm's correction over those that could be made.

    Every available result gets ``holm_p`` and ``significant`` (``holm_p < ALPHA``).
    """
    results = [compare(runs, comparison) for comparison in comparisons]
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


def family_counts(results: Sequence[PairedResult]) -> dict[str, list[PairedResult]]:
    """The available results split into significantly lower, significantly higher, neither."""
    available = [r for r in results if r.available]
    return {"lower": [r for r in available if r.significant and r.mean_difference < 0],
            "higher": [r for r in available if r.significant and r.mean_difference > 0],
            "neither": [r for r in available if not r.significant],
            "available": available}


# ---------------------------------------------------------------------------------------------
# The questions the paper leaves open: the a/b learning rate, the field's baselines, power.

LR_GROUPS = (("agile_lr_0.1x", "a, b at 0.1x"), ("table1", "a, b at 1x"),
             ("agile_lr_10x", "a, b at 10x"))
BASELINE_TRIALS = (("baselines", "prelu", "PReLU per channel"),
                   ("baselines", "swish_beta", "Swish-β per channel"),
                   ("baselines", "apl2", "APL (2 hinges) per channel"),
                   ("baselines", "agile_relu_channel", "agile ReLU per channel"),
                   ("capacity", "combo_07_dense640", "ReLU, dense 640 (combo 12's size)"))
RESOLUTION = 0.006  # the best-test-loss difference the study sets out to resolve (issue #21)


def lr_comparisons() -> list[Comparison]:
    """The ReLU family's verdicts at each a/b learning rate (agile combos 10, 11, 12 against
    plain combo 7, Table 1's), and each rate against Table 1's 1x (one Holm family)."""
    out = []
    for group, setting in LR_GROUPS:
        for combo in (10, 11, 12):
            out.append(Comparison(combo_arm(combo, group, setting), combo_arm(7)))
    for group, setting in (LR_GROUPS[0], LR_GROUPS[2]):
        for combo in (10, 11, 12):
            out.append(Comparison(combo_arm(combo, group, setting),
                                  combo_arm(combo, setting=LR_GROUPS[1][1])))
    return out


def baseline_comparisons() -> list[Comparison]:
    """Each baseline (and the plain network of combo 12's size) against plain ReLU (combo 7)
    and against combo 12, both Table 1's (one Holm family)."""
    return [Comparison(Arm(group, trial, label), combo_arm(plain))
            for group, trial, label in BASELINE_TRIALS for plain in (7, 12)]


@dataclasses.dataclass(frozen=True)
class PowerRow:
    """What a paired comparison's seeds can resolve, from the seed-to-seed spread seen.

    ``correlation``: Pearson's r of the two arms over the common seeds (pairing removes
    variance where r > 0); ``std``: the per-seed differences' sample std; ``mde``: the
    smallest true difference the paired t-test finds with 80% power at these seeds (α =
    0.05), ``mde_holm`` at Holm's strictest level (α / family size); ``needed``: seeds to
    find the observed mean difference with 80% power (α = 0.05; ``needed_holm`` at α / m);
    ``for_resolution``: seeds for an mde_holm of :data:`RESOLUTION`; ``settled``: the
    difference is significant after Holm, or mde_holm <= RESOLUTION (no difference of that
    size is there to find); ``missing``: why there are no numbers.
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


def power_row(runs: Sequence[Run], result: PairedResult, family_size: int) -> PowerRow:
    """The :class:`PowerRow` of one available (or not) paired result of a family."""
    comparison = result.comparison
    if not result.available or result.seeds < 3:
        return PowerRow(comparison, result.seeds, result.missing or "fewer than 3 seeds")
    first = seed_values(runs, comparison.first.group, comparison.first.trial)
    second = seed_values(runs, comparison.second.group, comparison.second.trial)
    seeds = sorted(set(first) & set(second))
    x, y = np.array([first[s] for s in seeds]), np.array([second[s] for s in seeds])
    std = float(np.std(x - y, ddof=1))
    if std == 0:
        return PowerRow(comparison, len(seeds), "the differences do not vary")
    strict = ALPHA / family_size
    mde_holm = stats.min_detectable_effect(std, len(seeds), strict)
    return PowerRow(
        comparison, len(seeds), None, stats.pair_correlation(x, y), std,
        stats.min_detectable_effect(std, len(seeds)), mde_holm,
        stats.seeds_needed(result.mean_difference, std),
        stats.seeds_needed(result.mean_difference, std, strict),
        _seeds_for_resolution(std, strict, len(seeds)),
        bool(result.significant) or mde_holm <= RESOLUTION)


def _seeds_for_resolution(std: float, alpha: float, start: int) -> int:
    """The fewest seeds whose minimum detectable effect at ``alpha`` is :data:`RESOLUTION`."""
    return stats.seeds_needed(RESOLUTION, std, alpha) if std > 0 else start


def power_rows(runs: Sequence[Run], results: Sequence[PairedResult]) -> list[PowerRow]:
    """:func:`power_row` of each result of one Holm family."""
    return [power_row(runs, result, len(results)) for result in results]


# ---------------------------------------------------------------------------------------------
# Parameters: counts, combo 12's learned a and b, and the fold of its dense layer.


def parameter_counts(group: str, conv: str, dense: str) -> tuple[int, int] | None:
    """(all parameters, the activations' own) of the network ``group`` trains for (conv,
    dense): agile a and b, or a baseline's PReLU slopes, Swish betas, APL hinges.

    Counted with ``agile.paper.models.paper_cnn.count_params`` on the model's abstract parameters;
    None if the model cannot be built (e.g. a network this code base cannot construct).
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from agile.paper.config import create_model
    from agile.paper.models.paper_cnn import count_params

    config = study.GROUPS_BY_NAME[group].base_config()
    config.model.conv_activation, config.model.dense_activation = conv, dense
    images = jnp.zeros((1, MNIST_SIDE, MNIST_SIDE, 1), jnp.float32)
    try:
        shapes = jax.eval_shape(create_model(config).init, jax.random.key(0), images)["params"]
    except ValueError:
        return None
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    flat = traverse_util.flatten_dict(params)
    learned = [leaf for path, leaf in flat.items() if "_act" in path[0]]
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
    from agile.paper.config import create_model, get_config

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
    """Everything the report computes from the results before writing."""

    table: list[Table1Row]
    table1_results: list[PairedResult]
    ablation_results: list[PairedResult]
    fold: FoldCheck | None
    lr_results: list[PairedResult] = dataclasses.field(default_factory=list)
    baseline_results: list[PairedResult] = dataclasses.field(default_factory=list)
    table1_power: list[PowerRow] = dataclasses.field(default_factory=list)
    lr_power: list[PowerRow] = dataclasses.field(default_factory=list)
    baseline_power: list[PowerRow] = dataclasses.field(default_factory=list)


def analyse(results: Results) -> Analysis:
    """Table 1's rows, the families of paired comparisons with their power, the fold check."""
    params = results.params or {}
    fold = fold_check(params) if "hidden_act/a" in params else None
    runs = results.runs
    table1, lr, baselines = (compare_family(runs, comparisons) for comparisons in (
        table1_comparisons(), lr_comparisons(), baseline_comparisons()))
    return Analysis(table1_rows(runs), table1, compare_family(runs, ablation_comparisons()),
                    fold, lr, baselines, power_rows(runs, table1), power_rows(runs, lr),
                    power_rows(runs, baselines))
