"""A sweep's trials trained in parallel worker processes, each pinned to its own CPUs.

The in-process backend trains one trial after another, which leaves all but the cores XLA
uses for one small CNN idle. :func:`run_parallel` keeps ``workers`` processes busy instead:
each trains one trial (``python -m agile.paper.pool``, the trial pickled to it) on its own
group of CPUs (``sched_setaffinity``), and the next unfinished trial starts as soon as one
ends. The trials' folders, ``results.csv`` and ``results.md`` are those of the in-process
backend, bit for bit: every worker sizes XLA:CPU's thread pool (``NPROC``) as a process of
the whole machine does, because XLA splits its work (and its float sums) by that count.

A worker's output goes to ``worker.log`` in its trial folder; the sweep logs one line when a
trial starts and one when it ends. A trial that fails (a user error such as a NaN loss, or a
crash) does not stop the others; the sweep then ends with one line naming each, and the same
command continues them from their checkpoints. Ctrl-C interrupts every worker (each keeps its
last checkpoint) and ends the sweep with the usual line.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import logging

from agile.errors import ConfigError, UserError

WORKER_LOG = "worker.log"
CPUS_ENV = "AGILE_WORKER_CPUS"  # the CPUs a worker pins itself to, e.g. "0,1"
POLL_S = 0.2
STOP_WAIT_S = 60.0


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def xla_threads() -> int:
    """The thread count XLA:CPU uses in a process here: ``$NPROC``, else the CPUs available."""
    return int(os.environ.get("NPROC") or len(available_cpus()))


def default_workers() -> int:
    """Trials at once by default: one per CPU available on a CPU backend; one on a GPU or TPU
    (one process there owns the accelerator; several would each claim its memory)."""
    import jax

    return len(available_cpus()) if jax.default_backend() == "cpu" else 1


def cpu_groups(workers: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """``cpus`` (default: this process's) split into ``workers`` groups of adjacent CPUs, as
    even as possible; one line if there are fewer CPUs than workers."""
    cpus = list(available_cpus() if cpus is None else cpus)
    if workers < 1 or workers > len(cpus):
        raise ConfigError(f"--workers must be between 1 and the {len(cpus)} CPUs this process "
                          f"may use, got {workers}.")
    size, extra = divmod(len(cpus), workers)
    groups, start = [], 0
    for index in range(workers):
        end = start + size + (index < extra)
        groups.append(cpus[start:end])
        start = end
    return groups


def _worker_env(cpus: Sequence[int], cache_dir: Path | None) -> dict[str, str]:
    env = {**os.environ, CPUS_ENV: ",".join(map(str, cpus)), "NPROC": str(xla_threads())}
    if cache_dir is not None:  # the workers share this process's compilation cache
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


class _Running:
    """One worker process and the trial it trains."""

    def __init__(self, trial, workdir: Path, cpus: list[int], cache_dir: Path | None):
        self.trial, self.cpus, self.started = trial, cpus, time.perf_counter()
        folder = Path(workdir) / trial.name
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / WORKER_LOG
        job = tempfile.NamedTemporaryFile(prefix="agile_trial_", suffix=".pkl", delete=False)
        with job:
            pickle.dump((trial, str(folder)), job)
        self.job = Path(job.name)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agile.paper.pool", str(self.job)],
                stdout=log, stderr=subprocess.STDOUT, env=_worker_env(cpus, cache_dir),
                start_new_session=True)  # Ctrl-C reaches the sweep; the sweep stops workers

    def failure(self) -> str | None:
        """None if the trial finished, else why not (the worker's error line, or its status)."""
        self.job.unlink(missing_ok=True)
        if self.process.returncode == 0:
            return None
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1].removeprefix("error: ")
        return f"exit status {self.process.returncode}; see {self.log}"

    def stop(self) -> None:
        """Ctrl-C to the worker (it keeps its last checkpoint), then waits; kills if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.job.unlink(missing_ok=True)


def run_parallel(workdir: Path, trials: Sequence, workers: int,
                 after_trial: Callable[[], None], cache_dir: Path | None = None) -> None:
    """Trains ``trials`` (unfinished ones only: the caller skips the rest) in ``workers``
    processes, one trial each at a time; ``after_trial()`` runs after each that finished.

    Raises :class:`UserError` (one line) naming the trials that did not finish and why,
    after every other trial is done; KeyboardInterrupt after stopping the workers.
    """
    groups = cpu_groups(min(workers, max(len(trials), 1)))
    pending, running, failures = list(trials), {}, {}
    try:
        while pending or running:
            for slot, cpus in enumerate(groups):
                if slot not in running and pending:
                    trial = pending.pop(0)
                    running[slot] = _Running(trial, workdir, cpus, cache_dir)
                    logging.info("%s started on CPU %s (%d left to start)", trial.name,
                                 ",".join(map(str, cpus)), len(pending))
            time.sleep(POLL_S)
            for slot, job in list(running.items()):
                if job.process.poll() is None:
                    continue
                del running[slot]
                reason = job.failure()
                seconds = time.perf_counter() - job.started
                if reason is None:
                    logging.info("%s finished in %.0f s", job.trial.name, seconds)
                    after_trial()
                else:
                    failures[job.trial.name] = reason
                    logging.error("%s did not finish: %s", job.trial.name, reason)
    except KeyboardInterrupt:
        for job in running.values():
            job.stop()
        raise
    if failures:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        raise UserError(f"{len(failures)} of {len(trials)} trials did not finish ({reasons}). "
                        "Finished trials are in the tables; rerun the same command to continue "
                        "the others from their checkpoints.")


def _work(job_path: str) -> None:
    """A worker: pins itself to ``$AGILE_WORKER_CPUS`` and trains the pickled trial."""
    cpus = os.environ.get(CPUS_ENV)
    if cpus:  # before JAX starts its threads, which inherit this
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    from agile.paper import cli, train

    with open(job_path, "rb") as job:
        trial, folder = pickle.load(job)

    def main(argv: list[str]) -> None:
        del argv
        train.train_and_evaluate(trial.config, folder)

    sys.argv = [sys.argv[0]]
    cli.run(main)


if __name__ == "__main__":
    _work(sys.argv[1])
