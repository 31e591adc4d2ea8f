"""A trial hook for ``scripts/sweep.py --backend=ray --trial_hook=ray_faults:inject``: faults.

``$RAY_FAULTS`` = ``<trial>@<step>:<action>[,...]``. On the trial's first attempt (a marker
file in its workdir tells later attempts), after that step, ``kill`` SIGKILLs the trial's
worker; ``interrupt`` waits until the experiment's other trials finished, sends SIGINT
(Ctrl-C) to the driver and waits to be stopped. Test code only: the sweep knows nothing of it.
"""

import os
import signal
import time

WAIT_S = 120.0


def inject(context):
    """The ``after_step`` hook for ``context.trial``, or None if no fault is planned for it."""
    spec = os.environ.get("RAY_FAULTS", "")
    faults = dict(item.split("@", 1) for item in spec.split(",") if "@" in item)
    marker = context.workdir / ".fault_injected"
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
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not all(
                (other / "summary.json").exists() for other in others):
            time.sleep(0.5)
        os.kill(context.driver_pid, signal.SIGINT)
        time.sleep(WAIT_S)  # Tune stops this worker.

    return after_step
