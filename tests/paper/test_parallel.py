"""Scaling out (agile/paper/parallel.py): seeds vmapped in one program, pmap/shard_map data
parallelism on 4 host devices, and two processes that train like one."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from agile_testing import REPO_ROOT, assert_trees_close, first_fast  # noqa: E402

from agile.paper import config as config_lib
from agile.paper import parallel, train
from agile.paper import steps as steps_lib

RTOL = 1e-5
ATOL = 2e-6  # Adam normalises tiny gradients, so near-zero weights differ by rounding.
CLOSE = {"rtol": RTOL, "atol": ATOL}
RUN_RTOL = 1e-4  # Whole runs at a high learning rate: rounding grows over the steps.
SUMMARY_FIELDS = ("seed", "steps", "early_stopped", "best_step")
SUMMARY_LOSSES = ("best_test_loss", "final_test_loss", "final_test_accuracy", "min_test_loss")


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _assert_rows_close(actual: list[dict], expected: list[dict], rtol: float) -> None:
    """Same steps, same metrics in each row (test metrics only where evaluated), close values."""
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    for a, e in zip(actual, expected, strict=True):
        keys = sorted(k for k, v in e.items() if isinstance(v, float))
        assert sorted(k for k, v in a.items() if isinstance(v, float)) == keys
        np.testing.assert_allclose([a[k] for k in keys], [e[k] for k in keys], rtol=rtol)


def _random_data(num: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (num, 28, 28, 1)).astype(np.float32)
    return images, (np.arange(num) % 10).astype(np.int32)



def test_seed_batches_cannot_be_combined_with_data_parallelism(tiny_config):
    tiny_config.update(num_seeds=2, parallel="pmap")
    with pytest.raises(ValueError, match="num_seeds=2 needs config.parallel='none'"):
        config_lib.validate(tiny_config)


@pytest.mark.parametrize("batching, chunk", first_fast(
    [("scan", 1), ("vmap", 1), ("map", 1), ("map", 2)], multiple_args=True))
def test_seed_batch_steps_equal_separate_single_seed_steps(tiny_config, batching, chunk):
    """K=3 stacked states take the same steps as three single-seed states, any batching."""
    seeds = (0, 1, 2)
    tiny_config.num_seeds = len(seeds)
    tiny_config.seed_batching = batching
    tiny_config.seed_chunk_size = chunk
    layout = steps_lib.make_layout(tiny_config)
    images, labels = _random_data()
    singles = [steps_lib.create_train_state(tiny_config, jax.random.key(seed)) for seed in seeds]
    single_accums = [steps_lib.new_train_accumulator() for _ in seeds]
    batched = layout.place(singles)
    batched_accum = layout.place(single_accums)
    active = np.ones(len(seeds), bool)
    for step in range(3):
        indices = np.stack([np.random.default_rng([s, step]).permutation(120)[:30] for s in seeds])
        batched, batched_accum = layout.step(
            batched, batched_accum, images, labels, indices.astype(np.int32), active
        )
        for i in range(len(seeds)):
            singles[i], single_accums[i] = steps_lib.compiled_step(
                singles[i], single_accums[i], images, labels, indices[i].astype(np.int32)
            )
    for i in range(len(seeds)):
        assert_trees_close(layout.seed_view(batched.params, i), singles[i].params, **CLOSE)
        assert_trees_close(layout.seed_view(batched_accum, i), single_accums[i], **CLOSE)


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["scan", "vmap", "map"])
def test_inactive_seed_keeps_its_state(tiny_config, batching):
    tiny_config.num_seeds = 2
    tiny_config.seed_batching = batching
    layout = steps_lib.make_layout(tiny_config)
    images, labels = _random_data()
    state = layout.place([steps_lib.create_train_state(tiny_config, jax.random.key(s))
                          for s in (0, 1)])
    before = jax.device_get(state.params)
    accum = layout.place([steps_lib.new_train_accumulator()] * 2)
    indices = np.zeros((2, 30), np.int32)
    state, _ = layout.step(state, accum, images, labels, indices, np.array([True, False]))
    assert np.asarray(state.step).tolist() == [1, 0]
    assert_trees_close(layout.seed_view(state.params, 1), layout.seed_view(before, 1), **CLOSE)
    assert not np.allclose(layout.seed_view(state.params, 0)["output"]["kernel"],
                           layout.seed_view(before, 0)["output"]["kernel"])


@pytest.fixture(scope="module")
def separate_run(tmp_path_factory):
    """``separate_run(config)``: the summary and rows of ``config``'s single-seed run, trained
    once per (data.order_seed, seed) in this process and shared by the batchings of the test
    below: one seed is one device's run whatever ``seed_batching`` says (parallel.make_layout),
    so the same separate runs were trained again for each batching."""
    root, runs = tmp_path_factory.mktemp("separate_runs"), {}

    def run(config):
        assert config.num_seeds == 1 and config.parallel == "none"
        key = (config.data.order_seed, config.seed)
        if key not in runs:
            workdir = root / f"order_{key[0]}_seed_{key[1]}"
            runs[key] = train.train_and_evaluate(config, workdir), _rows(workdir)
        return runs[key]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("batching, order_seed", [("scan", None), ("vmap", None),
                                                  ("map", None), ("vmap", 7), ("scan", 7)])
def test_num_seeds_run_equals_separate_runs(tmp_path, tiny_config, batching, order_seed,
                                            separate_run):
    """Seeds 3..5 in one run: per-seed metrics and summaries equal three single-seed runs,
    including seeds that stop early at different steps; with one batch order for all seeds
    (data.order_seed), equal to single-seed runs with that order."""
    tiny_config.update(seed=3, num_epochs=4, learning_rate=0.01, agile_learning_rate=0.01)
    tiny_config.seed_batching = batching
    tiny_config.data.order_seed = order_seed
    tiny_config.patience = 1
    tiny_config.num_seeds = 3
    together = train.train_and_evaluate(tiny_config, tmp_path / "together")
    rows = _rows(tmp_path / "together")
    assert together["num_seeds"] == 3 and [s["seed"] for s in together["seeds"]] == [3, 4, 5]
    tiny_config.num_seeds = 1
    for seed_summary in together["seeds"]:
        tiny_config.seed = seed_summary["seed"]
        alone, alone_rows = separate_run(tiny_config)
        for field in SUMMARY_FIELDS:
            assert seed_summary[field] == alone[field], field
        for field in SUMMARY_LOSSES:
            np.testing.assert_allclose(seed_summary[field], alone[field], rtol=RUN_RTOL)
        seed_rows = [row for row in rows if row["seed"] == tiny_config.seed]
        _assert_rows_close(seed_rows, alone_rows, RUN_RTOL)
    losses = [s["final_test_loss"] for s in together["seeds"]]
    np.testing.assert_allclose(together["mean"]["final_test_loss"], np.mean(losses))
    np.testing.assert_allclose(together["std"]["final_test_loss"], np.std(losses, ddof=1))
    tiny_config.update(seed=3, num_seeds=3)
    again = train.train_and_evaluate(tiny_config, tmp_path / "together")  # Restores, finished.
    assert [s["final_test_loss"] for s in again["seeds"]] == losses


# --- Four host devices and two processes (subprocesses: XLA_FLAGS must precede jax) -------

FOUR_DEVICE_CHECK = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from agile.paper import config as config_lib
    from agile.paper import parallel, steps as steps_lib, train
    from agile.paper.config import get_config
    from agile.paper.summary import TIMING_FIELDS

    config = get_config(12)
    config.update(batch_size=40, num_epochs=2, log_every_steps=2, checkpoint_every_steps=3)
    config.data.update(source="idx", dir=sys.argv[1], train_size=200, val_size=100,
                       test_size=100, eval_batch_size=64)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (120, 28, 28, 1)).astype(np.float32)
    labels = (np.arange(120) % 10).astype(np.int32)
    batches = [rng.permutation(120)[:40].astype(np.int32) for _ in range(4)]
    out = {"devices": jax.device_count()}
    for mode in ("none", "pmap", "shard_map"):
        config.update(parallel=mode, optimizer="sgd", learning_rate=0.1, agile_learning_rate=0.1)
        layout = steps_lib.make_layout(config)
        state = layout.place([steps_lib.create_train_state(config, jax.random.key(0))])
        placed_images, placed_labels = layout.place_data(images), layout.place_data(labels)
        losses = []
        for indices in batches:
            accum = layout.place([steps_lib.new_train_accumulator()])
            state, accum = layout.step(state, accum, placed_images, placed_labels,
                                       layout.place_indices(indices), np.array([True]))
            losses.append(float(layout.seed_view(accum, 0)["loss_sum"]))
        params = jax.device_get(layout.seed_view(state.params, 0))
        out[mode] = {"losses": losses,
                     "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(params)]}
        config.update(optimizer="adam", learning_rate=1e-3, agile_learning_rate=1e-3)
        workdir = f"{sys.argv[2]}/{mode}"
        summary = train.train_and_evaluate(config, workdir)
        train.train_and_evaluate(config, workdir)  # A finished run restores its checkpoint.
        out[mode]["rows"] = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
        if mode == "shard_map":  # Interrupted after step 4 (checkpoint at 3), then resumed.
            def interrupt(step):
                if step == 4:
                    raise KeyboardInterrupt
            try:
                train.train_and_evaluate(config, workdir + "_resumed", after_step=interrupt)
            except KeyboardInterrupt:
                pass
            resumed = train.train_and_evaluate(config, workdir + "_resumed")
            out["resume"] = {
                "rows_equal": open(workdir + "_resumed/metrics.jsonl").read()
                == open(f"{workdir}/metrics.jsonl").read(),
                "summary_equal": {k: v for k, v in resumed.items() if k not in TIMING_FIELDS}
                == {k: v for k, v in summary.items() if k not in TIMING_FIELDS},
            }
    config.batch_size = 50
    try:
        config_lib.validate(config)
    except ValueError as err:
        out["indivisible_error"] = str(err)
    print("RESULT" + json.dumps(out))
    """
)


def _run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_pmap_and_shard_map_on_four_devices_match_one_device(tmp_path, synthetic_mnist_dir):
    result = _run(
        [sys.executable, "-c", FOUR_DEVICE_CHECK, str(synthetic_mnist_dir), str(tmp_path)],
        parallel.host_device_env(4),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    assert out["devices"] == 4
    assert out["resume"] == {"rows_equal": True, "summary_equal": True}  # shard_map resumes exactly
    assert "batch_size=50 is not divisible by the 4 devices" in out["indivisible_error"]
    reference = out["none"]
    for mode in ("pmap", "shard_map"):
        np.testing.assert_allclose(out[mode]["losses"], reference["losses"], rtol=RTOL)
        for actual, expected in zip(out[mode]["params"], reference["params"], strict=True):
            np.testing.assert_allclose(actual, expected, **CLOSE)
        _assert_rows_close(out[mode]["rows"], reference["rows"], RUN_RTOL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_two_processes_match_one(tmp_path, synthetic_mnist_dir, mode):
    flags = ["--config=configs/combo_12.py", "--config.num_epochs=2", "--config.batch_size=40",
             "--config.data.train_size=200", "--config.data.val_size=100",
             "--config.data.test_size=100", "--config.checkpoint_every_steps=3"]
    env = {"MNIST_DIR": str(synthetic_mnist_dir)}
    single = _run([sys.executable, "scripts/train.py", *flags, f"--workdir={tmp_path / 'one'}"],
                  env)
    assert single.returncode == 0, single.stderr[-3000:]
    address = f"127.0.0.1:{_free_port()}"
    processes = [
        subprocess.Popen(
            [sys.executable, "scripts/train.py", *flags, f"--config.parallel={mode}",
             f"--workdir={tmp_path / 'two'}", f"--coordinator_address={address}",
             "--num_processes=2", f"--process_id={i}", "--coordinator_wait_s=600"],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in one] == [5, 10]
    _assert_rows_close(two, one, RTOL)
    summary = json.loads((tmp_path / "two/summary.json").read_text())
    assert summary["steps"] == 10
    assert sorted(p.name for p in (tmp_path / "two/checkpoints").iterdir()) == ["10", "9"]


@pytest.mark.slow
def test_an_unreachable_coordinator_is_one_line_within_the_wait(tmp_path):
    """N125: the README's multi-host command with nothing at --coordinator_address waited 5
    minutes, then aborted with a C++ stack trace. A process other than 0 now gives up after
    --coordinator_wait_s with one line, and no workdir is made."""
    address = f"127.0.0.1:{_free_port()}"
    result = _run([sys.executable, "scripts/train.py", "--config=configs/combo_07.py",
                   f"--workdir={tmp_path / 'w'}", f"--coordinator_address={address}",
                   "--num_processes=2", "--process_id=1", "--coordinator_wait_s=1"], {},
                  timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Nothing answers at --coordinator_address={address} (Connection refused) after "
        "1 s: start process 0 (--process_id=0) on that host first, or check the host and port "
        "(--coordinator_wait_s waits longer).")
    assert not (tmp_path / "w").exists()


def test_auto_seed_batching_is_scan_on_cpu_and_map_or_vmap_on_accelerators(monkeypatch):
    """CPU: scan (measured); GPU/TPU: map, or vmap when the seeds share one batch order
    (then the convolutions stay dense under vmap). Was vmap on accelerators before #19."""
    assert parallel.resolve_seed_batching("auto") == "scan"  # these tests run on the CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert parallel.resolve_seed_batching("auto") == "map"
    assert parallel.resolve_seed_batching("auto", shared_order=True) == "vmap"
    assert parallel.resolve_seed_batching("scan") == "scan"


def test_host_device_env_sizes_xla_threads_for_collectives():
    env = parallel.host_device_env(4)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    assert int(env["NPROC"]) >= 8  # at least two launch threads per device
    with pytest.raises(ValueError, match="count must be a positive number of devices"):
        parallel.host_device_env(0)


def test_data_parallel_layouts_bound_how_far_the_host_runs_ahead():
    assert parallel.DataParallel.max_steps_in_flight == 16 < 32  # XLA:CPU's queue limit
    assert parallel.SingleDevice.max_steps_in_flight is None
