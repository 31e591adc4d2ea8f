"""benchmarks/benchmarking.py (timing helpers), and the benchmark programs with tiny settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agile_testing import BENCHMARKS, REPO_ROOT, load_module

benchmarking = load_module(BENCHMARKS / "benchmarking.py")

def _counting_runner(calls: list[str], name: str) -> benchmarking.Runner:
    def run(state):
        calls.append(name)
        return state + 1

    return 0, run


def test_time_round_robin_interleaves_warms_up_and_threads_state():
    calls = []
    runners = {name: _counting_runner(calls, name) for name in ("a", "b")}
    seconds = benchmarking.time_round_robin(runners, rounds=3, warmup_rounds=2)
    assert calls == ["a", "b"] * 5
    assert {name: len(times) for name, times in seconds.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for times in seconds.values() for t in times)
    with pytest.raises(ValueError, match="rounds >= 1"):
        benchmarking.time_round_robin(runners, rounds=0)


def test_median_and_p20_and_per_unit():
    median, p20 = benchmarking.median_and_p20({"x": [5.0, 1.0, 3.0, 2.0, 4.0]})
    assert median == {"x": 3.0} and p20 == {"x": pytest.approx(1.8)}
    assert benchmarking.per_unit({"x": [2.0, 4.0]}, units=4, scale=1e3) == {"x": [500.0, 1000.0]}


def _run_script(script: str, tmp_path: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), f"--output_dir={tmp_path}",
         "--rounds=2", "--steps_per_round=1", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_step_benchmark_writes_json_and_markdown(tmp_path):
    stdout = _run_script("benchmark.py", tmp_path, "--combos=7,12", "--warmup_steps=1",
                         "--baseline_rev=HEAD")
    summary = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(summary["median_ms_per_step"]) == {
        "combo_7", "combo_12", "straightforward", "base_combo_7", "base_combo_12"}
    assert set(summary["baseline_over_ours"]) == {"base_combo_7", "base_combo_12"}
    assert all(len(v) == 2 for v in summary["per_round_ms_per_step"].values())
    assert set(summary["agile_over_plain"]) == {"12/7"}
    targets = {"combo_7 <= 4.5 ms", "combo_12 <= 6.5 ms", "12/7 <= 1.25"}
    assert set(summary["targets_met"]) == targets
    table = (tmp_path / "benchmark.md").read_text()
    assert table in stdout
    assert "| combo_12 | agile_relu / agile_sigmoid |" in table
    assert "Agile / plain, same net (target <= 1.25): 12/7:" in table
    assert "Straightforward / ours, combo 7:" in table and "Targets: combo_7 <= 4.5 ms:" in table
    assert "| base_combo_12 | agile_relu / agile_sigmoid |" in table
    assert "Baseline revision / ours: combo_7: " in table


@pytest.mark.slow
def test_scaling_benchmark_writes_json_and_markdown(tmp_path):
    _run_script("benchmark_scaling.py", tmp_path, "--scaling_seeds=2", "--scaling_devices=2",
                "--batch_size=8")
    results = json.loads((tmp_path / "scaling.json").read_text())
    assert results["num_seeds"] == 2 and results["devices"] == [2]
    assert set(results["data_parallel_ms_per_step"]) == {"pmap_2", "shard_map_2"}
    assert set(results["seed_batches"]) == {"scan", "vmap", "map"}
    assert all(entry["speedup"] > 0 and entry["models_per_s"] > 0
               for entry in results["seed_batches"].values())
    table = (tmp_path / "scaling.md").read_text()
    assert "| 2 seeds in one program, seed_batching=scan |" in table
    assert "| 2 seeds in one program, seed_batching=vmap |" in table
    assert "| shard_map |" in table


def _profile_script():
    return load_module(BENCHMARKS / "profile_step.py")


def test_profile_step_parses_hlo_instructions_and_classifies_them():
    profile_step = _profile_script()
    line = ('  %cond.2 = (s8[100,14,14,16]{3,2,1,0}, f32[4]{0}) conditional(%p, %a, %a), '
            'branch_computations={%region_0.1, %region_1.2}, metadata={op_name='
            '"jit(train_step)/jvp(CNN)/CNN._fast_block/conv_0/cond"}')
    op = profile_step.parse_instruction(line)
    assert (op.name, op.opcode, op.operands, op.branches) == (
        "cond.2", "conditional", ["p", "a", "a"], ("region_0.1", "region_1.2"))
    assert profile_step.shape_bytes(op.shape) == 100 * 14 * 14 * 16 + 16
    assert profile_step.phase_of(op.op_name) == "forward"
    assert profile_step.phase_of("jit(train_step)/transpose(jvp(CNN))/conv_1/x") == "backward"
    assert profile_step.phase_of("jit(train_step)/add") == "optimizer"
    assert profile_step.layer_of(op, {}) == "block 0"
    assert [profile_step.spatial_block(d) for d in [(100, 14, 2, 14, 2, 16), (78400, 9),
                                                    (100, 7, 7, 4), (30, 10)]] == [0, 0, 2, None]


@pytest.mark.slow
def test_profile_step_writes_markdown(tmp_path):
    output = tmp_path / "profile.md"
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "profile_step.py"), "--combos=12",
         "--steps=3", "--wall_rounds=1", "--top=4", f"--output={output}"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = output.read_text()
    assert "### Combo 12 (agile_relu / agile_sigmoid), implementation=fast" in text
    assert "| phase | block 0 | block 1 | block 2 | dense | other | total |" in text
    assert "| backward |" in text and "By kind:" in text and "Top 4 ops" in text
    assert "Inside the conditionals" in text and "first block's 100 x 28 x 28 x 16 map" in text


@pytest.mark.slow
def test_accelerator_benchmark_quick_writes_every_part(tmp_path, synthetic_mnist_dir):
    """benchmarks/accelerator.py --quick (as CI runs it): devices, step times, seed batches by
    strategy, start-up cold and warm, a short sweep one at a time and in parallel."""
    import os

    env = {**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)}
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "accelerator.py"), "--quick", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=900, cwd=REPO_ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "accelerator.json").read_text())
    assert results["devices"]["backend"] == "cpu"
    assert set(results["step_ms"]) == {"combo_07", "combo_12"}
    assert set(results["seed_batches"]) == {"scan", "vmap", "map", "vmap_shared_order"}
    assert set(results["seed_batches"]["scan"]) == {"1", "2"}
    assert all(rate > 0 for rates in results["seed_batches"].values() for rate in rates.values())
    assert set(results["start_up"]) == {"cold", "warm"}
    assert results["sweep"]["one_at_a_time"]["workers"] == 1
    table = (tmp_path / "accelerator.md").read_text()
    assert "| short sweep | workers | wall | models/s |" in table


@pytest.mark.slow
def test_benchmark_models_prints_the_transformer_table(capsys):
    """benchmarks/benchmark_models.py with a tiny transformer: a row per variant and the
    agile/plain ratio (torch rows only with --torch and torch importable)."""
    module = load_module(BENCHMARKS / "benchmark_models.py")
    module.main(["--models=transformer", "--rounds=1", "--steps=1", "--context=8",
                 "--layers=1", "--width=16", "--heads=2", "--transformer_batch=2"])
    out = capsys.readouterr().out
    for row in ("| transformer gelu |", "| transformer agile_gelu |",
                "| transformer gelu (dot_product) |", "transformer agile/plain: "):
        assert row in out
    assert "torch" not in out


@pytest.mark.slow
def test_benchmark_models_times_the_resnet_at_the_widths_it_is_given(capsys):
    """benchmarks/benchmark_models.py --resnet_widths: the ResNet rows and its ratios, built
    at the given widths; a bad list is argparse's one-line error (exit status 2)."""
    module = load_module(BENCHMARKS / "benchmark_models.py")
    module.main(["--models=resnet", "--rounds=1", "--steps=1", "--resnet_batch=2",
                 "--resnet_widths=2,4"])
    out = capsys.readouterr().out
    for row in ("| resnet relu |", "| resnet agile_relu |", "resnet agile/plain: "):
        assert row in out
    for bad in ("8,x", "8,0", ""):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--models=resnet", f"--resnet_widths={bad}"])
        assert exit_info.value.code == 2
        assert f"expected positive integers like 8,16,32, got {bad!r}" in capsys.readouterr().err
