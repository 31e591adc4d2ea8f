"""The task seam (agile.paper.tasks): data sources and models by name, built once, passed down;
Fashion-MNIST as the second data source; a workdir bound to the data it trained on."""

import dataclasses
import re

import jax
import numpy as np
import pytest
from agile_testing import REPO_ROOT
from paper_testing import Interrupt, interrupt_after, latest_checkpoint, strip_times

from agile.paper import config as config_lib
from agile.paper import tasks, train
from agile.paper.data import fingerprint
from agile.paper.data import images as images_lib
from agile.paper.workdir import WorkdirError


@pytest.fixture
def fashion_config(tiny_config, synthetic_mnist_dir, monkeypatch):
    """The tiny config on Fashion-MNIST's name, its folder given by FASHION_MNIST_DIR only."""
    monkeypatch.setenv("FASHION_MNIST_DIR", str(synthetic_mnist_dir))
    monkeypatch.delenv("MNIST_DIR", raising=False)
    tiny_config.data.name = "fashion_mnist"
    tiny_config.data.source = "auto"
    tiny_config.data.dir = None
    return tiny_config



@pytest.mark.parametrize("model, data", [("paper_cnn", "mnist"), ("paper_cnn", "fashion_mnist"),
                                         ("resnet", "fashion_mnist"), ("transformer", "text")])
def test_every_registered_task_builds_and_gives_logits_per_target(model, data, tmp_path,
                                                                  monkeypatch):
    """Each model on its data: logits of shape targets + (classes,), classes from the data."""
    (tmp_path / "a.txt").write_text("abcab" * 50)
    monkeypatch.setenv("TEXT_DIR", str(tmp_path))
    config = config_lib.get_config(model=model, data=data)
    config_lib.validate(config)
    task = tasks.build(config)
    assert (task.data.name, task.input_shape) == (
        data, (config.data.context,) if data == "text" else (28, 28, 1))
    logits = jax.eval_shape(lambda x: task.model.init_with_output(
        jax.random.key(0), x, train=False)[0], task.example())
    expected = (1, config.data.context, 3) if data == "text" else (1, 10)  # "abc": 3 characters
    assert logits.shape == expected
    assert set(tasks.MODELS) == set(config_lib.MODEL_FIELDS)
    assert set(tasks.DATA_SOURCES) == set(config_lib.DATA_KINDS)


def test_the_loop_builds_the_task_once(tmp_path, tiny_config, monkeypatch):
    """The model is built once at set-up and passed down, not rebuilt from the config."""
    spec = tasks.MODELS["paper_cnn"]
    builds = []

    def counting_build(*args):
        builds.append(args)
        return spec.build(*args)

    monkeypatch.setitem(tasks.MODELS, "paper_cnn", dataclasses.replace(spec, build=counting_build))
    train.train_and_evaluate(tiny_config, tmp_path)
    assert len(builds) == 1


def test_loop_modules_name_no_data_set_or_model():
    """The loop, steps, evaluation, sweeps, pool and Ray backend receive their task."""
    for name in ("train", "steps", "evaluation", "sweep", "pool", "ray_sweep"):
        text = (REPO_ROOT / "agile" / "paper" / f"{name}.py").read_text()
        assert not re.search(r"mnist|paper_cnn|\bCNN\b", text, re.IGNORECASE), name


def test_fashion_mnist_reads_its_own_folder_variable_and_statistics(fashion_config):
    assert images_lib.resolve_source(fashion_config.data) == "idx"
    datasets = images_lib.load_datasets(fashion_config.data)
    fashion_config.data.standardize = True
    standardised = images_lib.load_datasets(fashion_config.data)
    np.testing.assert_allclose(standardised.train.inputs,
                               (datasets.train.inputs - np.float32(0.2860)) / np.float32(0.3530),
                               rtol=1e-5, atol=1e-5)


def test_fashion_mnist_without_a_folder_names_its_variable(fashion_config, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR")
    fashion_config.data.source = "idx"
    with pytest.raises(ValueError, match=r"Set FASHION_MNIST_DIR \(or data.dir\) to a folder "
                                         r"with the four Fashion-MNIST IDX files"):
        tasks.build(fashion_config).data.check_available(fashion_config.data)


def test_fashion_mnist_run_resumes_bit_for_bit(tmp_path, fashion_config):
    """Interrupted after step 7 (checkpoint at 6): rows, summary and every leaf of the last
    checkpoint equal an uninterrupted run's."""
    fashion_config.num_epochs = 3
    reference = train.train_and_evaluate(fashion_config, tmp_path / "reference")
    with pytest.raises(Interrupt):
        train.train_and_evaluate(fashion_config, tmp_path / "resumed",
                                 after_step=interrupt_after(7))
    resumed = train.train_and_evaluate(fashion_config, tmp_path / "resumed")
    assert strip_times(resumed) == strip_times(reference)
    assert (tmp_path / "resumed/metrics.jsonl").read_text() == (
        tmp_path / "reference/metrics.jsonl").read_text()
    (step, arrays), (ref_step, ref_arrays) = (latest_checkpoint(tmp_path / "resumed"),
                                              latest_checkpoint(tmp_path / "reference"))
    assert step == ref_step == 12
    jax.tree.map(np.testing.assert_array_equal, arrays, ref_arrays)


def test_resume_on_other_data_is_refused_naming_both(tmp_path, tiny_config):
    """#28 N115: the data folder changed between the interruption and the rerun."""
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path / "run", after_step=interrupt_after(5))
    other = images_lib.write_synthetic_mnist(tmp_path / "other", num_train=700)
    recorded = (tmp_path / "run/data.json").read_text()
    tiny_config.data.dir = str(other)
    tiny_config.allow_config_change = True  # data.dir may change: the data may not
    with pytest.raises(WorkdirError, match=r"was trained on other data \(MNIST, fingerprint "
                                           r"\w+\) than this run loaded \(MNIST, fingerprint "
                                           r"\w+\).*a new --workdir"):
        train.train_and_evaluate(tiny_config, tmp_path / "run")
    assert (tmp_path / "run/data.json").read_text() == recorded


def test_fingerprint_tells_data_apart(tiny_config):
    datasets = images_lib.load_datasets(tiny_config.data)
    assert fingerprint(datasets) == fingerprint(images_lib.load_datasets(tiny_config.data))
    changed = datasets.train.inputs.copy()
    changed[0, 0, 0, 0] += 1e-3
    assert fingerprint(datasets._replace(train=datasets.train._replace(inputs=changed))) != (
        fingerprint(datasets))


def test_resume_with_a_schedule_that_ends_before_the_checkpoint_is_refused(tmp_path, tiny_config):
    """#28 N118: num_epochs shrunk to at or below the checkpoint's step under
    allow_config_change: refused with the epochs that would continue it."""
    tiny_config.num_epochs = 4  # 16 steps
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path, after_step=interrupt_after(9))
    tiny_config.num_epochs, tiny_config.allow_config_change = 2, True  # ends at step 8
    with pytest.raises(WorkdirError, match=r"checkpoint at step 8, at or past the end of this "
                                           r"schedule \(num_epochs=2: 8 steps\).*num_epochs >= 3"):
        train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.num_epochs = 3  # ends after the checkpoint: resumes and finishes properly
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    assert summary["best_test_loss"] is not None and summary["final_test_loss"] is not None


def test_a_seed_batch_too_large_for_memory_is_refused_before_the_workdir(tmp_path, tiny_config):
    """#28 N044: num_seeds=100000 grew to 8 GB with no word; now one line up front."""
    tiny_config.num_seeds = 10**7  # ~3.5 TB of train states
    with pytest.raises(ValueError, match=r"config.num_seeds=10000000 needs about [\d.]+ GiB for "
                                         r"the train states alone .* train at most about \d+"):
        train.train_and_evaluate(tiny_config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unreadable_data_is_a_reading_error_not_a_disk_error(tmp_path, tiny_config, monkeypatch):
    """#28 N080/N081: a data file or folder this user cannot read is named as a reading
    problem, not 'Cannot write ...' with disk advice (a folder before the workdir exists)."""
    from pathlib import Path

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ValueError, match=r"Cannot read .*train-images-idx3-ubyte.gz: Permission "
                                         r"denied. Make the file readable for this user."):
        train.train_and_evaluate(tiny_config, tmp_path / "run")
    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(ValueError, match=r"Cannot read MNIST folder .*: Permission denied"):
        train.train_and_evaluate(tiny_config, tmp_path / "other")
    assert not (tmp_path / "other").exists()
