"""BatchNorm statistics under data parallelism: what pmap and shard_map do with them.

Each device normalises by the statistics of its own part of the global batch (no cross-device
batch statistics), and the running averages the step returns are the mean over devices of what
each device's part would give: every replica keeps the same ``batch_stats`` (flax's ImageNet
example syncs them the same way, by averaging).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from agile_testing import REPO_ROOT

from agile.paper import parallel

TWO_DEVICE_CHECK = textwrap.dedent(
    """
    import json
    from functools import partial

    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    from agile.paper import config as config_lib, steps, tasks

    config = config_lib.get_config(model="resnet", data="fashion_mnist")
    config.model.widths = (4,)
    task = tasks.build(config)
    state = steps.create_train_state(config, jax.random.key(0), task)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
             "targets": (np.arange(8) % 10).astype(np.int32)}
    halves = jax.tree.map(lambda x: x.reshape(2, 4, *x.shape[1:]), batch)
    per_half = [steps.train_step(state, jax.tree.map(lambda x: x[i], halves))[0].model_state
                for i in range(2)]
    expected = jax.tree.map(lambda a, b: (np.asarray(a) + np.asarray(b)) / 2, *per_half)

    replicated = jax.tree.map(lambda x: np.stack([np.asarray(x)] * 2), state)
    pmapped = jax.pmap(partial(steps.train_step, axis_name="d"), axis_name="d")(
        replicated, halves)[0].model_state
    mesh = Mesh(np.asarray(jax.devices()), ("d",))
    sharded = jax.jit(jax.shard_map(partial(steps.train_step, axis_name="d"), mesh=mesh,
                                    in_specs=(P(), P("d")), out_specs=P()))(state, batch)
    sharded = sharded[0].model_state

    def gap(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    print("RESULT" + json.dumps({
        "replicas_equal": gap(jax.tree.map(lambda x: x[0], pmapped),
                              jax.tree.map(lambda x: x[1], pmapped)),
        "pmap_vs_mean": gap(jax.tree.map(lambda x: x[0], pmapped), expected),
        "shard_map_vs_mean": gap(sharded, expected),
        "changed": gap(expected, state.model_state),
    }))
    """
)


@pytest.mark.slow
def test_pmap_and_shard_map_average_each_devices_batch_statistics():
    result = subprocess.run(
        [sys.executable, "-c", TWO_DEVICE_CHECK], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, **parallel.host_device_env(2)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    assert out["replicas_equal"] == 0.0
    assert out["pmap_vs_mean"] < 1e-6 and out["shard_map_vs_mean"] < 1e-6
    assert out["changed"] > 1e-3  # the statistics did move, so the comparison means something
