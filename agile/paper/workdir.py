"""A run's folder: its lock, its config guard, its rows file, its checkpoints and its event file.

Everything that keeps a workdir consistent lives here, apart from the training loop:

- :class:`Lock`: one run per workdir at a time (``fcntl.flock``, released by the kernel
  when the process dies, so a killed run never blocks the next one).
- :func:`check_config` / :func:`save_config`: a workdir belongs to one config.
- file names and plain file I/O (``metrics.jsonl`` rows, atomic writes) come from
  :mod:`agile.paper.files` (standard library only), re-exported here for the loop.
- :class:`Checkpoints`: orbax checkpoints of the arrays together with the run's JSON
  state (evaluation histories, timing), so rows and model can never disagree.
- :class:`MetricWriter`: TensorBoard scalars, written without importing TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging as std_logging
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from agile.errors import UserError
from agile.paper.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DEPENDENCY_LOG,
    LOCK_FILE,
    ROWS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    WorkdirError,
    append_rows,
    config_differences,
    read_json,
    read_rows,
    write_json,
    write_rows,
    write_text_atomically,
)

# The loop reads these as workdir.<name>; they are defined once, in agile.paper.files.
__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "DEPENDENCY_LOG", "LOCK_FILE", "ROWS_FILE",
           "SUMMARY_FILE", "SWEEP_FILE", "WorkdirError", "append_rows", "read_json", "read_rows",
           "write_json", "write_rows", "write_text_atomically", "config_differences",
           "Checkpoints", "Lock", "MetricWriter", "check_config",
           "dependency_output", "disk_error", "disk_errors", "finished_checkpoints", "prepare",
           "quietly", "save_config", "check_path"]


# orbax merges a checkpoint's per-process parts with ``glob(<checkpoint path>/ocdbt.process_*)``
# on the full path (orbax/_src/serialization/ocdbt_utils.py): in a path holding one of these, the
# pattern misses the parts (``[1]`` is a character class) or may match another folder's, the
# merge is skipped without an error, and every checkpoint is written without its arrays.
GLOB_CHARACTERS = "[*?"
# Characters the longest file of a checkpoint adds to the workdir's path while it is written:
# checkpoints/<step>.orbax-checkpoint-tmp-<time>/arrays.orbax-checkpoint-tmp-<time>/
# ocdbt.process_<i>/d/<32 hex digits> is about 160.
CHECKPOINT_PATH_RESERVE = 200


def _limits(path: Path) -> tuple[int, int]:
    """The filesystem's longest file name and path (``NAME_MAX``, ``PATH_MAX``) at ``path``'s
    nearest existing folder."""
    existing = next((p for p in (path, *path.parents) if os.path.isdir(p)), Path("/"))
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(existing, name))
        except (OSError, ValueError):
            limits.append(default)
    return limits[0], limits[1]


def check_path(workdir: str | os.PathLike) -> Path:
    """Refuses, in one line and before anything is written, a workdir path its checkpoints
    cannot be written under: one holding a glob character (see :data:`GLOB_CHARACTERS`), a
    folder name longer than the filesystem allows, or a path so long that the checkpoint files
    inside it would pass the filesystem's path limit. Returns the path as given."""
    path = Path(workdir)
    full = path.resolve()  # what orbax is given (agile.paper.workdir.Checkpoints)
    found = sorted({c for c in str(full) if c in GLOB_CHARACTERS})
    if found:
        raise WorkdirError(
            f"The workdir's full path {full} holds {' '.join(found)}: orbax reads a checkpoint's "
            "path as a glob pattern when it merges its parts, so the checkpoints would be written "
            f"without their arrays. Use a --workdir whose full path has none of "
            f"{' '.join(GLOB_CHARACTERS)}.")
    name_max, path_max = _limits(full)
    long_names = [part for part in full.parts if len(os.fsencode(part)) > name_max]
    if long_names:
        raise WorkdirError(
            f"The workdir {path} has a folder name of {len(os.fsencode(long_names[0]))} bytes "
            f"({long_names[0][:40]}…); this filesystem allows {name_max}. Use shorter names.")
    needed = len(os.fsencode(str(full))) + CHECKPOINT_PATH_RESERVE
    if needed >= path_max:
        raise WorkdirError(
            f"The workdir's full path is {len(os.fsencode(str(full)))} bytes long; its checkpoint "
            f"files add up to {CHECKPOINT_PATH_RESERVE}, past the {path_max} bytes this "
            "filesystem allows in a path. Use a --workdir with a shorter path.")
    return path


def prepare(workdir: str | os.PathLike) -> Path:
    """Creates ``workdir`` (and its parents) or says in one line why it cannot
    (:func:`check_path` first: nothing is created for a path checkpoints cannot use)."""
    path = check_path(workdir)
    try:
        if path.exists() and not path.is_dir():
            raise WorkdirError(f"Workdir {path} exists and is not a folder.")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkdirError(f"Cannot create workdir {path}: {err.strerror or err}.") from err
    return path


# ---------------------------------------------------------------------------------------------
# Failures of the filesystem, and the noise of orbax's background threads.

DISK_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EIO: "input/output error"}
_DISK_MARKERS = ("RESOURCE_EXHAUSTED", "No space left on device", "Read-only file system")


def disk_error(err: BaseException) -> BaseException | None:
    """The OSError (or TensorStore's RESOURCE_EXHAUSTED) of a full, read-only or failing
    disk in ``err``'s chain of causes, or None if the failure is something else."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and (err.errno in DISK_ERRNOS or (
                err.errno == errno.EPERM and err.filename)):  # an immutable file (chattr +i)
            return err
        if any(marker in str(err) for marker in _DISK_MARKERS):
            return err
        err = err.__cause__ or err.__context__
    return None


def finished_checkpoints(workdir: Path) -> list[int]:
    """Steps of the complete checkpoints in ``workdir`` (from folder names; orbax renames a
    checkpoint to its step only once it is complete)."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


@contextlib.contextmanager
def disk_errors(workdir: Path) -> Iterator[None]:
    """Turns a full, read-only or failing disk under a run into one :class:`WorkdirError` line
    naming the path, the error and the last complete checkpoint (kept for the rerun)."""
    try:
        yield
    except Exception as err:
        cause = disk_error(err)
        if cause is None or isinstance(err, UserError):  # already one line (a data file's, ...)
            raise
        where = getattr(cause, "filename", None) or workdir
        reason = (f"[Errno {cause.errno}] {cause.strerror}" if isinstance(cause, OSError)
                  else _short_reason(cause))
        kept = finished_checkpoints(workdir)
        last = (f"the last complete checkpoint (step {kept[-1]}) is kept in "
                f"{Path(workdir) / CHECKPOINT_DIR}" if kept else "no checkpoint was complete")
        raise WorkdirError(
            f"Cannot write to {where}: {reason}; {last}. Free space (or make the folder "
            "writable) and rerun the same command to resume."
        ) from None


class _Divert(std_logging.Filter):
    """Writes orbax's and TensorStore's records (warnings and errors; ``everything``: every
    record of the logger it filters) to a file, drops them from the terminal; lets every other
    record through."""

    PATHS = ("/orbax/", "/tensorstore/", "/etils/")

    def __init__(self, file, everything: bool = False):
        super().__init__()
        self._file, self._everything = file, everything
        self._format = std_logging.Formatter("%(levelname)s %(asctime)s %(pathname)s:%(lineno)d "
                                             "%(message)s")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if not self._everything and not any(part in record.pathname for part in self.PATHS):
            return True
        if record.levelno >= std_logging.WARNING:
            _write(self._file, self._format.format(record) + "\n")
        return False


class _LazyFile:
    """A log file opened on the first write (no empty file when there is nothing to say)."""

    def __init__(self, path: Path):
        self.path, self._file = path, None
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "a")  # noqa: SIM115 - closed by close().
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._file is not None:
                self._file.close()
            self._file = None


def _write(file: _LazyFile, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a full disk must not raise here too
        file.write(text)


@contextlib.contextmanager
def dependency_output(path: Path) -> Iterator[None]:
    """Keeps orbax's and TensorStore's own output in ``path`` instead of the terminal.

    Their log records, and the tracebacks their background threads and callbacks print
    (``threading.excepthook``, ``sys.unraisablehook``, and ``sys.excepthook``, which a callback
    from C++ reaches), go to the file while the context is active: a damaged checkpoint or a
    full disk then shows the run's one line, not thousands. The project's own messages say
    when the file is worth reading. The file is opened on the first message; what cannot be
    written there (a full or read-only disk) is dropped. After Ctrl-C (KeyboardInterrupt) the
    diversion stays for the rest of the process, which is ending: orbax's threads still fail
    as Python shuts down ("cannot schedule new futures after shutdown", #57).
    """
    file = _LazyFile(path)
    logger = logging.get_absl_logger()
    divert = _Divert(file)
    saved = sys.excepthook, threading.excepthook, sys.unraisablehook

    def excepthook(kind, value, tb):
        _write(file, "".join(traceback.format_exception(kind, value, tb)))

    def thread_hook(args):
        _write(file, f"Exception in thread {getattr(args.thread, 'name', '?')}:\n" + "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))

    def unraisable_hook(args):
        _write(file, f"Exception ignored in: {args.object!r}\n" + "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))

    logger.filters.insert(0, divert)  # before agile.paper.cli's, which drops orbax's warnings
    # orbax's event loops log "Future exception was never retrieved" to asyncio's logger.
    asyncio_logger, asyncio_divert = std_logging.getLogger("asyncio"), _Divert(file, True)
    asyncio_logger.addFilter(asyncio_divert)
    sys.excepthook, threading.excepthook, sys.unraisablehook = (excepthook, thread_hook,
                                                                  unraisable_hook)
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        sys.excepthook = saved[0]
        if not interrupted:
            threading.excepthook, sys.unraisablehook = saved[1:]
            logger.removeFilter(divert)
            asyncio_logger.removeFilter(asyncio_divert)
        file.close()  # reopened by a later write (after Ctrl-C)


def quietly(close: Callable[[], None]) -> Callable[..., None]:
    """An exit callback for ``contextlib.ExitStack.push``: ``close()``; while another exception
    is already on its way out, a failure of ``close`` (say, the same full disk) is logged as
    one warning line instead of being chained onto it."""

    def exit_callback(exc_type, exc, tb) -> None:
        if exc_type is None:
            close()
            return
        try:
            close()
        except Exception as err:  # noqa: BLE001 - the first failure is the one to report.
            if disk_error(err) is None:  # the same full disk says nothing new
                logging.warning("While stopping: %s", _short_reason(err))

    return exit_callback


class Lock:
    """An exclusive lock on a workdir, held while a run uses it (a context manager).

    A second run on the same workdir fails at once with the first one's process id and
    host. The lock is an ``flock`` on ``.lock``: the kernel drops it when its process ends
    however it ends, so a lock file left by a killed run does not block.
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._file = None

    def __enter__(self) -> Lock:
        existed = self.path.exists()
        try:
            file = open(self.path, "a+")  # noqa: SIM115 - held open for the run.
        except OSError as err:
            raise self._cannot_lock(err) from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise WorkdirError(
                f"Workdir {self.path.parent} is in use by {holder}; wait for it to finish or "
                "choose another --workdir."
            ) from None
        try:
            file.seek(0)
            file.truncate()
            file.write(f"process {os.getpid()} on {socket.gethostname()} "
                       f"(since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            file.flush()
        except OSError as err:
            with contextlib.suppress(OSError):  # closing flushes the unwritten bytes again
                file.close()
            if not existed:  # leave no empty lock file behind
                self.path.unlink(missing_ok=True)
            raise self._cannot_lock(err) from None
        self._file = file
        return self

    def _cannot_lock(self, err: OSError) -> WorkdirError:
        return WorkdirError(
            f"Cannot lock workdir {self.path.parent}: writing {self.path} failed ([Errno "
            f"{err.errno}] {err.strerror}); a run writes its folder, so it needs space and "
            "write access there.")

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _has_checkpoints(workdir: Path) -> bool:
    directory = workdir / CHECKPOINT_DIR
    return directory.is_dir() and any(directory.iterdir())


def check_config(workdir: Path, config: dict[str, Any], allow_change: bool,
                 resumable: Iterable[str] = (), defaults: dict[str, Any] | None = None) -> None:
    """Refuses a workdir whose saved config differs from ``config`` (unless ``allow_change``).

    With ``allow_change`` only the fields in ``resumable`` (dotted names) may differ from
    the checkpoints' config; another field (the model, the data, the seeds) is refused with
    its name even then, since a resume cannot apply it. Checkpoints without a saved config
    are refused unless ``allow_change``: nothing says what trained them, and so is a sweep's
    folder (``sweep.json``): a run and a sweep never share a folder. Writes nothing;
    :func:`save_config` does, once the run has restored successfully.
    """
    if (workdir / SWEEP_FILE).exists():
        raise WorkdirError(
            f"{workdir} is a sweep's folder (it has {SWEEP_FILE}): a run there would mix its "
            "files with the sweep's. Give the run a folder of its own (a new --workdir), or "
            "continue the sweep with scripts/sweep.py.")
    path = workdir / CONFIG_FILE
    if not path.exists():
        if _has_checkpoints(workdir) and not allow_change:
            raise WorkdirError(
                f"{workdir} holds checkpoints but no {CONFIG_FILE}, so what trained them is "
                "unknown. Use a new --workdir, or pass --config.allow_config_change=True "
                "to resume from them anyway."
            )
        return
    differences = config_differences(read_json(path), config, defaults)
    if differences and not allow_change:
        raise WorkdirError(
            f"{workdir} holds a run with a different config (fields: {', '.join(differences)}). "
            "Use a new --workdir, or pass --config.allow_config_change=True to resume anyway."
        )
    fixed = [field for field in differences if field not in set(resumable)]
    if fixed and _has_checkpoints(workdir):
        raise WorkdirError(
            f"{workdir} holds checkpoints of a run with other {', '.join(fixed)}: a resume "
            "cannot change that (it decides the model, the data, the seeds or the optimizer's "
            "state), even with allow_config_change. Use a new --workdir."
        )


def save_config(workdir: Path, config: dict[str, Any]) -> None:
    """Writes ``config.json`` atomically."""
    write_json(workdir / CONFIG_FILE, config)


def _short_reason(err: Exception, limit: int = 160) -> str:
    """``Type: first line`` of an exception, cut to ``limit`` characters (orbax and
    TensorStore errors carry kilobytes of JSON spec on that line)."""
    first = str(err).splitlines()[0] if str(err) else ""
    text = f"{type(err).__name__}: {first}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# orbax's messages when a checkpoint holds another model's (or optimizer's) arrays than the
# template: other shapes, or another tree. Not damage: every step of the run has them.
OTHER_MODEL_ERRORS = ("is not compatible with the stored shape",
                      "tree structures do not match")


class Checkpoints:
    """Orbax checkpoints of a run: an array tree and a JSON dict saved together, per step.

    The JSON part holds what must agree with the arrays (the evaluation histories, the
    timing so far), so resuming never has to trust ``metrics.jsonl``. Saves are
    asynchronous (orbax writes in the background); :meth:`wait` waits for them.
    """

    def __init__(self, workdir: Path, max_to_keep: int = 2, read_only: bool = False):
        self.directory = Path(workdir).resolve() / CHECKPOINT_DIR
        if read_only:  # orbax warns about these options unless read-only readers unset them
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                                   save_interval_steps=0)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def remove_unfinished(self) -> list[Path]:
        """Deletes checkpoint folders a killed run left half-written (``*.orbax-checkpoint-tmp*``).

        Only for the process that holds the workdir's lock, before it saves anything.
        """
        stale = sorted(self.directory.glob("*.orbax-checkpoint-tmp*"))
        for path in stale:
            logging.warning("Removing %s, a checkpoint an interrupted run left unfinished.", path)
            shutil.rmtree(path)
        return stale

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step (None if there is none)."""
        return self._manager.latest_step()

    def save(self, step: int, arrays: Any, meta: dict[str, Any]) -> None:
        """Starts saving ``arrays`` and ``meta`` as the checkpoint of ``step``."""
        self._manager.save(
            step,
            args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                    meta=ocp.args.JsonSave(meta)),
        )

    def restore(self, template: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """``(step, arrays, meta)`` of the newest checkpoint that restores, or None if none exist.

        A checkpoint that fails to restore (damaged files) is reported, deleted and the
        previous one tried; if none restores, :class:`WorkdirError` names each step's failure.
        A checkpoint saved by another model or optimizer (arrays of other shapes, another
        tree) is not damage: that raises WorkdirError at once and deletes nothing.
        """
        return self._newest(ocp.args.StandardRestore(template), delete_damaged=True)

    def read_latest(self) -> tuple[int, Any, dict[str, Any]]:
        """``(step, arrays, meta)`` of the newest checkpoint that reads, as saved (nested dicts).

        For reading a finished run's results: a damaged latest checkpoint falls back to an
        earlier one with a warning, and nothing is deleted. Raises WorkdirError when there is
        no checkpoint or none reads. Resuming uses :meth:`restore`.
        """
        restored = self._newest(ocp.args.StandardRestore(), delete_damaged=False)
        if restored is None:
            raise WorkdirError(f"No checkpoint in {self.directory}.")
        return restored

    def _newest(self, arrays_args, delete_damaged: bool) -> tuple[int, Any, dict] | None:
        failures = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            args = ocp.args.Composite(arrays=arrays_args, meta=ocp.args.JsonRestore())
            try:
                restored = self._manager.restore(step, args=args)
            except Exception as err:  # noqa: BLE001 - any damage: fall back, then report all.
                reason = _short_reason(err)
                if any(marker in str(err) for marker in OTHER_MODEL_ERRORS):
                    raise WorkdirError(
                        f"Checkpoint {self.directory / str(step)} was saved by another model or "
                        f"optimizer than this config's ({reason.split('. ')[0]}): a resume "
                        "cannot change that. Use a new --workdir (the checkpoints are kept)."
                    ) from err
                failures.append(f"step {step} ({reason})")
                logging.warning("Checkpoint %s cannot be restored (%s); trying an earlier one.",
                                self.directory / str(step), reason)
                continue
            if delete_damaged:
                for damaged in sorted(self._manager.all_steps()):
                    if damaged > step:
                        self._manager.delete(damaged)
            return step, restored["arrays"], restored["meta"]
        if failures:
            remedy = ("Delete the damaged step folders (or the workdir) to start again."
                      if delete_damaged else "")
            raise WorkdirError(
                f"No checkpoint in {self.directory} can be restored: {'; '.join(failures)}. "
                + remedy)
        return None

    def wait(self) -> None:
        """Waits until every started save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.close()


class MetricWriter:
    """TensorBoard scalars and hparams in ``logdir``, through tensorboard's own record writer.

    Imports neither TensorFlow nor clu (whose writers import TensorFlow, seconds of
    start-up); ``enabled=False`` (processes other than 0) writes nothing.
    """

    def __init__(self, logdir: Path, enabled: bool = True):
        self._writer = None
        if not enabled:
            return
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._writer = RecordWriter(open(Path(logdir) / name, "wb"))  # noqa: SIM115
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        if self._writer is not None:
            self._writer.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One scalar event per entry of ``scalars``, at ``step``."""
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                  for tag, value in scalars.items()]
        event = event_pb2.Event(wall_time=time.time(), step=int(step),
                                  summary=summary_pb2.Summary(value=values))
        self._write(event)

    def write_histograms(self, step: int, values: dict[str, Any], bins: int = 30) -> None:
        """One histogram event per entry of ``values`` (arrays, e.g. a layer's a), at ``step``:
        TensorBoard's Histograms and Distributions tabs."""
        import numpy as np

        if self._writer is None or not values:
            return
        summaries = []
        for tag, array in values.items():
            flat = np.asarray(array, np.float64).ravel()
            counts, edges = np.histogram(flat, bins=bins)
            proto = summary_pb2.HistogramProto(
                min=float(flat.min()), max=float(flat.max()), num=float(flat.size),
                sum=float(flat.sum()), sum_squares=float(np.square(flat).sum()),
                bucket_limit=[float(edge) for edge in edges[1:]],
                bucket=[float(count) for count in counts])
            summaries.append(summary_pb2.Summary.Value(tag=tag, histo=proto))
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                    summary=summary_pb2.Summary(value=summaries)))

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """The run's settings for TensorBoard's HParams tab (bool, int, float and str only)."""
        kept = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
        self._write(event_pb2.Event(wall_time=time.time(), step=0,
                                      summary=hparams_summary.hparams_pb(kept)))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

