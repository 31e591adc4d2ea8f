"""The reproduction study: its experiment groups, and the analysis of their results.

Each :class:`Group` is one sweep (``agile.paper.sweep``) in its own folder under the study's
workdir: a set of (conv, dense) activation pairs, each trained with the same seeds, on the
default config with a few overrides. ``table1`` is the paper's experiment; the others are
what the paper did not run (granularity, other activations, all training images, a
combined activation, another optimizer) and its Fig. 11 (a network of dense layers only).

The analysis is elsewhere: the statistics in :mod:`agile.paper.stats`, the fold of an agile
layer into its neighbours in :mod:`agile.fold`. :func:`select_groups` and :func:`parse_overrides`
read ``scripts/study.py``'s ``--groups`` and ``--overrides``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from agile.errors import ConfigError
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.trials import Trial, settings, trial_name, trials_for_pairs

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
    another's.
    """

    name: str
    question: str
    pairs: tuple[tuple[str, str], ...]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: int = SEEDS
    names: tuple[str, ...] | None = None  # Trial names, if not trials.trial_name of each pair.
    block: int = BLOCK

    def trial_name(self, conv: str, dense: str) -> str:
        """The name of the trial that trains (conv, dense) in this group (its results' name)."""
        if self.names is None:
            return trial_name(conv, dense)
        return self.names[self.pairs.index((conv, dense))]

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
            trials = trials_for_pairs(base, self.pairs, len(block))
            out += [dataclasses.replace(trial, name=self.folder(*pair, block))
                    for trial, pair in zip(trials, self.pairs, strict=True)]
        return out

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
        config = get_config()
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
