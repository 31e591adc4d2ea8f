"""The reproduction study as data: its experiment groups and its comparison families.

Each :class:`Group` is one sweep (``agile.paper.sweep``) in its own folder under the study's
workdir: a set of (conv, dense) activation pairs, each trained with the same seeds, on the
default config with a few overrides. ``table1`` is the paper's experiment; the others are
what the paper did not run (granularity, other activations, all training images, a
combined activation, another optimizer), its Fig. 11 (a network of dense layers only) and
the questions it left open (the a/b learning rate, the field's learnable activations).

Each :class:`Family` is one question asked of those groups: a list of paired comparisons,
each one arm (a trial of a group) against another on the seeds both have, corrected with
Holm's method over exactly that list, with the words the report says about it. The report
(:mod:`agile.paper.report`) loops over :data:`FAMILIES`, one section per family, so a new
question is one entry here (and a new experiment one more :class:`Group`).

The analysis is elsewhere: the statistics in :mod:`agile.paper.stats`, the fold of an agile
layer into its neighbours in :mod:`agile.fold`. :func:`select_groups` and :func:`parse_overrides`
read ``scripts/study.py``'s ``--groups`` and ``--overrides``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from agile.errors import ConfigError
from agile.paper.combos import COMBOS, PAPER_TABLE1
from agile.paper.comparisons import (  # noqa: F401  (the families' types, re-exported)
    BITS,
    IN_SECTION,
    NATS,
    POWER_SECTION,
    RESOLUTION,
    Arm,
    Comparison,
    Family,
    Unit,
)
from agile.paper.config import PRESETS
from agile.paper.overrides import parse_overrides, split_overrides  # noqa: F401  (re-exported)
from agile.paper.trials import (
    Trial,
    activation_trial_name,
    settings,
    trial_name,
    trials_for_activations,
    trials_for_pairs,
)

SEEDS = 10  # The dense-only network (Fig. 11), the a/b learning rates, the baselines
TABLE1_SEEDS = 30  # Table 1: enough to resolve differences of ~0.006 (the power analysis)
ABLATION_SEEDS = 5  # What the paper did not run: enough for paired comparisons at a glance
BLOCK = 10  # Seeds a trial trains in one program; a group of more has one trial per block


@dataclasses.dataclass(frozen=True)
class Group:
    """One sweep of the study: activation pairs, config overrides, seeds, and why.

    Seeds ``0 .. seeds - 1`` train in blocks of ``block`` (one trial, one program each):
    block 0 in the trial's folder (its name), later ones in ``<name>.seeds<first>-<last>``,
    so a group's seeds can be trained in parts and one block's results never depend on
    another's. ``task`` names the data set its trials train on (and the model, where it is
    not the paper's CNN); comparisons pair seeds only within a task (a test checks every
    family). ``preset`` names the task's default config in ``agile.paper.config.PRESETS``
    (the paper's CNN on MNIST, the ResNet, the transformer). A model with one activation
    (the ResNet's conv layers, the transformer's MLP) has pairs ``(activation, "-")`` or
    ``("-", activation)``, the two columns its ``summary.json`` and the results fill.
    """

    name: str
    question: str
    pairs: tuple[tuple[str, str], ...]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: int = SEEDS
    names: tuple[str, ...] | None = None  # Trial names, if not trials.trial_name of each pair.
    block: int = BLOCK
    task: str = "mnist"
    preset: str = "paper"

    def trial_name(self, conv: str, dense: str) -> str:
        """The name of the trial that trains (conv, dense) in this group (its results' name):
        a one-activation model's is its activation's (``apl:2`` -> ``apl_2``)."""
        if self.names is not None:
            return self.names[self.pairs.index((conv, dense))]
        if NO_LAYER in (conv, dense):
            return activation_trial_name(_one_activation(conv, dense))
        return trial_name(conv, dense)

    def seed_range(self, seeds: int | range | None = None) -> range:
        """``seeds`` as a range of seed numbers: a count from 0, a range, or the group's.

        A count must be at least 1 and a range non-empty, from seed 0 or later.
        """
        if seeds is None:
            return range(self.seeds)
        if isinstance(seeds, range) and len(seeds) and seeds.start >= 0 and seeds.step == 1:
            return seeds
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            return range(seeds)
        raise ConfigError(f"The seed count must be at least 1, got {seeds!r} (or a range of "
                          "seeds from 0 on); leave --seeds out to train each group's own count.")

    def blocks(self, seeds: int | range | None = None) -> list[range]:
        """The seeds split at the multiples of ``block``."""
        seeds = self.seed_range(seeds)
        starts = sorted({seeds.start} | {s for s in seeds if s % self.block == 0})
        return [range(start, min(seeds.stop, (start // self.block + 1) * self.block))
                for start in starts]

    def folder(self, conv: str, dense: str, block: range) -> str:
        """The folder of the trial that trains (conv, dense) for the seeds ``block``."""
        name = self.trial_name(conv, dense)
        return name if block.start == 0 else f"{name}.seeds{block.start}-{block.stop - 1}"

    @staticmethod
    def trial_of(folder: str) -> str:
        """The trial name of a folder of this group (``combo_12.seeds10-19`` -> ``combo_12``)."""
        return folder.split(".seeds", 1)[0]

    def trials(self, seeds: int | range | None = None, **overrides: Any) -> list[Trial]:
        """The group's sweep trials, block by block (``seeds`` a count from 0 or a range;
        extra ``overrides`` for smoke tests)."""
        group = dataclasses.replace(self, overrides={**self.overrides, **overrides})
        out = []
        for block in self.blocks(seeds):
            base = group.base_config()
            base.seed = block.start
            if "conv_activation" in base.model:
                trials = trials_for_pairs(base, self.pairs, len(block))
            else:
                trials = trials_for_activations(
                    base, [_one_activation(*pair) for pair in self.pairs], len(block))
            out += [dataclasses.replace(trial, name=self.folder(*pair, block))
                    for trial, pair in zip(trials, self.pairs, strict=True)]
        return out

    def trial_config(self, conv: str, dense: str) -> ml_collections.ConfigDict:
        """The config of the trial that trains (conv, dense), for one seed (seed 0)."""
        trial = self.trials(1)[self.pairs.index((conv, dense))]
        trial.config.num_seeds = 1
        return trial.config

    def settings(self, seeds: int | range | None = None, **overrides: Any) -> dict[str, Any]:
        """What every trial of the group shares, for its folder's ``sweep.json``: the base
        config and the seeds per trial, whichever seeds a run trains (so a group's blocks can
        be trained by separate runs of the same settings)."""
        group = dataclasses.replace(self, overrides={**self.overrides, **overrides})
        return settings(group.base_config(), min(self.block, len(self.seed_range(seeds))))

    def base_config(self) -> ml_collections.ConfigDict:
        """The default config with this group's overrides (``"section.field": value``).

        An override of an unknown section, or of another type than its field's, raises
        :class:`~agile.errors.ConfigError` naming it (unknown fields: ``config.validate``).
        """
        config = PRESETS[self.preset]()
        for name, value in self.overrides.items():
            section, _, field = name.rpartition(".")
            try:
                (config[section] if section else config)[field] = value
            except KeyError:
                raise ConfigError(f"Unknown config section {section!r} in the override {name}; "
                                  "the fields and their defaults are in agile/paper/config.py."
                                  ) from None
            except (TypeError, ValueError) as err:
                raise ConfigError(f"Cannot set {name} to {value!r}: {err}.") from None
        return config


NO_LAYER = "-"  # the column of a one-activation model's pair that it has no layer for


def _one_activation(conv: str, dense: str) -> str:
    """The activation of a one-activation model's pair (``("relu", "-")`` -> ``relu``)."""
    if (conv == NO_LAYER) == (dense == NO_LAYER):
        raise ConfigError(f"A one-activation model's pair has one activation and one "
                          f"{NO_LAYER!r}, got ({conv!r}, {dense!r}).")
    return dense if conv == NO_LAYER else conv


def _tenth(rate: float) -> float:
    """0.1x ``rate``, rounded (settings read ``0.0003``, not ``0.00030000000000000003``)."""
    return round(rate / 10, 12)


# The weights' rate of the tasks beyond the paper, from their configs (the groups' 0.1x arms).
_RESNET, _TRANSFORMER = PRESETS["resnet"](), PRESETS["transformer"]()
_RESNET_RATE, _TRANSFORMER_RATE = _RESNET.learning_rate, _TRANSFORMER.learning_rate


GROUPS: tuple[Group, ...] = (
    Group("table1", "Table 1: the paper's 12 combinations in its setup.", tuple(COMBOS.values()),
          {"test_every": 4}, TABLE1_SEEDS),
    Group("dense_only", "Fig. 11: sigmoid against agile sigmoid in a network of dense layers only "
          "(784-30-10).", (("relu", "sigmoid"), ("relu", "agile_sigmoid")),
          {"model.conv_features": (), "test_every": 1}, names=("sigmoid", "agile_sigmoid")),
    Group("granularity_channel", "Combos 11 and 12 with one (a, b) per channel.",
          (COMBOS[11], COMBOS[12]), {"model.granularity": "channel"}, ABLATION_SEEDS),
    Group("granularity_scalar", "Combos 11 and 12 with one (a, b) per layer.",
          (COMBOS[11], COMBOS[12]), {"model.granularity": "scalar"}, ABLATION_SEEDS),
    Group("tanh_gelu", "Agile tanh and gelu against plain ones in the same CNN.",
          (("tanh", "tanh"), ("agile_tanh", "agile_tanh"), ("gelu", "gelu"),
           ("agile_gelu", "agile_gelu")), seeds=ABLATION_SEEDS),
    Group("combined", "A combined activation a1 relu(x - b1) + a2 sigmoid(x - b2) in the conv "
          "layers.", (("combined:relu,sigmoid", "agile_sigmoid"),), seeds=ABLATION_SEEDS),
    Group("sgd", "Combos 7 and 12 with SGD and momentum 0.9 (learning rate 0.01) for "
          "every parameter.", (COMBOS[7], COMBOS[12]),
          {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.01,
           "agile_learning_rate": 0.01}, ABLATION_SEEDS),
    Group("full_data", "Combos 7 and 12 on all 59,000 training images (1,000 held out).",
          (COMBOS[7], COMBOS[12]), {"data.train_size": 0}, seeds=ABLATION_SEEDS),
    Group("agile_lr_0.1x", "Combos 10, 11 and 12 with a and b trained at 0.1x the weights' "
          "rate (Adam 1e-4; Table 1: 1x), paired with Table 1's seeds.",
          (COMBOS[10], COMBOS[11], COMBOS[12]),
          {"agile_learning_rate": 1e-4, "test_every": 4}),
    Group("agile_lr_10x", "Combos 10, 11 and 12 with a and b trained at 10x the weights' rate "
          "(Adam 1e-2; Table 1: 1x), paired with Table 1's seeds.",
          (COMBOS[10], COMBOS[11], COMBOS[12]),
          {"agile_learning_rate": 1e-2, "test_every": 4}),
    Group("baselines", "The field's learnable activations in both layers, one set of "
          "parameters per channel: PReLU, Swish with a learned beta, APL with 2 hinges, and "
          "agile ReLU per channel.",
          (("prelu", "prelu"), ("swish_beta", "swish_beta"), ("apl:2", "apl:2"),
           ("agile_relu", "agile_relu")), {"model.granularity": "channel", "test_every": 4},
          names=("prelu", "swish_beta", "apl2", "agile_relu_channel")),
    Group("capacity", "Combo 7 (plain ReLU) with combo 12's parameter count: 640 hidden dense "
          "nodes instead of 30.", (COMBOS[7],), {"model.dense_features": 640, "test_every": 4},
          names=("combo_07_dense640",)),
    # Issue #30: the a/b-rate curve on MNIST (0.1x and 10x above, 1x is Table 1) ...
    *(Group(f"agile_lr_{label}", f"Combos 10, 11 and 12 with a and b trained at {label} the "
            f"weights' rate (Adam {rate:.0e}; Table 1: 1x), paired with Table 1's seeds.",
            (COMBOS[10], COMBOS[11], COMBOS[12]), {"agile_learning_rate": rate, "test_every": 4})
      for label, rate in (("0.01x", 1e-5), ("0.03x", 3e-5), ("0.3x", 3e-4))),
    # ... and the paper's protocol on Fashion-MNIST (same CNN, 5,000 balanced images, schedule).
    Group("fashion_table1", "Table 1 on Fashion-MNIST: the paper's 12 combinations, its CNN, "
          "5,000 balanced training images and its schedule.", tuple(COMBOS.values()),
          {"data.name": "fashion_mnist", "test_every": 4}, task="fashion_mnist"),
    Group("fashion_agile_lr_0.1x", "Combos 10, 11 and 12 on Fashion-MNIST with a and b trained "
          "at 0.1x the weights' rate (Adam 1e-04), paired with Fashion-MNIST Table 1's seeds.",
          (COMBOS[10], COMBOS[11], COMBOS[12]),
          {"data.name": "fashion_mnist", "agile_learning_rate": 1e-4, "test_every": 4},
          task="fashion_mnist"),
    # ... a BatchNorm ResNet on Fashion-MNIST (agile parameters per channel) ...
    Group("resnet", "The BatchNorm ResNet on Fashion-MNIST (`configs/resnet.py`: widths "
          f"{'/'.join(map(str, _RESNET.model.widths))}, {_RESNET.data.train_size:,} training "
          "images, agile and learnable parameters per channel): ReLU, "
          "agile ReLU, PReLU, Swish-β and GELU, a and b at the weights' rate (Adam "
          f"{_RESNET_RATE:g}).",
          (("relu", NO_LAYER), ("agile_relu", NO_LAYER), ("prelu", NO_LAYER),
           ("swish_beta", NO_LAYER), ("gelu", NO_LAYER)), task="resnet_fashion_mnist",
          preset="resnet"),
    Group("resnet_agile_lr_0.1x", "The ResNet with agile ReLU and agile GELU per channel, a "
          f"and b at 0.1x the weights' rate (Adam {_tenth(_RESNET_RATE):g}).",
          (("agile_relu", NO_LAYER), ("agile_gelu", NO_LAYER)),
          {"agile_learning_rate": _tenth(_RESNET_RATE)}, task="resnet_fashion_mnist",
          preset="resnet"),
    # ... and a character-level transformer on Jane Austen's novels (the MLP's activation).
    Group("transformer", "The character-level transformer on Austen (`configs/transformer.py`: "
          f"{_TRANSFORMER.model.num_layers} pre-LayerNorm blocks, width "
          f"{_TRANSFORMER.model.width}, context {_TRANSFORMER.data.context}, "
          f"{_TRANSFORMER.data.train_windows:,} training windows, Adam {_TRANSFORMER_RATE:g}, "
          "early stopping): GELU, agile GELU per hidden channel, xIELU "
          "and ReLU in the MLP, a and b at the weights' rate.",
          ((NO_LAYER, "gelu"), (NO_LAYER, "agile_gelu"), (NO_LAYER, "xielu"),
           (NO_LAYER, "relu")), task="transformer_text", preset="transformer"),
    Group("transformer_agile_lr_0.1x", "The transformer with agile GELU per hidden channel, "
          f"a and b at 0.1x the weights' rate (Adam {_tenth(_TRANSFORMER_RATE):g}).",
          ((NO_LAYER, "agile_gelu"),), {"agile_learning_rate": _tenth(_TRANSFORMER_RATE)},
          task="transformer_text", preset="transformer"),
    Group("transformer_scalar", "The transformer with agile GELU, one (a, b) per layer "
          "(xATLU-style) at the weights' rate.", ((NO_LAYER, "agile_gelu"),),
          {"model.granularity": "scalar"}, names=("agile_gelu_scalar",),
          task="transformer_text", preset="transformer"),
)
GROUPS_BY_NAME = {group.name: group for group in GROUPS}

# (agile variant, plain counterpart) on the same seeds: one layer's activation made agile
# (the rest equal), plus the paper's own comparison of 3 with 1.
PAIRED_COMPARISONS: tuple[tuple[int, int], ...] = (
    (4, 1), (5, 2), (6, 3), (10, 7), (11, 8), (12, 9),  # conv layers agile
    (2, 1), (5, 4), (8, 7), (11, 10),  # dense layer agile relu
    (3, 1),  # the paper's: sigmoid / agile sigmoid against sigmoid / relu
)


# ---------------------------------------------------------------------------------------------
# The comparison families: which arm against which, on which seeds, in which Holm family.




def combo_arm(combo: int, group: str = "table1", setting: str = "") -> Arm:
    """Table 1's row ``combo`` as trained in ``group`` (``setting`` qualifies its label)."""
    return Arm(group, trial_name(*COMBOS[combo]),
               f"combo {combo}{f' ({setting})' if setting else ''}")


def pair_arm(group: str, conv: str, dense: str, label: str) -> Arm:
    """The trial of ``group`` that trains the pair (conv, dense)."""
    return Arm(group, GROUPS_BY_NAME[group].trial_name(conv, dense), label)


def paper_difference(first: int, second: int) -> float:
    """Table 1's loss of row ``first`` less that of row ``second``, as the paper prints them."""
    return PAPER_TABLE1[first][0] - PAPER_TABLE1[second][0]


def table1_comparisons(group: str = "table1", paper: bool = True) -> tuple[Comparison, ...]:
    """:data:`PAIRED_COMPARISONS` on Table 1's combos as trained in ``group`` (labelled
    ``combo N`` whatever the group, so another data set's family can sit ``beside`` MNIST's),
    with the paper's difference if ``paper`` (it measured MNIST only), a theme each: which
    layer was made agile, or the paper's own comparison."""
    def theme(agile: int, plain: int) -> str:
        (conv, dense), (plain_conv, plain_dense) = COMBOS[agile], COMBOS[plain]
        if conv != plain_conv:
            return "Agile conv layers, the rest equal"
        if dense == f"agile_{plain_dense}":
            return "Agile ReLU in the dense layer, the rest equal"
        return "The paper's own comparison (agile sigmoid for ReLU in the dense layer)"

    return tuple(Comparison(combo_arm(agile, group), combo_arm(plain, group),
                            paper_difference(agile, plain) if paper else None,
                            theme=theme(agile, plain))
                 for agile, plain in PAIRED_COMPARISONS)


def rate_comparisons(settings: Sequence[tuple[str, str]], combos: Sequence[int] = (10, 11, 12),
                     plain: int = 7, reference: str = "table1") -> tuple[Comparison, ...]:
    """The verdict of each agile combo against plain ``plain`` (as the ``reference`` group
    trains it) in each group of ``settings`` (``(group, label)``: one a/b learning rate each),
    then each rate against the ``reference`` group's (Table 1's 1x), one sentence per rate and
    one for the latter."""
    labels = dict(settings)
    out = [Comparison(combo_arm(combo, group, setting), combo_arm(plain, reference),
                      theme=f"With {setting}", clause=f"combo {combo} − combo {plain}")
           for group, setting in settings for combo in combos]
    out += [Comparison(combo_arm(combo, group, setting),
                       combo_arm(combo, reference, labels[reference]),
                       theme="Against Table 1's rate")
            for group, setting in settings if group != reference for combo in combos]
    return tuple(out)


def _ablation_comparisons() -> tuple[Comparison, ...]:
    """The natural comparison of each group the paper did not run, a theme per question."""
    theme = "Granularity (fewer a and b than one per element)"
    out = [Comparison(combo_arm(combo, f"granularity_{granularity}", setting),
                      combo_arm(combo, setting="per element"), theme=theme)
           for combo in (11, 12)
           for granularity, setting in (("channel", "per channel"), ("scalar", "one per layer"))]
    theme = "Agile against plain tanh and gelu in both layers"
    out += [Comparison(pair_arm("tanh_gelu", f"agile_{name}", f"agile_{name}",
                                f"agile {name} / agile {name}"),
                       pair_arm("tanh_gelu", name, name, f"{name} / {name}"), theme=theme)
            for name in ("tanh", "gelu")]
    (_, plain), (_, agile) = GROUPS_BY_NAME["dense_only"].pairs
    out.append(Comparison(pair_arm("dense_only", "relu", agile, f"dense-only {agile}"),
                          pair_arm("dense_only", "relu", plain, f"dense-only {plain}"),
                          theme="The paper's Fig. 11 shows agile sigmoid better than sigmoid in "
                          "a dense-only network; ours"))
    theme = "Combo 12 against combo 7 (does the verdict depend on the optimiser or the data size?)"
    out += [Comparison(combo_arm(12, group, setting), combo_arm(7, group, setting),
                       paper_difference(12, 7) if group == "table1" else None, theme=theme)
            for group, setting in (("table1", "Adam"), ("sgd", "SGD with momentum"),
                                   ("full_data", "all training images"))]
    conv, dense = GROUPS_BY_NAME["combined"].pairs[0]
    combined = pair_arm("combined", conv, dense, f"{conv} / {dense}")
    theme = "The combined activation in the conv layers"
    out += [Comparison(combined, combo_arm(combo), theme=theme) for combo in (12, 6)]
    return tuple(out)


# The a/b learning rates of the ReLU family (combos 10-12), as a multiple of the weights' rate
# (Adam 1e-3): (group, label, multiple), in the order of the rate (the curve's x axis).
LR_CURVE = (("agile_lr_0.01x", "a, b at 0.01x", 0.01), ("agile_lr_0.03x", "a, b at 0.03x", 0.03),
            ("agile_lr_0.1x", "a, b at 0.1x", 0.1), ("agile_lr_0.3x", "a, b at 0.3x", 0.3),
            ("table1", "a, b at 1x", 1.0), ("agile_lr_10x", "a, b at 10x", 10.0))
LR_SETTINGS = tuple((group, label) for group, label, _ in LR_CURVE)
FASHION_LR_SETTINGS = (("fashion_agile_lr_0.1x", "a, b at 0.1x"),
                       ("fashion_table1", "a, b at 1x"))
BASELINE_ARMS = (Arm("baselines", "prelu", "PReLU per channel"),
                 Arm("baselines", "swish_beta", "Swish-β per channel"),
                 Arm("baselines", "apl2", "APL (2 hinges) per channel"),
                 Arm("baselines", "agile_relu_channel", "agile ReLU per channel"),
                 Arm("capacity", "combo_07_dense640", "ReLU, dense 640 (combo 12's size)"))

def _one_activation_arm(group: str, activation: str, label: str) -> Arm:
    """The trial of ``group`` (a one-activation model's) that trains ``activation``."""
    pair = next(pair for pair in GROUPS_BY_NAME[group].pairs
                if activation in pair)
    return pair_arm(group, *pair, label)


def _against(plain: Arm, arms: Sequence[Arm], theme: str) -> tuple[Comparison, ...]:
    return tuple(Comparison(arm, plain, theme=theme, clause=arm.label) for arm in arms)


RESNET_RELU = _one_activation_arm("resnet", "relu", "ReLU")
RESNET_GELU = _one_activation_arm("resnet", "gelu", "GELU")
TRANSFORMER_GELU = _one_activation_arm("transformer", "gelu", "GELU")

# In the report's order. A new question is one more entry: e.g. (issue #30) Table 1 on
# Fashion-MNIST beside MNIST's, once a group "fashion_table1" (task "fashion_mnist") trains it:
#   Family("fashion_table1", "Table 1 on Fashion-MNIST", table1_comparisons("fashion_table1",
#          paper=False), question="...", groups=("fashion_table1",), beside="table1"),
# the a/b-rate curve: Family("lr_curve", ..., rate_comparisons(<(group, label) per rate>));
# a language model's question reports bits: Family(..., unit=BITS, resolution=<in bits>).
FAMILIES: tuple[Family, ...] = (
    Family(
        "table1", "Paired comparisons on the same seeds", table1_comparisons(),
        question="The comparisons of `agile.paper.study.PAIRED_COMPARISONS`: each agile variant "
        "against its plain counterpart (one layer's activation made agile, the rest equal), and "
        "the paper's own comparison of sigmoid / agile sigmoid with sigmoid / relu, on the seeds "
        "both have: the mean of the per-seed differences in best test loss (negative: the first "
        "has the lower loss), its {confidence:.0%} t-interval (not adjusted), the paired "
        "t-test's p-value and Holm's correction over the {m} comparisons of this family, which "
        "decides significance. 'vs the paper': agrees (significant, same direction as the "
        "paper's difference), contradicts (significant, opposite direction) or not confirmed "
        "(no significant difference).",
        contents="paired comparisons", figure="differences",
        figure_title="Table 1: agile variant − plain counterpart", power=POWER_SECTION,
        power_title="Table 1's comparisons", findings="table1", findings_in_section=False,
        conclusion_title="Table 1", conclusion_first=True),
    Family(
        "lr", "The learning rate of a and b", rate_comparisons(LR_SETTINGS),
        question="The paper trains a and b with their own rate (ρ3); Table 1 here uses the "
        "weights' rate for them (Adam 1e-3). Combos 10, 11 and 12 (the ReLU family: agile conv "
        "layers) again with a and b at 0.01x, 0.03x, 0.1x, 0.3x and 10x that rate, on Table "
        "1's seeds, against plain combo 7 at each rate, and each rate against 1x. One Holm "
        "family; the figure draws the curve.",
        groups=tuple(group for group, _, _ in LR_CURVE if group != "table1"),
        figure="lr_curve", figure_title="Best test loss against the a/b learning rate",
        curve=LR_CURVE),
    Family(
        "fashion_table1", "Table 1 on Fashion-MNIST",
        table1_comparisons("fashion_table1", paper=False),
        question="The paper's protocol on harder data: the same CNN, 5,000 balanced training "
        "images (500 per class), batch 100 and schedule, on Fashion-MNIST (scaled to [0, 1] as "
        "MNIST is). The comparisons of Table 1's section on the same seeds, each beside "
        "MNIST's verdict: 'agrees' where both are significant in the same direction or both "
        "are not, 'differs' otherwise. One Holm family of {m}.",
        groups=("fashion_table1",), beside="table1"),
    Family(
        "fashion_lr", "The learning rate of a and b on Fashion-MNIST",
        rate_comparisons(FASHION_LR_SETTINGS, reference="fashion_table1"),
        question="Combos 10, 11 and 12 on Fashion-MNIST with a and b at 0.1x the weights' rate "
        "(MNIST's best rate) against plain combo 7 at each rate, and 0.1x against 1x, on the "
        "seeds of Fashion-MNIST's Table 1. One Holm family.",
        groups=("fashion_agile_lr_0.1x",)),
    Family(
        "resnet", "A BatchNorm ResNet on Fashion-MNIST",
        _against(RESNET_RELU, (
            _one_activation_arm("resnet", "agile_relu", "agile ReLU (a, b at 1x)"),
            _one_activation_arm("resnet_agile_lr_0.1x", "agile_relu", "agile ReLU (a, b at 0.1x)"),
            _one_activation_arm("resnet", "prelu", "PReLU"),
            _one_activation_arm("resnet", "swish_beta", "Swish-β"),
            RESNET_GELU), "Against ReLU")
        + _against(RESNET_GELU, (_one_activation_arm("resnet_agile_lr_0.1x", "agile_gelu",
                                                     "agile GELU (a, b at 0.1x)"),),
                   "Against GELU"),
        question="The test of the reparameterisation argument. In this ResNet every convolution "
        "is followed by BatchNorm, whose learned per-channel scale γ and shift β come right "
        "before the activation; for ReLU, a·relu(x − b) = relu(a·x − a·b) with a > 0, so a "
        "per-channel a and b only re-express what γ and β (and the next layer's weights) can "
        "already do. The argument predicts no gain from agile ReLU per channel here; GELU is "
        "not positively homogeneous, so agile GELU is compared with GELU too. Each variant "
        "against ReLU (or GELU) on the same seeds, one Holm family of {m}.",
        groups=("resnet", "resnet_agile_lr_0.1x"), theme_end=": ", power=IN_SECTION),
    Family(
        "transformer", "A character-level transformer on Jane Austen",
        _against(TRANSFORMER_GELU, (
            _one_activation_arm("transformer", "agile_gelu", "agile GELU (a, b at 1x)"),
            _one_activation_arm("transformer_agile_lr_0.1x", "agile_gelu",
                                "agile GELU (a, b at 0.1x)"),
            _one_activation_arm("transformer_scalar", "agile_gelu",
                                "agile GELU (one a, b per layer)"),
            _one_activation_arm("transformer", "xielu", "xIELU"),
            _one_activation_arm("transformer", "relu", "ReLU")), "Against GELU"),
        question="The MLP's activation of a small character-level transformer (pre-LayerNorm, "
        "so again a normalisation sits before each MLP): agile GELU per hidden channel at two "
        "a/b rates and with one pair per layer, xIELU (a learned activation of 2024) and ReLU, "
        "each against GELU on the same seeds, in bits per character (nats / ln 2) of the test "
        "split at the lowest validation loss. One Holm family of {m}.",
        groups=("transformer", "transformer_agile_lr_0.1x", "transformer_scalar"), unit=BITS,
        resolution=0.01, figure="transformer_layers",
        figure_title="Transformer: agile variant − GELU"),
    Family(
        "baselines", "The field's learnable activations",
        tuple(Comparison(arm, combo_arm(plain), theme=arm.label, clause=f"− combo {plain}")
              for arm in BASELINE_ARMS for plain in (7, 12)),
        question="The learnable activations the field already uses, in both layers of the same "
        "CNN with one set of parameters per channel, and agile ReLU per channel; then a plain "
        "ReLU network with as many parameters as combo 12 (its per-element a and b add about "
        "28,700): each against plain ReLU (combo 7) and against combo 12 (Table 1's runs). The "
        "parameters column counts all and, in brackets, the activations' own. One Holm family.",
        groups=("baselines", "capacity"), theme_end=" "),
    Family(
        "ablations", "What the paper did not run", _ablation_comparisons(),
        groups=("dense_only", "granularity_channel", "granularity_scalar", "tanh_gelu",
                "combined", "sgd", "full_data"),
        note="The natural comparison of each group, paired on common seeds: granularity against "
        "the per-element default (Table 1's runs), agile against plain tanh and gelu, agile "
        "against plain sigmoid in the dense-only network, combo 12 against combo 7 with each "
        "optimizer and data size, and the combined activation against combos 12 and 6. Holm's "
        "correction runs over these {m} comparisons (a family of their own).",
        power=None, findings_in_section=False, conclusion_first=True,
        conclusion_lead="Differences are first − second in best test loss, with their "
        "{confidence:.0%} CI (not adjusted) and Holm's correction over this family."),
)
FAMILIES_BY_NAME = {family.name: family for family in FAMILIES}


# ---------------------------------------------------------------------------------------------
# One verdict across tasks (the conclusion's table, issue #30): per task, the comparisons of an
# agile variant against its plain twin (the same network with the plain activation) that
# compete for "the best agile variant", each with the a/b rate it trained at.


@dataclasses.dataclass(frozen=True)
class TaskVerdict:
    """A row of the verdict across tasks: ``task`` (its label) and ``candidates``, each
    ``(family, comparison name, a/b rate)`` of an agile variant against its plain twin; the
    report shows the available candidate with the lowest mean difference, with its interval
    and its own family's Holm p, and a sentence of guidance."""

    task: str
    candidates: tuple[tuple[str, str, str], ...]
    unit: Unit = NATS

    def __post_init__(self):
        for family, name, _ in self.candidates:
            names = {c.name for c in FAMILIES_BY_NAME[family].comparisons}
            if name not in names:
                raise ValueError(f"TaskVerdict {self.task!r}: {family} has no comparison {name!r}")


def _twins(family: str, pairs: Sequence[tuple[int, int]] = PAIRED_COMPARISONS[:-1],
           ) -> tuple[tuple[str, str, str], ...]:
    """Table 1's agile-against-plain-twin comparisons (not the paper's own, 3 against 1) in
    ``family``, at the weights' rate."""
    return tuple((family, f"combo {agile} − combo {plain}", "1x") for agile, plain in pairs)


def _rate_twins(family: str, settings: Sequence[tuple[str, str]]
                ) -> tuple[tuple[str, str, str], ...]:
    """Combos 10 and 11 (agile ReLU conv layers; their twin is plain combo 7) at each rate of
    ``settings`` other than 1x (Table 1's)."""
    return tuple((family, f"combo {combo} ({label}) − combo 7", label.rpartition(" ")[2])
                 for _, label in settings if not label.endswith(" 1x") for combo in (10, 11))


VERDICTS: tuple[TaskVerdict, ...] = (
    TaskVerdict("MNIST-5k, the paper's CNN", _twins("table1") + _rate_twins("lr", LR_SETTINGS)),
    TaskVerdict("Fashion-MNIST-5k, the paper's CNN",
                _twins("fashion_table1") + _rate_twins("fashion_lr", FASHION_LR_SETTINGS)),
    TaskVerdict("Fashion-MNIST, a BatchNorm ResNet",
                (("resnet", "agile ReLU (a, b at 1x) − ReLU", "1x"),
                 ("resnet", "agile ReLU (a, b at 0.1x) − ReLU", "0.1x"),
                 ("resnet", "agile GELU (a, b at 0.1x) − GELU", "0.1x"))),
    TaskVerdict("Austen, a character-level transformer",
                (("transformer", "agile GELU (a, b at 1x) − GELU", "1x"),
                 ("transformer", "agile GELU (a, b at 0.1x) − GELU", "0.1x"),
                 ("transformer", "agile GELU (one a, b per layer) − GELU", "1x")), BITS),
)


# ---------------------------------------------------------------------------------------------
# The study's command line: which groups, which overrides.


def select_groups(names: Sequence[str]) -> list[Group]:
    """The groups ``names`` (``--groups``), in that order.

    :class:`~agile.errors.ConfigError` for no name, an unknown one or one named twice.
    """
    names = [name.strip() for name in names if name.strip()]
    valid = ", ".join(GROUPS_BY_NAME)
    if not names:
        raise ConfigError(f"--groups is empty: name at least one of {valid} (or leave the flag "
                          "out to run them all).")
    unknown = [name for name in names if name not in GROUPS_BY_NAME]
    if unknown:
        raise ConfigError(f"Unknown group(s) {', '.join(unknown)}. Valid: {valid}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--groups lists {', '.join(repeated)} twice; each group runs once.")
    return [GROUPS_BY_NAME[name] for name in names]
