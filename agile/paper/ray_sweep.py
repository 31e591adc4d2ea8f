"""The Ray Tune backend of ``scripts/sweep.py``: each trial of a sweep as a Ray Tune trial.

A trial is one :class:`agile.paper.trials.Trial` (a combination with its seed batch): it runs
``agile.paper.train.train_and_evaluate`` in a Ray worker on the trial's own folder of the sweep
and reports each evaluation to Tune through the loop's ``after_evaluation`` hook. The files
are those of the in-process backend (one workdir per trial, ``results.csv``, ``results.md``)
and so are the numbers.

Faults. The trial's workdir is its checkpoint: a retried trial (``max_failures``) calls
``train_and_evaluate`` on the same folder, which resumes from its latest orbax checkpoint
bit-identically, so Tune's own checkpoints are not used (they would copy what orbax already
keeps). An interrupted sweep rerun with the same command starts a new Tune experiment with
the trials that have no ``summary.json`` yet (the rule of the in-process backend, so a sweep
can even be continued with the other backend); ``Tuner.restore`` is not used, because it
would replay the old trial list and ignore a changed ``--combos``.

Ray is imported on first use: ``import agile`` and the in-process sweep never need it.
Ray runs without network: no dashboard, no usage reporting.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from agile.errors import ConfigError
from agile.paper import sweep, tasks
from agile.paper.trials import Trial, TrialContext, hook_function, load_trial_hook
from agile.paper.workdir import Lock, WorkdirError, prepare

RAY_ENV = {  # Set (unless already set) before Ray starts: nothing leaves the machine.
    "RAY_USAGE_STATS_ENABLED": "0",  # No usage statistics.
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
}
TUNE_FOLDER = "ray_tune"  # Tune's own experiment files, inside the sweep folder.
LOCK_WAIT_S = 120.0  # How long a retried trial waits for a dying predecessor's workdir lock.
CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class Options:
    """How the trials are scheduled: resources per trial, concurrency, cluster, retries."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # Fractions share a GPU between trials.
    max_concurrent: int = 0  # 0: as many as the cluster's resources allow.
    address: str | None = None  # None: a local Ray for this run; "auto" or "host:port".
    max_failures: int = 3  # Retries of a trial whose worker died or raised.
    trial_hook: str | None = None  # "module:function" making each trial's after_step hook.

    def validate(self) -> None:
        """Raises ConfigError (one line) for a value no cluster could use."""
        if not self.cpus_per_trial > 0:
            raise ConfigError(f"--cpus_per_trial must be > 0, got {self.cpus_per_trial}.")
        if not self.gpus_per_trial >= 0:
            raise ConfigError(f"--gpus_per_trial must be >= 0, got {self.gpus_per_trial}.")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ConfigError(f"--gpus_per_trial above 1 must be a whole number, got "
                              f"{self.gpus_per_trial}.")
        if self.max_concurrent < 0:
            raise ConfigError(f"--max_concurrent must be >= 0, got {self.max_concurrent}.")
        if self.max_failures < 0:
            raise ConfigError(f"--max_failures must be >= 0, got {self.max_failures}.")
        if self.trial_hook:
            hook_function(self.trial_hook)  # importable here, so in the workers too


def require_ray():
    """Imports and returns ``ray`` (with Tune), or raises one line saying how to install it."""
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError as err:
        raise sweep.SweepError(
            f"--backend=ray needs Ray Tune, which cannot be imported ({err}); install it with "
            "pip install -r requirements.txt (or pip install 'ray[tune]==2.60.0')."
        ) from None
    return ray


# ---------------------------------------------------------------------------------------------
# The cluster: started or joined, checked for the resources a trial asks for.


def _host_port(address: str) -> tuple[str, int]:
    """``host`` and ``port`` of ``host:port`` or ``ray://host:port`` (GCS default 6379)."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, 10001 if address.startswith("ray://") else 6379
    if not port.isdigit():
        raise ConfigError(f"--ray_address must be 'auto' or host:port, got {address!r}.")
    return host.strip("[]"), int(port)


def _resolve(address: str) -> str:
    """``auto`` as the address of the running cluster it means (one line if there is none)."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # Another Ray version: let ray.init find it.
        return address
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as err:
        raise sweep.SweepError(
            f"--ray_address=auto found no running Ray cluster ({err.args[0].split('.')[0]}); "
            "start one with `ray start --head`, or leave --ray_address out for a local Ray."
        ) from None


def _check_reachable(address: str, shown: str) -> None:
    """Raises one line unless a TCP connection to ``address`` opens (Ray itself would retry
    for minutes)."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise sweep.SweepError(
            f"Cannot reach the Ray cluster at --ray_address={shown} ({host}:{port}: {reason}); "
            "check that `ray start --head` runs there and the port is open, or leave "
            "--ray_address out for a local Ray."
        ) from None


def _connect_error(address: str, err: ConnectionError) -> str:
    """One line for a cluster that answered but refused us or is not a Ray cluster."""
    cause = f"{err} {err.__cause__ or ''}"
    if "Unauthenticated" in cause or "AuthToken" in cause:
        return (f"The Ray cluster at --ray_address={address} refused this driver's "
                "authentication token; set RAY_AUTH_MODE=token and make the cluster's token "
                "available here (~/.ray/auth_token, where `ray start --head` wrote it, or "
                "RAY_AUTH_TOKEN).")
    return (f"Cannot connect to a Ray cluster at --ray_address={address} "
            f"({str(err).splitlines()[0]}); give the head node's GCS address (`ray start "
            "--head` prints it; port 6379 by default).")


SOCKET_PATH_MAX = 107  # AF_UNIX socket paths: 108 bytes with the final NUL (Linux)
# What a local Ray adds to its temp dir for its longest socket:
# /ray/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store
RAY_SOCKET_SUFFIX = len("/ray/session_2026-12-07_13-04-26_123456_4194304/sockets/plasma_store")


def _check_temp_dir() -> None:
    """One line, before Ray starts, when the sockets a local Ray makes in its temp dir
    (``$RAY_TMPDIR``, else ``$TMPDIR`` or /tmp) would pass the socket path limit."""
    try:
        from ray._common.utils import get_default_system_temp_dir
    except ImportError:  # Another Ray version: it checks the path itself.
        return
    folder = get_default_system_temp_dir()
    longest = len(os.fsencode(folder)) + RAY_SOCKET_SUFFIX
    if longest > SOCKET_PATH_MAX:
        raise sweep.SweepError(
            f"A local Ray keeps its sockets in {folder}/ray/session_…/sockets/, {longest} bytes "
            f"long, and a socket path may have at most {SOCKET_PATH_MAX}; set RAY_TMPDIR to a "
            f"folder of at most {SOCKET_PATH_MAX - RAY_SOCKET_SUFFIX} characters (e.g. /tmp).")


def connect(options: Options) -> Callable[[], None]:
    """Starts a local Ray or joins ``options.address``; returns the function that leaves it.

    A local Ray keeps its files in Ray's temp dir (``/tmp/ray`` or ``$RAY_TMPDIR``). A Ray
    already initialised in this process is used as it is (and left running).
    """
    ray = require_ray()
    if ray.is_initialized():
        return lambda: None
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    common = {"include_dashboard": False, "logging_level": "warning"}
    with warnings.catch_warnings():  # Ray starts its processes by fork+exec: safe with JAX.
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        if options.address is None:
            _check_temp_dir()
            ray.init(address="local", **common)
        else:
            address = _resolve(options.address)
            _check_reachable(address, options.address)
            try:
                ray.init(address=address, **common)
            except ConnectionError as err:  # The port answers, but not a Ray that lets us in.
                raise sweep.SweepError(_connect_error(options.address, err)) from None
    return ray.shutdown


def _largest_node(ray) -> dict[str, float]:
    """The most CPUs and GPUs any one live node offers (a trial runs on one node)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    return {kind: max((node.get(kind, 0.0) for node in nodes), default=0.0)
            for kind in ("CPU", "GPU")}


def check_resources(ray, options: Options) -> dict[str, float]:
    """Raises one line if no node of the cluster has what one trial asks for."""
    largest = _largest_node(ray)
    total_gpus = ray.cluster_resources().get("GPU", 0.0)
    if options.gpus_per_trial > largest["GPU"]:
        raise sweep.SweepError(
            f"--gpus_per_trial={options.gpus_per_trial:g} asks for more GPUs than the Ray "
            f"cluster has on one node ({largest['GPU']:g}; {total_gpus:g} in all), so no trial "
            "could start. Use a smaller --gpus_per_trial (fractions share a GPU)."
        )
    if options.cpus_per_trial > largest["CPU"]:
        raise sweep.SweepError(
            f"--cpus_per_trial={options.cpus_per_trial:g} asks for more CPUs than the Ray "
            f"cluster has on one node ({largest['CPU']:g}), so no trial could start."
        )
    return largest


# ---------------------------------------------------------------------------------------------
# The trial, as it runs in a Ray worker.


def tune_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What Tune gets for one evaluation's rows: each number's mean over the rows (seeds) and,
    for a seed batch, each seed's numbers under ``seeds/<seed>/`` (a and b ranges stay in
    ``metrics.jsonl``: dozens of values per row would drown Tune's tables)."""
    def numbers(row):
        return {key: value for key, value in row.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                and key != "seed"}

    per_row = [numbers(row) for row in rows]
    shared = [key for key in per_row[0] if all(key in row for row in per_row)]
    metrics: dict[str, Any] = {key: sum(row[key] for row in per_row) / len(per_row)
                               for key in shared}
    metrics["step"] = max(row["step"] for row in rows)
    if "seed" in rows[0]:
        metrics["seeds"] = {str(row["seed"]): values
                            for row, values in zip(rows, per_row, strict=True)}
    return metrics


def _wait_for_lock(workdir: Path, timeout_s: float = LOCK_WAIT_S) -> None:
    """Waits until no other process holds the trial's workdir lock (a predecessor dying)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with Lock(workdir):
                return
        except WorkdirError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def jax_config_value(name: str):
    """A JAX config value of the driver (JAX is imported by then)."""
    import jax

    return getattr(jax.config, name)


def _use_devices(gpus_per_trial: float, cpu_only: bool) -> None:
    """Before JAX starts here: CPU for a trial that asked for no GPU on a cluster with GPUs;
    no 75% preallocation each for processes sharing a GPU."""
    if cpu_only:
        import jax

        jax.config.update("jax_platforms", "cpu")
    elif 0 < gpus_per_trial < 1:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def run_trial(params: dict[str, Any], *, trials: dict[str, Trial], sweep_dir: str,
              setup: dict[str, Any]) -> None:
    """Tune's function trainable: trains ``trials[params["trial"]]`` in its sweep folder.

    A user error (NaN loss, a refused workdir) is reported as ``error`` and ends the trial
    (retrying cannot fix it); anything else fails the attempt and Tune retries it.
    """
    from ray import tune

    os.environ.update(setup["env"])
    if Path(setup["cwd"]).is_dir():
        os.chdir(setup["cwd"])  # Relative paths in the config mean what they meant to the driver.
    _use_devices(setup["gpus_per_trial"], setup["cpu_only"])
    from agile.errors import UserError
    from agile.paper import train

    if setup.get("compilation_cache"):  # the driver's cache: trials share what it compiled
        import jax

        jax.config.update("jax_compilation_cache_dir", setup["compilation_cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    trial = trials[params["trial"]]
    workdir = prepare(Path(sweep_dir) / trial.name)
    _wait_for_lock(workdir)
    context = TrialContext(trial.name, workdir, tuple(trials), Path(sweep_dir),
                           setup["driver_pid"])
    after_step = load_trial_hook(setup["trial_hook"], context)
    try:
        train.train_and_evaluate(trial.config, workdir, after_step=after_step,
                                 after_evaluation=lambda rows: tune.report(tune_metrics(rows)))
    except UserError as err:
        tune.report({"error": " ".join(str(err).split())})


# ---------------------------------------------------------------------------------------------
# The driver: which trials to run, Tune's experiment, progress lines and the tables.


def _progress_callback(sweep_dir: Path):
    """A Tune callback: one log line per evaluation and per fault; tables after each trial."""
    from ray import tune

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            name = trial.config["trial"]
            if "error" in result:
                logging.error("%s stopped: %s", name, result["error"])
                return
            shown = {k: v for k, v in result.items() if k.endswith(("_loss", "_accuracy"))}
            logging.info("%s step %d: %s", name, result["step"],
                         ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))

        def on_trial_recover(self, iteration, trials, trial, **info):
            logging.warning("%s failed (%d so far); retrying, resuming from its checkpoint.",
                            trial.config["trial"], trial.num_failures)

        def on_trial_complete(self, iteration, trials, trial, **info):
            sweep.write_tables(sweep_dir)

    return Progress()


def _tuner(sweep_dir: Path, pending: list[Trial], options: Options, setup: dict[str, Any]):
    from ray import tune

    trainable = tune.with_parameters(run_trial, trials={t.name: t for t in pending},
                                     sweep_dir=str(sweep_dir), setup=setup)
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    name_of = lambda trial: trial.config["trial"]  # noqa: E731
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"trial": tune.grid_search([t.name for t in pending])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=options.max_concurrent or None, reuse_actors=False,
            trial_name_creator=name_of, trial_dirname_creator=name_of),
        run_config=tune.RunConfig(
            name=time.strftime("sweep_%Y%m%d-%H%M%S"),
            storage_path=str((sweep_dir / TUNE_FOLDER).resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            callbacks=[_progress_callback(sweep_dir)]),
    )


def _unfinished_line(sweep_dir: Path, trials: list[Trial], results) -> str | None:
    """One line naming the trials without a summary and why (error, or interrupted)."""
    why = {}
    for result in results:
        name = result.config["trial"]
        if result.error is not None:
            why[name] = f"{type(result.error).__name__}: {str(result.error).splitlines()[0]}"
        elif result.metrics and "error" in result.metrics:
            why[name] = result.metrics["error"]
    missing = [t.name for t in trials if sweep.finished_summary(sweep_dir, t) is None]
    if not missing:
        return None
    reasons = "; ".join(f"{name}: {why.get(name, 'interrupted')}" for name in missing)
    return (f"{len(missing)} of {len(trials)} trials did not finish ({reasons}). Finished "
            "trials are in the tables; rerun the same command to continue the others from their "
            "checkpoints.")


def run(sweep_dir: Path, trials: list[Trial], options: Options,
        claim: Callable[[], None] = lambda: None) -> None:
    """Runs the unfinished ``trials`` as Ray Tune trials and rewrites the tables.

    ``claim()`` (creating the sweep folder and its ``sweep.json``) is called once Ray runs
    and has what a trial asks for: a cluster that is missing, unreachable or too small, or a
    Ray that cannot start, leaves nothing behind. Raises :class:`agile.paper.sweep.SweepError`
    (one line) if a trial did not finish: it failed more than ``options.max_failures`` times,
    hit a user error, or the sweep was interrupted.
    """
    options.validate()
    sweep_dir = Path(sweep_dir).resolve()
    pending = []
    for position, trial in enumerate(trials, start=1):
        if sweep.finished_summary(sweep_dir, trial) is not None:
            logging.info("[%d/%d] %s already finished; skipping.", position, len(trials),
                         trial.name)
        else:
            pending.append(trial)
    if not pending:
        claim()
        return
    leave = connect(options)
    try:
        ray = require_ray()
        largest = check_resources(ray, options)
        claim()
        cpu_only = options.gpus_per_trial == 0 and largest["GPU"] > 0
        setup = {"env": {k: os.environ[k] for k in tasks.DATA_ENV_VARS if k in os.environ},
                 "cwd": os.getcwd(), "gpus_per_trial": options.gpus_per_trial,
                 "cpu_only": cpu_only, "trial_hook": options.trial_hook,
                 "driver_pid": os.getpid(),
                 "compilation_cache": jax_config_value("jax_compilation_cache_dir")}
        logging.info("Ray Tune: %d trials (%s), %g CPUs and %g GPUs each, largest node %g CPUs "
                     "and %g GPUs.", len(pending), ", ".join(t.name for t in pending),
                     options.cpus_per_trial, options.gpus_per_trial, largest["CPU"],
                     largest["GPU"])
        if cpu_only:
            logging.warning("The cluster has GPUs but --gpus_per_trial=0: trials train on CPU.")
        with _TuneInterrupt() as interrupt:
            results = _tuner(sweep_dir, pending, options, setup).fit()
    finally:
        leave()
    sweep.write_tables(sweep_dir)
    if interrupt.received:  # Ctrl-C: the project's one line (cli.run) and status 130
        raise KeyboardInterrupt
    line = _unfinished_line(sweep_dir, pending, results)
    if line:
        raise sweep.SweepError(line)


class _TuneInterrupt(std_logging.Filter):
    """While fitting: notes Tune's "Stop signal received" (Ctrl-C) and drops it, and drops its
    advice to resume with ``Tuner.restore``: here the same command resumes a sweep."""

    LOGGER = "ray.tune.tune"

    def __init__(self):
        super().__init__()
        self.received = False

    def filter(self, record: std_logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Stop signal received" in message:
            self.received = True
            return False
        return "Resume experiment with" not in message and "Resume training with" not in message

    def __enter__(self) -> _TuneInterrupt:
        std_logging.getLogger(self.LOGGER).addFilter(self)
        return self

    def __exit__(self, *exc_info) -> None:
        std_logging.getLogger(self.LOGGER).removeFilter(self)
