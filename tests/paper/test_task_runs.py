"""The BatchNorm ResNet and the character transformer through the one loop (#29): they learn,
resume bit for bit (BatchNorm statistics included), batch seeds as separate runs do, and bad
values of their config fields are one-line errors."""

import os

import jax
import numpy as np
import pytest
from paper_testing import Interrupt, interrupt_after, latest_checkpoint, strip_times

from agile.errors import ConfigError
from agile.paper import config as config_lib
from agile.paper import train
from agile.paper.data import MissingDataError
from agile.paper.workdir import WorkdirError

CORPUS = ("It is a truth universally acknowledged, that a single man in possession of a good "
          "fortune, must be in want of a wife. ") * 12


@pytest.fixture
def resnet_config(synthetic_mnist_dir):
    """A tiny ResNet (widths 4, 8) on the synthetic images as Fashion-MNIST: 4 steps an epoch,
    2 epochs."""
    config = config_lib.get_config(model="resnet", data="fashion_mnist")
    config.model.widths = (4, 8)
    config.model.activation = "agile_relu"
    config.update(num_epochs=2, batch_size=50, log_every_steps=2, checkpoint_every_steps=2,
                  learning_rate=3e-3)
    config.data.update(source="idx", dir=str(synthetic_mnist_dir), train_size=200, val_size=100,
                       test_size=100, eval_batch_size=64)
    return config


@pytest.fixture
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "a.txt").write_text(CORPUS)
    (folder / "b.txt").write_text(CORPUS.upper())
    return folder


@pytest.fixture
def transformer_config(corpus_dir):
    """A tiny transformer (1 layer, width 16) on the two-file corpus: context 16."""
    config = config_lib.get_config(model="transformer", data="text")
    config.model.update(num_layers=1, width=16, num_heads=2, activation="agile_gelu")
    config.update(num_epochs=4, batch_size=16, log_every_steps=2, checkpoint_every_steps=3,
                  learning_rate=1e-2, eval_every_steps=3)
    config.data.update(dir=str(corpus_dir), context=16, eval_batch_size=32)
    return config


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """``reference_run(config)``: the summary and workdir of ``config``'s uninterrupted run,
    trained once per config in this process: the ResNet's resume test and its seed-batch
    test both compare against seed 0's run of the fixture's config."""
    root, runs = tmp_path_factory.mktemp("reference_runs"), {}

    def run(config):
        key = config.to_json(sort_keys=True)
        if key not in runs:
            workdir = root / str(len(runs))
            runs[key] = train.train_and_evaluate(config, workdir), workdir
        return runs[key]

    return run



def _assert_resumes_exactly(config, tmp_path, stop_after, reference_run):
    reference, reference_dir = reference_run(config)
    with pytest.raises(Interrupt):
        train.train_and_evaluate(config, tmp_path / "resumed",
                                 after_step=interrupt_after(stop_after))
    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    assert strip_times(resumed) == strip_times(reference)
    assert (tmp_path / "resumed/metrics.jsonl").read_text() == (
        reference_dir / "metrics.jsonl").read_text()
    (step, arrays), (ref_step, ref_arrays) = (latest_checkpoint(tmp_path / "resumed"),
                                              latest_checkpoint(reference_dir))
    assert step == ref_step
    jax.tree.map(np.testing.assert_array_equal, arrays, ref_arrays)
    return reference, arrays


@pytest.mark.slow
def test_resnet_resumes_exactly_with_its_batch_statistics(tmp_path, resnet_config,
                                                          reference_run):
    """Interrupted after step 5 (checkpoint at 4) of 8: rows, summary and every checkpoint
    leaf, the running BatchNorm statistics and the best model's among them, equal an
    uninterrupted run's."""
    summary, arrays = _assert_resumes_exactly(resnet_config, tmp_path, 5, reference_run)
    assert (summary["conv_activation"], summary["dense_activation"]) == ("agile_relu", "-")
    stats = arrays["state"]["model_state"]["batch_stats"]
    assert np.any(np.asarray(stats["stem_bn"]["mean"]) != 0)  # updated by training
    assert "batch_stats" in arrays["best_model_states"][0]


@pytest.mark.slow
def test_resnet_learns_real_fashion_mnist(tmp_path, resnet_config):
    """60 steps on 2,000 real Fashion-MNIST images take the test loss well below chance
    (ln 10 = 2.30). (The synthetic images encode their class by position, which global
    average pooling cannot see.)"""
    folder = os.environ.get("FASHION_MNIST_DIR")
    if not folder:
        pytest.skip("FASHION_MNIST_DIR is not set")
    resnet_config.model.widths = (8, 16)
    resnet_config.update(batch_size=100, num_epochs=3, checkpoint_every_steps=100)
    resnet_config.data.update(dir=folder, train_size=2000, val_size=500, test_size=1000,
                              standardize=True)
    summary = train.train_and_evaluate(resnet_config, tmp_path)
    assert summary["best_test_loss"] < 0.7 * np.log(10)  # 1.46 here


@pytest.mark.slow
def test_transformer_learns_and_resumes_exactly(tmp_path, transformer_config, reference_run):
    """Per-character loss (nats) falls well below a uniform guess over the vocabulary."""
    summary, _ = _assert_resumes_exactly(transformer_config, tmp_path, 7, reference_run)
    vocabulary = len(set(CORPUS) | set(CORPUS.upper()))
    assert summary["best_test_loss"] < 0.6 * np.log(vocabulary)


@pytest.mark.slow
def test_resnet_seed_batch_equals_separate_runs(tmp_path, resnet_config, reference_run):
    """Two seeds stepped by one program (scan) take each seed's own run's steps: the same
    rows and best step; losses equal to float32 rounding (the seed stack's evaluation is
    another compiled program, whose sums round differently in the last digits)."""
    resnet_config.num_epochs = 2
    alone = [reference_run(resnet_config.copy_and_resolve_references())[0]]
    resnet_config.seed = 1
    alone.append(train.train_and_evaluate(resnet_config, tmp_path / "1"))
    resnet_config.update(seed=0, num_seeds=2, seed_batching="scan")
    together = train.train_and_evaluate(resnet_config, tmp_path / "both")
    for seed, single in zip(together["seeds"], alone, strict=True):
        assert seed["best_step"] == single["best_step"] and seed["steps"] == single["steps"]
        for key in ("best_test_loss", "final_test_loss", "best_test_accuracy"):
            assert seed[key] == pytest.approx(single[key], rel=1e-5), key


@pytest.mark.slow
def test_transformer_resume_on_a_changed_vocabulary_is_refused(tmp_path, transformer_config,
                                                               corpus_dir):
    with pytest.raises(Interrupt):
        train.train_and_evaluate(transformer_config, tmp_path, after_step=interrupt_after(4))
    (corpus_dir / "c.txt").write_text("Zebra! ")
    try:
        with pytest.raises(WorkdirError, match=r"was trained with another vocabulary \(\d+ "
                                               r"characters then, \d+ now; new '!Z', missing ''"):
            train.train_and_evaluate(transformer_config, tmp_path)
    finally:
        (corpus_dir / "c.txt").unlink()


@pytest.mark.parametrize("field, value, message", [
    ("data.context", 0, r"config.data.context must be an integer >= 1, got 0"),
    ("data.train_stride", -2, r"config.data.train_stride must be None or an integer >= 1"),
    ("model.width", 15, r"width \(15\) must be a multiple of num_heads \(2\)"),
    ("model.activation", "swish", r"Unknown activation 'swish'"),
    ("model.name", "resnet", r"config.model lacks the fields of model.name='resnet'"),
])
def test_bad_transformer_values_are_one_line_errors(transformer_config, field, value, message):
    section, _, name = field.rpartition(".")
    transformer_config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(transformer_config)


def test_a_corpus_folder_without_text_is_refused_before_the_workdir(tmp_path,
                                                                   transformer_config):
    (tmp_path / "empty").mkdir()
    transformer_config.data.dir = str(tmp_path / "empty")
    with pytest.raises(MissingDataError, match=r"has no file matching '\*.txt'"):
        train.train_and_evaluate(transformer_config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resnet_bad_values_are_one_line_errors(resnet_config):
    resnet_config.model.widths = (16, 0)
    with pytest.raises(ConfigError, match=r"widths must be one or more positive integers"):
        config_lib.validate(resnet_config)
    resnet_config.model.widths = (16,)
    resnet_config.model.num_classes = 7
    with pytest.raises(ConfigError, match=r"num_classes must be 10 \(the data's classes\)"):
        config_lib.validate(resnet_config)


def test_text_window_subsets_are_spread_and_fixed(transformer_config):
    """data.*_windows keep that many windows spread evenly over a split, the same every run."""
    from agile.paper import tasks

    full = tasks.build(transformer_config).data.load(transformer_config.data)
    transformer_config.data.update(train_windows=5, val_windows=2)
    subset = tasks.build(transformer_config).data.load(transformer_config.data)
    assert len(subset.train.inputs) == 5 and len(subset.val.inputs) == 2
    assert len(subset.test.inputs) == len(full.test.inputs)  # 0: every window
    np.testing.assert_array_equal(subset.train.inputs[0], full.train.inputs[0])
    np.testing.assert_array_equal(subset.train.inputs[-1], full.train.inputs[-1])
    transformer_config.data.train_windows = -1
    with pytest.raises(ConfigError, match=r"config.data.train_windows must be an integer >= 0"):
        config_lib.validate(transformer_config)
