"""agile.paper.config: one set of defaults, one clear error for every bad field before any work."""

import os
import subprocess
import sys

import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.errors import ConfigError
from agile.paper import config as config_lib
from agile.paper import tasks, train
from agile.paper.combos import COMBOS


def test_defaults_are_valid_and_combos_pick_their_row():
    for combo, pair in COMBOS.items():
        config = config_lib.get_config(combo)
        config_lib.validate(config)
        assert (config.model.conv_activation, config.model.dense_activation) == pair
    assert config_lib.get_config().model.granularity == "element"  # the paper's choice


def test_create_model_gives_one_object_per_model_config():
    a, b = config_lib.get_config(12), config_lib.get_config(12)
    assert tasks.create_model(a) is tasks.create_model(b)  # jit caches compile once
    b.model.dense_features = 31
    assert tasks.create_model(a) is not tasks.create_model(b)


BAD_FIELDS = [
    ("seed", -1, r"config.seed must be an integer >= 0, got -1"),
    ("seed", 2**64, r"config.seed \+ num_seeds - 1 = 18446744073709551616 exceeds the largest "
     r"seed jax.random.key takes, 2\*\*63 - 1 = 9223372036854775807"),
    ("batch_size", 0, r"config.batch_size must be an integer >= 1, got 0"),
    ("batch_size", 6000, r"config.batch_size = 6000 exceeds the 5000 training images"),
    ("num_epochs", 0, r"config.num_epochs must be an integer >= 1"),
    ("optimizer", "rmsprop", r"Unknown optimizer 'rmsprop'. Valid: sgd, adam."),
    ("learning_rate", -1.0, r"config.learning_rate must be a positive number, got -1.0"),
    ("agile_learning_rate", 0.0, r"config.agile_learning_rate must be a positive number"),
    ("momentum", 1.0, r"config.momentum must be a number in \[0, 1\), got 1.0"),
    ("momentum", -0.5, r"config.momentum must be a number in \[0, 1\)"),
    ("eval_every_steps", -1, r"config.eval_every_steps must be an integer >= 0"),
    ("test_every", -2, r"config.test_every must be an integer >= 0"),
    ("log_every_steps", 0, r"config.log_every_steps must be an integer >= 1"),
    ("checkpoint_every_steps", 0, r"config.checkpoint_every_steps must be an integer >= 1"),
    ("patience", -1, r"config.patience must be an integer >= 0"),
    ("parallel", "tpu", r"Unknown config.parallel 'tpu'. Valid: none, pmap, shard_map."),
    ("num_seeds", 0, r"config.num_seeds must be an integer >= 1"),
    ("seed_batching", "loop", r"Unknown config.seed_batching 'loop'. Valid: auto, scan, vmap, "
     r"map."),
    ("seed_chunk_size", 0, r"config.seed_chunk_size must be an integer >= 1, got 0"),
    ("data.order_seed", -1, r"config.data.order_seed must be None or an integer in \[0, "
     r"2\*\*63 - 1\], got -1"),
    ("model.conv_activation", "swish", r"Unknown activation 'swish'"),
    ("model.dense_activation", "agile_swish", r"Unknown activation 'agile_swish'"),
    ("model.conv_activation", "combined:relu,swish", r"Unknown activation 'swish'"),
    ("model.granularity", "pixel", r"Unknown granularity 'pixel'"),
    ("model.pooling", "min", r"Unknown pooling 'min'"),
    ("model.implementation", "cuda", r"Unknown implementation 'cuda'"),
    ("model.conv_features", (16, 0, 4), r"conv_features must be a list of positive integers"),
    ("model.conv_features", (16, 8.5), r"conv_features must be a list of positive integers"),
    ("model.conv_features", (16, 8, 4, 2, 1), r"the 1x1 map before pooling 4 is smaller than"),
    ("model.kernel_size", (3,), r"config.model.kernel_size must be a pair of positive integers"),
    ("model.pool_size", (0, 2), r"config.model.pool_size must be a pair of positive integers"),
    ("model.dense_features", 0, r"config.model.dense_features must be an integer >= 1"),
    ("model.num_classes", 5, r"config.model.num_classes must be 10 \(the data's classes\), got 5"),
    ("data.source", "csv", r"Unknown data.source 'csv'. Valid: auto, idx, tfds."),
    ("data.train_size", 5005, r"config.data.train_size must be a non-negative multiple of 10"),
    ("data.val_size", -10, r"config.data.val_size must be a non-negative multiple of 10"),
    ("data.test_size", 10_010, r"config.data.test_size = 10010 exceeds MNIST's 10000 test"),
    ("data.name", "cifar10", r"Unknown config.data.name 'cifar10'. Valid: mnist, fashion_mnist"),
    ("model.name", "vgg", r"Unknown config.model.name 'vgg'. Valid: paper_cnn"),
    ("data.train_size", 59_990, r"train_size \+ val_size = 60990 exceeds MNIST's 60000"),
    ("data.eval_batch_size", 0, r"config.data.eval_batch_size must be an integer >= 1"),
    ("data.subset_seed", -3, r"config.data.subset_seed must be an integer >= 0"),
    ("num_seeds", True, r"config.num_seeds must be an integer >= 1, got True"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS,
                         ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS])
def test_bad_field_is_one_clear_error_before_any_work(tmp_path, field, value, message):
    config = config_lib.get_config(12)
    section, _, name = field.rpartition(".")
    with config.unlocked():
        (config[section] if section else config).__setattr__(name, value)
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)
    with pytest.raises(ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_last_seed_of_a_seed_batch_must_fit_the_prng():
    """#191: seed 2**63 - 1 alone is valid; with a second seed, seed + 1 overflows."""
    config = config_lib.get_config()
    config.seed = 2**63 - 1
    config_lib.validate(config)
    config.num_seeds = 2
    with pytest.raises(ConfigError, match=r"seed \+ num_seeds - 1 = 9223372036854775808 exceeds"):
        config_lib.validate(config)


@pytest.mark.parametrize("section", ["", "model.", "data."])
def test_unknown_field_is_refused(section):
    config = config_lib.get_config()
    target = config[section[:-1]] if section else config
    target.nope = 1
    with pytest.raises(ConfigError, match=rf"Unknown config field '{section}nope'"):
        config_lib.validate(config)


def _slow_cases(cases: list[tuple]) -> list:
    """Cases marked slow: each starts a script (about 3 s of CPU to import jax and flax), so
    the fast suite keeps one case per script and CI (which runs the slow tests) every case."""
    return [pytest.param(*case, marks=pytest.mark.slow) for case in cases]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--config.optimizer=lbfgs"], "error: Unknown optimizer 'lbfgs'. Valid: sgd, adam."),
    *_slow_cases([
        (["--config.nope=3"], "error: Unknown config field 'nope' in --config.nope."),
        (["--config.model.poolin=avg"], 'Did you mean "pooling" instead of "poolin"?'),
        (["--config.num_epochs=abc"], "error: flag --config.num_epochs=abc: invalid literal"),
        (["--config.data.val_size=15"], "config.data.val_size must be a non-negative multiple"),
        (["--workdir=README.md"], "error: Workdir README.md exists and is not a folder."),
    ]),
])
def test_cli_user_errors_are_one_line_with_status_2(args, message):
    result = _cli("--config=configs/combo_07.py", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script, args, outside_repo, message", [
    ("sweep.py", ["--seeds=0"], True,  # the default config is found from any folder
     "error: --seeds must be a positive integer, got 0."),
    *_slow_cases([
        ("train.py", ["--config=configs/nope.py"], False,
         "error: Cannot load --config=configs/nope.py: [Errno 2] No such file or directory"),
        ("sweep.py", ["--config.nope=1"], False,  # overrides of the default config
         "error: Unknown config field 'nope' in --config.nope."),
        ("sweep.py", ["--config.model.foo=1"], False,
         "error: Unknown config field 'foo' in --config.model.foo."),
        ("sweep.py", ["--config=configs/nope.py"], False,
         "error: Cannot load --config=configs/nope.py: [Errno 2] No such file or directory"),
        # N113: a config file that raises was a 754-character line holding its traceback.
        ("train.py", ["--config=configs/default.py:13"], False,
         "error: Cannot load --config=configs/default.py:13: Unknown combination 13: the "
         "paper's Table 1 has rows 1..12 (the text after ':' is passed to the config file's "
         "get_config)."),
        ("sweep.py", ["--config=configs/default.py:abc"], False,
         "error: Cannot load --config=configs/default.py:abc: invalid literal for int() with "
         "base 10: 'abc' (the text after ':' is passed to the config file's get_config)."),
    ]),
])
def test_config_file_errors_are_one_line_in_both_scripts(tmp_path, script, args, outside_repo,
                                                         message):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), f"--workdir={tmp_path / 'w'}", *args],
        cwd=tmp_path if outside_repo else REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_status_130():
    """KeyboardInterrupt inside a script's main: no traceback, the resume hint, status 130."""
    program = ("from agile.paper import cli\n"
               "def main(argv):\n    raise KeyboardInterrupt\n"
               "cli.run(main)\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 130
    assert result.stderr.strip() == (
        "Interrupted. Rerun the same command to resume from the last checkpoint.")


@pytest.mark.slow
def test_train_help_shows_the_config_flag_and_every_field_with_its_default():
    """#20: --help names --config and each --config.<field> with its default and its comment."""
    result = subprocess.run([sys.executable, "scripts/train.py", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1  # absl's --help exits with 1 after printing the usage
    text = result.stdout + result.stderr
    assert "--config: Path to a config file." in text
    assert "--config.num_epochs=200" in text and "--config.model.granularity=\"element\"" in text
    assert "Upper bound on training length; early stopping may end sooner." in text
    assert "--config.data.order_seed=None" in text and "--compilation_cache_dir" in text
    fields = [line for line in text.splitlines() if line.startswith("  --config.")]
    # Every field once per model or data source that defines it (a model's own fields follow
    # "Only where model.name = ...").
    configs = [config_lib.get_config(model=model, data=data)
               for model, data in (("paper_cnn", "mnist"), ("resnet", "fashion_mnist"),
                                   ("transformer", "text"))]
    flat = [set(_flat_fields(config)) for config in configs]
    data_common = set.intersection(*({f for f in fields_ if f.startswith("data.")}
                                     for fields_ in flat))
    shared = {f for f in flat[0] if not f.startswith(("model.", "data."))} | data_common | {
        "model.name"}
    own_model = [{f for f in fields_ if f.startswith("model.")} - shared for fields_ in flat]
    own_data = {frozenset({f for f in fields_ if f.startswith("data.")} - shared)
                for fields_ in flat}  # one per data kind (images, text)
    assert len(fields) == len(shared) + sum(map(len, own_model)) + sum(map(len, own_data))
    assert 'Only where model.name = "resnet"' in text and "--config.data.context=128" in text


def _flat_fields(config, prefix=""):
    names = []
    for key, value in config.items():
        if isinstance(value, type(config)):
            names += _flat_fields(value, f"{prefix}{key}.")
        else:
            names.append(prefix + key)
    return names


@pytest.mark.slow
def test_a_disk_error_outside_a_run_is_one_line():
    """Any script: a full or read-only disk where a script writes outside a run's own
    handling (a sweep's tables, a report) is one line, status 2; other OSErrors keep their
    traceback (bugs)."""
    program = ("import errno\nfrom agile.paper import cli\n"
               "def main(argv):\n"
               "    raise OSError(errno.ENOSPC, 'No space left on device', '/full/results.csv')\n"
               "cli.run(main)\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        "error: Cannot write /full/results.csv: [Errno 28] No space left on device.")
    other = program.replace("errno.ENOSPC", "errno.EBADF")
    result = subprocess.run([sys.executable, "-c", other], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr
