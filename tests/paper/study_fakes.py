"""Fake study results, built as the records of agile.paper.report.results and written by its
writer (the one schema): runs with losses that drift with each pair's index, curves, a/b
ranges and a combo-12 parameter file from agile.paper.models.paper_cnn.CNN's shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from agile.paper import study
from agile.paper.combos import COMBOS, combo_number
from agile.paper.models.paper_cnn import CNN
from agile.paper.models.transformer import Transformer
from agile.paper.report.results import Curve, Machine, Range, Results, Run, write_results

MACHINE = Machine(cpu="Test CPU", logical_cpus=2, memory_gib=8.0, jax="0.0", backend="cpu")


def fake_run(group, conv, dense, seed, loss, wall, steps=1500, best_step=1000):
    """One runs.csv record of ``group``'s trial for (conv, dense)."""
    agile = conv.startswith(("agile", "combined")) or dense.startswith("agile")
    return Run(group=group, trial=study.GROUPS_BY_NAME[group].trial_name(conv, dense),
               combo=combo_number(conv, dense), conv_activation=conv, dense_activation=dense,
               seed=seed, steps=steps, best_step=best_step, best_test_loss=loss,
               final_test_loss=loss + 0.01, best_test_accuracy=0.97 - loss / 10,
               final_test_accuracy=0.96, a_min=0.9 if agile else None,
               a_max=1.1 if agile else None, b_min=-0.1 if agile else None,
               b_max=0.1 if agile else None, wall_time_s=wall)


def fake_runs(groups=None, seeds=4, rng=None):
    """Runs of ``groups`` (default: all): a loss per pair that drifts with its index."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for group in study.GROUPS:
        if groups is not None and group.name not in groups:
            continue
        for index, (conv, dense) in enumerate(group.pairs):
            base, wall = 0.14 + 0.004 * index, 100.0 + index
            steps = rng.integers(800, 4000, seeds)
            for seed in range(seeds):
                rows.append(fake_run(group.name, conv, dense, seed,
                                     float(base + rng.normal(0, 0.005)), wall,
                                     int(steps[seed]), int(steps[seed]) - 500))
    return rows


def fake_curves(runs, every=50):
    """Validation loss every ``every`` steps up to each seed's steps; test loss every tenth."""
    rows = []
    for run in runs:
        if run.group not in ("table1", "dense_only"):
            continue
        for i, step in enumerate(range(every, run.steps + 1, every), start=1):
            loss = run.best_test_loss + 2.2 * math.exp(-step / 300)
            rows.append(Curve(group=run.group, trial=run.trial, seed=run.seed, step=step,
                              val_loss=round(loss, 6),
                              test_loss=round(loss, 6) if i % 10 == 0 else None))
    return rows


def fake_ranges(runs):
    """Final a and b per agile layer: combo-12-like layers for every agile trial."""
    rows = []
    for run in runs:
        layers = [f"conv_act_{i}" for i in range(3) if run.conv_activation.startswith(
            "agile")] + (["hidden_act"] if run.dense_activation.startswith("agile") else [])
        for layer in layers:
            spread = 0.05 * (1 + run.seed)
            for param, center in (("a", 1.0), ("b", 0.0)):
                rows.append(Range(group=run.group, trial=run.trial, seed=run.seed, layer=layer,
                                  param=param, min=center - spread, max=center + 2 * spread,
                                  mean=center + spread / 2))
    return rows


def fake_params():
    """Combo 12's parameters, flattened "layer/param", with a and b moved off their init."""
    conv, dense = COMBOS[12]
    shapes = jax.eval_shape(CNN(conv_activation=conv, dense_activation=dense).init,
                            jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    rng = np.random.default_rng(1)
    flat = {}
    for path, shape in traverse_util.flatten_dict(shapes).items():
        center = 1.0 if path[-1] == "a" else 0.0
        scale = 0.3 if path[-1] in ("a", "b") else 0.2
        flat["/".join(path)] = (center + scale * rng.normal(size=shape.shape)).astype(np.float32)
    return flat


def fake_transformer_params():
    """A small transformer's parameters with agile GELU (2 blocks), flattened "layer/param",
    with a and b moved off their init."""
    model = Transformer(vocab_size=12, context=8, num_layers=2, width=8, num_heads=2,
                        activation="agile_gelu")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                               train=False))["params"]
    rng = np.random.default_rng(2)
    return {"/".join(path): ((1.0 if path[-1] == "a" else 0.0)
                             + 0.3 * rng.normal(size=shape.shape)).astype(np.float32)
            for path, shape in traverse_util.flatten_dict(shapes).items()}


def fake_machines(runs, machine=MACHINE):
    """machine.json's records for ``runs``: ``machine`` timed every group with rows."""
    return {group: (machine,) for group in dict.fromkeys(run.group for run in runs)} or None


def fake_results(groups=None, seeds=4, params=True):
    """A whole :class:`Results` of ``groups`` (default: all): with ``params``, combo 12's
    parameters and, if the transformer group is among them, the transformer's."""
    runs = fake_runs(groups, seeds)
    transformer = params and (groups is None or "transformer" in groups)
    return Results(runs, fake_curves(runs), fake_ranges(runs),
                   fake_params() if params else None, fake_machines(runs),
                   transformer_params=fake_transformer_params() if transformer else None)


def write_fake_results(directory, groups=None, seeds=4):
    """Writes runs.csv, curves.csv, agile_ranges.csv, the combo-12 npz and machine.json into
    ``directory`` with the results writer; returns ``directory``."""
    write_results(fake_results(groups, seeds), directory)
    return directory
