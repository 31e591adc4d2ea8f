"""A sweep's trials trained in parallel worker processes, each pinned to its own CPUs.

The in-process backend trains one trial after another, which leaves all but the cores XLA
uses for one small model idle. :func:`run_parallel` keeps ``workers`` processes busy instead:
each is started once (``python -m agile.paper.pool --serve WORKDIR``) on its own group of
CPUs (``sched_setaffinity``) and trains one trial after another, handed to it as a pickle,
so that Python's and JAX's start-up is paid once per worker, not once per trial; the next
unfinished trial goes to the first worker that is free. The trials' folders, ``results.csv``
and ``results.md`` are those of the in-process backend, bit for bit: every worker sizes
XLA:CPU's thread pool (``NPROC``) as a process of the whole machine does, because XLA splits
its work (and its float sums) by that count.

A trial's output goes to ``worker.log`` in its folder; the sweep logs one line when a trial
starts and one when it ends. A trial that fails (a user error such as a NaN loss, or a crash)
does not stop the others; a worker that crashed or hit a bug is replaced by a fresh one. The
sweep then ends with one line naming each failed trial, and the same command continues them
from their checkpoints. Ctrl-C interrupts every worker (each keeps its last checkpoint) and
ends the sweep with the usual line.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import logging

from agile.errors import ConfigError, UserError

WORKER_LOG = "worker.log"  # in each trial's folder: what its training printed
WORKERS_LOG = "workers.log"  # in the sweep's folder: what the workers printed between trials
CPUS_ENV = "AGILE_WORKER_CPUS"  # the CPUs a worker pins itself to, e.g. "0,1"
POLL_S = 0.2
STOP_WAIT_S = 60.0


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def xla_threads() -> int:
    """The thread count XLA:CPU uses in a process here (``agile.paper.parallel``)."""
    from agile.paper.parallel import xla_cpu_threads

    return xla_cpu_threads()


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


class _Worker:
    """One worker process on its CPUs, and the trial it trains (None: idle)."""

    def __init__(self, workdir: Path, cpus: list[int], cache_dir: Path | None):
        self.cpus, self.trial, self.job = cpus, None, None
        Path(workdir).mkdir(parents=True, exist_ok=True)
        with open(Path(workdir) / WORKERS_LOG, "a") as log:  # output between trials
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agile.paper.pool", "--serve", str(workdir)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True,
                env=_worker_env(cpus, cache_dir),
                start_new_session=True)  # Ctrl-C reaches the sweep; the sweep stops workers

    def start(self, trial, workdir: Path, hook: tuple[str, object] | None = None) -> None:
        """Hands ``trial`` to the worker (a pickle of it, its folder and its trial hook:
        ``(spec, context)``, see ``agile.paper.trials.load_trial_hook``)."""
        folder = Path(workdir) / trial.name
        folder.mkdir(parents=True, exist_ok=True)
        job = tempfile.NamedTemporaryFile(prefix="agile_trial_", suffix=".pkl", delete=False)
        with job:
            pickle.dump((trial, str(folder), hook), job)
        self.trial, self.job, self.started = trial, Path(job.name), time.perf_counter()
        self.log = folder / WORKER_LOG
        try:
            self.process.stdin.write(f"{self.job}\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # the worker has just died: outcome() reports its status
            self.process.wait()

    def outcome(self) -> tuple[bool, str | None] | None:
        """None while the trial trains; else (done, why it did not finish: None if it did)."""
        result = _result_path(self.job)
        if result.exists():
            outcome = json.loads(result.read_text())
            error = outcome["error"]
            if outcome["worker_ends"]:  # after a bug: a fresh worker takes the next trial
                self.process.wait()
        elif self.process.poll() is not None:  # crashed, or ended by a bug (traceback in log)
            error = f"exit status {self.process.returncode}; see {self.log}"
        else:
            return None
        self.job.unlink(missing_ok=True)
        result.unlink(missing_ok=True)
        self.trial = None
        return error is None, error

    def stop(self) -> None:
        """Ctrl-C to a busy worker (its trial keeps its last checkpoint), end of input to an
        idle one; then waits, and kills it if stuck."""
        if self.process.poll() is None:
            if self.trial is not None:
                self.process.send_signal(signal.SIGINT)
            self.process.stdin.close()
            try:
                self.process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.job is not None:
            self.job.unlink(missing_ok=True)
            _result_path(self.job).unlink(missing_ok=True)


def _result_path(job: Path) -> Path:
    return job.with_suffix(".result.json")


def run_parallel(workdir: Path, trials: Sequence, workers: int,
                 after_trial: Callable[[], None], cache_dir: Path | None = None,
                 trial_hook: str | None = None) -> None:
    """Trains ``trials`` (unfinished ones only: the caller skips the rest) in ``workers``
    processes, one trial each at a time; ``after_trial()`` runs after each that finished;
    ``trial_hook`` (``module:function``) makes each trial's ``after_step`` in its worker.

    Raises :class:`UserError` (one line) naming the trials that did not finish and why,
    after every other trial is done; KeyboardInterrupt after stopping the workers.
    """
    from agile.paper import trials as trials_lib

    groups = cpu_groups(min(workers, max(len(trials), 1)))
    pending, failures = list(trials), {}
    pool = [_Worker(workdir, cpus, cache_dir) for cpus in groups]
    try:
        while pending or any(worker.trial is not None for worker in pool):
            for slot, worker in enumerate(pool):
                if worker.trial is None and pending:
                    if worker.process.poll() is not None:  # replaces a crashed worker
                        worker = pool[slot] = _Worker(workdir, worker.cpus, cache_dir)
                    trial = pending.pop(0)
                    hook = (trial_hook, trials_lib.trial_context(workdir, trial, trials)
                            ) if trial_hook else None
                    worker.start(trial, workdir, hook)
                    logging.info("%s started on CPU %s (worker %d; %d left to start)",
                                 worker.trial.name, ",".join(map(str, worker.cpus)),
                                 worker.process.pid, len(pending))
            time.sleep(POLL_S)
            for worker in pool:
                trial = worker.trial
                outcome = worker.outcome() if trial is not None else None
                if outcome is None:
                    continue
                done, reason = outcome
                if done:
                    logging.info("%s finished in %.0f s", trial.name,
                                 time.perf_counter() - worker.started)
                    after_trial()
                else:
                    failures[trial.name] = reason
                    logging.error("%s did not finish: %s", trial.name, reason)
    finally:  # idle workers end with their input; Ctrl-C (or a bug here) stops busy ones
        for worker in pool:
            worker.stop()
    if failures:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        raise UserError(f"{len(failures)} of {len(trials)} trials did not finish ({reasons}). "
                        "Finished trials are in the tables; rerun the same command to continue "
                        "the others from their checkpoints.")


def _train_trial(job: Path) -> bool:
    """Trains the pickled trial with its output in its folder's log; writes the outcome next
    to the job (the trial's one error line, or none). Returns False after a bug (the worker
    then ends, its traceback in the log, and the sweep starts a fresh one)."""
    from agile.paper import cli, train, trials

    with open(job, "rb") as file:
        trial, folder, hook = pickle.load(file)
    error, healthy = None, True
    with _output_to(Path(folder) / WORKER_LOG):
        try:
            after_step = trials.load_trial_hook(*hook) if hook else None
            train.train_and_evaluate(trial.config, folder, after_step=after_step)
        except (UserError, OSError) as err:
            error = cli.user_error_message(err)
            if error is None:
                raise
            print(f"error: {' '.join(error.split())}", file=sys.stderr)
        except KeyboardInterrupt:
            raise
        except Exception:  # a bug: its traceback goes to the trial's log
            traceback.print_exc()
            error, healthy = f"a bug (traceback in {Path(folder) / WORKER_LOG})", False
    partial = _result_path(job).with_suffix(".tmp")
    partial.write_text(json.dumps({"error": error, "worker_ends": not healthy}))
    partial.replace(_result_path(job))
    return healthy


@contextlib.contextmanager
def _output_to(log: Path):
    """Sends this process's stdout and stderr (Python's and the native libraries') to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _serve() -> None:
    """A worker: pins itself to ``$AGILE_WORKER_CPUS``, then trains each trial whose pickle's
    path arrives on stdin, until its input ends."""
    cpus = os.environ.get(CPUS_ENV)
    if cpus:  # before JAX starts its threads, which inherit this
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    from agile.paper import cli

    def main(argv: list[str]) -> None:
        del argv
        for line in sys.stdin:
            if not _train_trial(Path(line.strip())):
                sys.exit(1)

    sys.argv = [sys.argv[0]]
    cli.run(main)


if __name__ == "__main__":
    _serve()
