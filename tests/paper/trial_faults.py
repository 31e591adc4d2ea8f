"""A trial hook for ``scripts/sweep.py --trial_hook=trial_faults:inject`` (either backend):
faults at a step of a trial, so the tests signal a sweep at a state it cannot pass.

``$TRIAL_FAULTS`` = ``<trial>@<step>:<action>[,...]``. On the trial's first attempt (a marker
file in its workdir, written first, tells later attempts and the test), after that step:

- ``kill`` SIGKILLs the trial's process;
- ``hold`` waits until the test, having seen the marker, writes :data:`RELEASE` in the trial's
  workdir (then the trial goes on) or stops the trial (a signal to the sweep or a worker);
- ``interrupt`` waits until the sweep's other trials finished, sends SIGINT (Ctrl-C) to the
  driver and waits to be stopped.

Nothing here waits on the clock: each wait ends with the state it waits for (the test's own
subprocess timeout bounds a hang). Test code only: the sweep knows nothing of it.
"""

import os
import signal
import time

MARKER = ".fault_injected"
RELEASE = ".release"
POLL_S = 0.2


def _wait_until(done) -> None:
    while not done():  # or until Ctrl-C from the sweep (or Tune), or a kill, ends the process
        time.sleep(POLL_S)


def inject(context):
    """The ``after_step`` hook for ``context.trial``, or None if no fault is planned for it."""
    spec = os.environ.get("TRIAL_FAULTS", "")
    faults = dict(item.split("@", 1) for item in spec.split(",") if "@" in item)
    marker = context.workdir / MARKER
    if context.trial not in faults or marker.exists():
        return None
    step, _, action = faults[context.trial].partition(":")
    others = [context.sweep_dir / name for name in context.trials if name != context.trial]

    def after_step(current: int) -> None:
        if current != int(step):
            return
        marker.write_text(f"{action} after step {current}\n")
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "hold":
            _wait_until((context.workdir / RELEASE).exists)
            return
        _wait_until(lambda: all((other / "summary.json").exists() for other in others))
        os.kill(context.driver_pid, signal.SIGINT)  # interrupt
        _wait_until(lambda: False)

    return after_step
