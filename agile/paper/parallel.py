"""Scaling training out: data parallelism over devices, many seeds in one program, many hosts.

A *layout* decides where the training state, the device-resident data and each
batch's indices live, and wraps the one per-device step function
(``step_fn(state, accum, inputs, targets, indices, axis_name=None)``) for that
placement:

- ``"none"`` with one seed: the step under ``jax.jit``, exactly as before.
- ``num_seeds = K > 1``: K independent models (seeds ``seed .. seed+K-1``) stacked
  on a leading axis and stepped together in one compiled call (see ``SeedBatch``).
- ``"pmap"``: state replicated over the local devices, the global batch split
  over all devices, gradients and metrics averaged with ``lax.pmean``.
- ``"shard_map"``: the same over a 1-D device ``Mesh`` with ``jax.shard_map``.

Across several processes (after :func:`initialize_distributed`) both parallel
modes span every process's devices; each process places only its own share of
every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agile.errors import ConfigError, unknown_value_error

# XLA options for every compiled training step: 512-bit vectors on AVX-512 CPUs measured 3-5%
# faster steps (docs/performance.md); an option of XLA's CPU backend, ignored by the others.
STEP_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}
PARALLEL_MODES = ("none", "pmap", "shard_map")
SEED_STRATEGIES = ("scan", "vmap", "map")  # How the models of a seed batch are stepped.
SEED_BATCHING = ("auto", *SEED_STRATEGIES)  # config.seed_batching: a strategy, or "auto".
DATA_AXIS = "data"
StepFn = Callable[..., tuple[Any, Any]]


def xla_cpu_threads() -> int:
    """The thread count XLA:CPU uses in a process here: ``$NPROC``, else the CPUs available.
    XLA:CPU splits its float sums by it, so runs with other counts differ in the last digits
    (``config.json`` records it: ``agile.paper.train.run_config``)."""
    return int(os.environ.get("NPROC") or len(os.sched_getaffinity(0)))


def backend() -> str:
    """``jax.default_backend()``; a platform JAX cannot start (``JAX_PLATFORMS=gpu`` on a
    machine without one, a missing accelerator build) is one line naming the setting."""
    try:
        return jax.default_backend()
    except RuntimeError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"JAX cannot start the platform JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')!r} "
            f"asks for ({reason}). Unset JAX_PLATFORMS to run on what this machine has, or "
            "install jax's build for that accelerator (docs/experiments.md, GPU or TPU).") from None


def validate_scaling_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a bad ``parallel``/``num_seeds``/``seed_batching`` or batch split.

    For the parallel modes this asks JAX for the device count, so call
    :func:`initialize_distributed` (if at all) first.
    """
    if config.parallel not in PARALLEL_MODES:
        raise unknown_value_error("config.parallel", config.parallel, PARALLEL_MODES)
    backend()  # a platform JAX cannot start is one line, before anything else
    resolve_seed_batching(config.seed_batching)
    chunk = config.seed_chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"config.seed_chunk_size must be an integer >= 1, got {chunk!r}.")
    num_seeds = config.num_seeds
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ConfigError(f"config.num_seeds must be a positive integer, got {num_seeds!r}.")
    if num_seeds > 1 and config.parallel != "none":
        raise ConfigError(
            f"config.num_seeds={num_seeds} needs config.parallel='none': several seeds are "
            "stacked on one device and cannot be combined with data parallelism "
            f"(parallel={config.parallel!r})."
        )
    if config.parallel != "none" and config.batch_size % jax.device_count():
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{jax.device_count()} devices that parallel={config.parallel!r} splits it over."
        )


def host_device_env(count: int) -> dict[str, str]:
    """Environment for a process that runs JAX on ``count`` forced host (CPU) devices.

    ``XLA_FLAGS=--xla_force_host_platform_device_count=<count>``, and ``NPROC`` so XLA:CPU
    sizes its client thread pool (normally one thread per core, at least one per device)
    to twice the device count: a launch thread blocked on a full device queue can then
    never take the thread another device needs to join a collective, which on a loaded
    2-core machine deadlocked pmap/shard_map all-reduces now and then. Both must be set
    before JAX starts, so they go to subprocesses (tests, benchmarks) or the shell.
    """
    if count < 1:
        raise ConfigError(f"count must be a positive number of devices, got {count}.")
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
            "NPROC": str(max(2 * count, os.cpu_count() or 1))}


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls ``jax.distributed.initialize`` when multi-process settings are given.

    Settings come from the arguments or, for those left None, from what JAX
    reads itself (``JAX_COORDINATOR_ADDRESS`` and cluster detection: SLURM,
    Open MPI, Cloud TPU, ...). Returns whether it initialised. Must run before
    anything touches a JAX device.
    """
    given = (coordinator_address, num_processes, process_id)
    if all(value is None for value in given) and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def _stack(trees: Sequence[Any]) -> Any:
    """Stacks same-shaped trees leaf by leaf; static fields (apply_fn, tx) come from the first.

    Stacked leaves have strong types (a stack of Python ints, like a fresh ``TrainState``'s
    ``step``, would be weakly typed), as restored checkpoints do: one compiled step serves both.
    """
    leaves = zip(*(jax.tree.leaves(tree) for tree in trees), strict=True)
    stacked = [jnp.stack(group) for group in leaves]
    return jax.tree.unflatten(jax.tree.structure(trees[0]),
                              [jnp.asarray(leaf, dtype=leaf.dtype) for leaf in stacked])


def _to_host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def _uncommitted(tree: Any) -> Any:
    """The tree's arrays copied through the host and put back uncommitted, as a fresh state's.

    Orbax restores arrays committed to a device; a committed argument is a new signature
    for ``jax.jit``, so a resumed run would compile its step (and evaluation) again, once
    for the restored state and once more for each mix of restored and fresh arrays.
    """
    return jax.tree.map(
        lambda leaf: jnp.asarray(np.asarray(leaf)) if isinstance(leaf, jax.Array) else leaf, tree
    )


class Layout(Protocol):
    """Where a run's state, data and batches live, and its step for that placement.

    The loop (:mod:`agile.paper.train`) sees only this: :class:`SingleDevice`,
    :class:`SeedBatch`, :class:`Pmap` and :class:`ShardMap` implement it, each on its own.
    """

    seeds: tuple[int, ...]  # The training seeds, one per model in the state.
    batched_seeds: bool  # Whether the state stacks several seeds on a leading axis.
    max_steps_in_flight: int | None  # Compiled steps the host may dispatch ahead (None: any).
    precompiles: bool  # Whether :meth:`precompile` compiles the step ahead of its first call.

    def place(self, per_seed: Sequence[Any]) -> Any:
        """Device layout of a tree given once per seed (state or accumulator)."""

    def place_data(self, array: np.ndarray) -> jax.Array:
        """Puts a whole training array where every step can gather from it."""

    def place_indices(self, indices: np.ndarray) -> Any:
        """One step's indices: (batch,), or (num_seeds, batch) for a seed batch."""

    def step(self, state, accum, inputs, targets, indices, active: np.ndarray):
        """One compiled step; ``active`` (one bool per seed) only matters for seed batches."""

    def seed_view(self, tree: Any, index: int) -> Any:
        """Seed ``index``'s copy of a placed tree, addressable by this process."""

    def precompile(self, state, accum, inputs, targets, indices, active) -> None:
        """Compiles :meth:`step` for these (possibly abstract) arguments without running it."""

    def abstract_seed(self, tree: Any) -> Any:
        """:meth:`seed_view` of an abstract (``jax.ShapeDtypeStruct``) placed tree."""

    def to_checkpoint(self, tree: Any) -> Any:
        """The tree as it is saved (and the template it is restored into)."""

    def from_checkpoint(self, tree: Any) -> Any:
        """Inverse of :meth:`to_checkpoint`, placed as :meth:`place` places a fresh tree."""


class SingleDevice:
    """One model on the default device: the step under ``jax.jit``, as in plain training."""

    max_steps_in_flight: int | None = None
    precompiles = True

    def __init__(self, compiled_step: StepFn, seed: int):
        self.seeds = (seed,)
        self.batched_seeds = False
        self._step = compiled_step

    def place(self, per_seed: Sequence[Any]) -> Any:
        """Device layout of a tree given once per seed (state or accumulator)."""
        return per_seed[0]

    def place_data(self, array: np.ndarray) -> jax.Array:
        """Puts a whole training array where every step can gather from it."""
        return jax.device_put(array)

    def place_indices(self, indices: np.ndarray) -> Any:
        """One step's indices: (batch,), or (num_seeds, batch) for a seed batch."""
        return indices

    def step(self, state, accum, inputs, targets, indices, active: np.ndarray):
        """One compiled step; ``active`` (one bool per seed) only matters for seed batches."""
        del active
        return self._step(state, accum, inputs, targets, indices)

    def seed_view(self, tree: Any, index: int) -> Any:
        """Seed ``index``'s copy of a placed tree, addressable by this process."""
        del index
        return tree

    def precompile(self, state, accum, inputs, targets, indices, active) -> None:
        """Compiles :meth:`step` for these arguments (``state`` and ``accum`` may be abstract,
        ``jax.ShapeDtypeStruct`` trees shaped as :meth:`place` places them) without running it;
        the first real step then finds it compiled."""
        del active
        self._step.lower(state, accum, inputs, targets, indices).compile()

    def abstract_seed(self, tree: Any) -> Any:
        """:meth:`seed_view` of an abstract (``jax.ShapeDtypeStruct``) placed tree."""
        return tree

    def to_checkpoint(self, tree: Any) -> Any:
        """The tree as it is saved (and the template it is restored into)."""
        return tree

    def from_checkpoint(self, tree: Any) -> Any:
        """Inverse of :meth:`to_checkpoint`, placed as :meth:`place` places a fresh tree."""
        return _uncommitted(tree)


def _masked_step(step_fn: StepFn, state, accum, inputs, targets, indices, active):
    """``step_fn`` for one seed, or its inputs unchanged where ``active`` is False."""
    new = step_fn(state, accum, inputs, targets, indices)
    return jax.tree.map(partial(jnp.where, active), new, (state, accum))


def _scan_seeds(step_fn: StepFn, state, accum, inputs, targets, indices, active):
    """Steps the seeds one after another: a ``lax.scan`` that rotates the stack by one.

    Each iteration steps the seed at index 0 (a static offset: a dynamically sliced
    parameter fused into the big elementwise loops slowed them several times), moves it
    to the end, and skips a stopped seed's computation entirely with ``lax.cond``.
    """

    def step_first_seed_and_rotate(carry, _):
        seed_state, seed_accum, seed_indices, seed_active = jax.tree.map(lambda x: x[0], carry)
        stepped = jax.lax.cond(
            seed_active,
            lambda: step_fn(seed_state, seed_accum, inputs, targets, seed_indices),
            lambda: (seed_state, seed_accum),
        )
        head = (*stepped, seed_indices, seed_active)
        rest = jax.tree.map(lambda leaf: leaf[1:], carry)
        return jax.tree.map(lambda r, h: jnp.concatenate([r, h[None]]), rest, head), None

    carry = (state, accum, indices, active)
    (state, accum, _, _), _ = jax.lax.scan(step_first_seed_and_rotate, carry, None, len(active))
    return state, accum


def _per_seed(indices: jax.Array, seeds: int) -> jax.Array:
    """Each seed's batch indices: as given (seeds, batch), or one shared (batch,) row copied."""
    return indices if indices.ndim == 2 else jnp.broadcast_to(indices, (seeds, *indices.shape))


def _vmap_seeds(step_fn: StepFn, state, accum, inputs, targets, indices, active, chunk=1):
    """Steps the seeds as one batched model (``jax.vmap``): what fills a GPU or TPU.

    With one batch order shared by every seed (``indices`` of shape (batch,)) the batch is
    not batched over seeds, so the first convolution stays a dense one under vmap (with one
    batch per seed it becomes a grouped convolution, whose backward pass is slow on CUDA)."""
    del chunk
    index_axis = None if indices.ndim == 1 else 0
    batched = jax.vmap(partial(_masked_step, step_fn), in_axes=(0, 0, None, None, index_axis, 0))
    return batched(state, accum, inputs, targets, indices, active)


def _map_seeds(step_fn: StepFn, state, accum, inputs, targets, indices, active, chunk=1):
    """Steps the seeds ``chunk`` at a time (``lax.map``): one after another for chunk 1,
    skipping stopped seeds (``lax.cond``); vmapped within each chunk otherwise (a middle way
    between scan's memory and vmap's parallelism on an accelerator)."""

    def one(args):
        seed_state, seed_accum, seed_indices, seed_active = args
        if chunk > 1:  # vmapped inside lax.map: a cond would compute both branches anyway
            return _masked_step(step_fn, seed_state, seed_accum, inputs, targets, seed_indices,
                                seed_active)
        return jax.lax.cond(
            seed_active,
            lambda: step_fn(seed_state, seed_accum, inputs, targets, seed_indices),
            lambda: (seed_state, seed_accum))

    xs = (state, accum, _per_seed(indices, len(active)), active)
    return jax.lax.map(one, xs, batch_size=chunk if chunk > 1 else None)


def _scan_rows(step_fn: StepFn, state, accum, inputs, targets, indices, active, chunk=1):
    del chunk
    return _scan_seeds(step_fn, state, accum, inputs, targets, _per_seed(indices, len(active)),
                       active)


_SEED_STEPS = {"scan": _scan_rows, "vmap": _vmap_seeds, "map": _map_seeds}


def _seed_batch_step(batching: str, chunk: int, step_fn: StepFn, *args):
    """One step of every seed in the stack, batched as ``batching`` says (a SEED_STRATEGIES
    name; ``chunk`` seeds at a time for ``"map"``)."""
    return _SEED_STEPS[batching](step_fn, *args, chunk=chunk)


_seed_step = jax.jit(_seed_batch_step, static_argnums=(0, 1, 2), donate_argnums=(3, 4),
                     compiler_options=STEP_COMPILER_OPTIONS)


def resolve_seed_batching(seed_batching: str, shared_order: bool = False) -> str:
    """A SEED_STRATEGIES name; ``"auto"`` picks by platform.

    CPU: ``"scan"`` (measured fastest per model on XLA:CPU; README, speed section). GPU/TPU
    (not measured in this project, which has no accelerator; from public reports that
    vmapped convolutions are slow on CUDA when each seed has its own batch): ``"vmap"`` when
    every seed shares one batch order (``data.order_seed``: the convolutions stay dense),
    else ``"map"``.
    """
    if seed_batching not in SEED_BATCHING:
        raise unknown_value_error("config.seed_batching", seed_batching, SEED_BATCHING)
    if seed_batching == "auto":
        if backend() == "cpu":
            return "scan"
        return "vmap" if shared_order else "map"
    return seed_batching


class SeedBatch:
    """K independent models stacked on a leading axis, stepped together by one compiled call.

    A seed whose ``active`` flag is False (it stopped early) keeps its state and
    accumulator unchanged, so each seed matches its own single-seed run.

    ``batching="vmap"`` steps the K models as one ``jax.vmap``-ed step, which fills an
    accelerator that one batch-100 CNN leaves idle. On XLA:CPU vmap turns the
    convolutions into grouped ones and multiplies every intermediate by K (~0.3x the
    per-model speed), so ``"scan"`` steps one seed per ``lax.scan`` iteration instead,
    relying on :func:`agile.paper.models.ops.canonical_conv`, whose gradient convolutions
    XLA:CPU runs fast inside a loop body too, and skipping stopped seeds.
    """

    max_steps_in_flight: int | None = None
    precompiles = True

    def __init__(self, step_fn: StepFn, seeds: Sequence[int], batching: str = "scan",
                 chunk: int = 1):
        self.seeds = tuple(seeds)
        self.batched_seeds = True
        self.batching = batching
        self.chunk = chunk
        self._step_fn = step_fn

    @property
    def eval_batching(self) -> str:
        """How the evaluation steps through the seeds: batched for vmap, else one by one."""
        return "vmap" if self.batching == "vmap" else "scan"

    def place(self, per_seed: Sequence[Any]) -> Any:
        return _stack(per_seed)

    def place_data(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array)

    def place_indices(self, indices: np.ndarray) -> Any:
        return indices

    def step(self, state, accum, inputs, targets, indices, active: np.ndarray):
        return _seed_step(self.batching, self.chunk, self._step_fn, state, accum, inputs,
                          targets, indices, active)

    def seed_view(self, tree: Any, index: int) -> Any:
        return jax.tree.map(lambda leaf: leaf[index], tree)

    def precompile(self, state, accum, inputs, targets, indices, active) -> None:
        _seed_step.lower(self.batching, self.chunk, self._step_fn, state, accum, inputs,
                         targets, indices, active).compile()

    def abstract_seed(self, tree: Any) -> Any:
        return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype,
                                                              weak_type=leaf.weak_type), tree)

    def to_checkpoint(self, tree: Any) -> Any:
        return tree

    def from_checkpoint(self, tree: Any) -> Any:
        return _uncommitted(tree)


class DataParallel:
    """Shared part of the data-parallel layouts: one model, checkpointed as host arrays.

    ``max_steps_in_flight``: the loop waits for the devices at least this often. XLA:CPU
    blocks a launch thread when a device has 32 computations queued; with host devices
    that thread can be the one the last device's collective needs, and the all-reduce then
    deadlocks (aborting after 40 s). Staying well under 32 steps ahead rules that out.
    """

    max_steps_in_flight = 16

    # Not precompiled: the replicated and sharded arguments are placed per device (their
    # placement cannot be traced abstractly), so the step compiles at its first call.
    precompiles = False

    batched_seeds = False
    _step: StepFn

    def step(self, state, accum, inputs, targets, indices, active: np.ndarray):
        del active
        return self._step(state, accum, inputs, targets, indices)

    def precompile(self, state, accum, inputs, targets, indices, active) -> None:
        raise NotImplementedError("data-parallel steps compile at their first call")

    def abstract_seed(self, tree: Any) -> Any:
        return tree

    def to_checkpoint(self, tree: Any) -> Any:
        return _to_host(self.seed_view(tree, 0))

    def from_checkpoint(self, tree: Any) -> Any:
        return self.place([tree])


class Pmap(DataParallel):
    """``jax.pmap`` over the local devices; replicas carry a leading device axis."""

    def __init__(self, step_fn: StepFn, seed: int):
        self.seeds = (seed,)
        self.batched_seeds = False
        self._step = jax.pmap(
            partial(step_fn, axis_name=DATA_AXIS), axis_name=DATA_AXIS, donate_argnums=(0, 1)
        )
        self._replicate = jax.pmap(lambda leaf: leaf)

    def place(self, per_seed: Sequence[Any]) -> Any:
        count = jax.local_device_count()
        return jax.tree.map(
            lambda leaf: self._replicate(np.broadcast_to(leaf, (count, *np.shape(leaf)))),
            _to_host(per_seed[0]),
        )

    def place_data(self, array: np.ndarray) -> jax.Array:
        return self.place([array])

    def place_indices(self, indices: np.ndarray) -> np.ndarray:
        """This process's rows of the global batch, split (local devices, per-device batch)."""
        local = jax.local_device_count()
        per_device = indices.reshape(jax.device_count(), -1)
        start = jax.process_index() * local
        return per_device[start : start + local]

    def seed_view(self, tree: Any, index: int) -> Any:
        return jax.tree.map(lambda leaf: leaf.addressable_data(0)[0], tree)


class ShardMap(DataParallel):
    """``jax.shard_map`` over a 1-D mesh of all devices: state replicated, batch sharded."""

    def __init__(self, step_fn: StepFn, seed: int):
        self.seeds = (seed,)
        self.batched_seeds = False
        self._mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        sharded = jax.shard_map(
            partial(step_fn, axis_name=DATA_AXIS),
            mesh=self._mesh,
            in_specs=(P(), P(), P(), P(), P(DATA_AXIS)),
            out_specs=P(),
        )
        self._step = jax.jit(sharded, donate_argnums=(0, 1))

    def _global(self, array: np.ndarray, spec: P) -> jax.Array:
        """A global array from a host array every process holds; each places its own shards."""
        array = np.asarray(array)
        sharding = NamedSharding(self._mesh, spec)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def place(self, per_seed: Sequence[Any]) -> Any:
        return jax.tree.map(lambda leaf: self._global(leaf, P()), _to_host(per_seed[0]))

    def place_data(self, array: np.ndarray) -> jax.Array:
        return self._global(array, P())

    def place_indices(self, indices: np.ndarray) -> jax.Array:
        return self._global(indices, P(DATA_AXIS))

    def seed_view(self, tree: Any, index: int) -> Any:
        return jax.tree.map(lambda leaf: leaf.addressable_data(0), tree)


def make_layout(
    config: ml_collections.ConfigDict, step_fn: StepFn, compiled_step: StepFn
) -> Layout:
    """The layout for ``config.parallel``, ``num_seeds`` and ``seed_batching`` around ``step_fn``.

    ``compiled_step`` is ``step_fn`` under ``jax.jit`` (donating state and
    accumulator), used as is for one seed on one device so its compilation
    cache is shared by every run.
    """
    validate_scaling_config(config)
    if config.num_seeds > 1:
        seeds = range(config.seed, config.seed + config.num_seeds)
        batching = resolve_seed_batching(config.seed_batching,
                                         config.data.order_seed is not None)
        return SeedBatch(step_fn, seeds, batching, config.seed_chunk_size)
    if config.parallel == "pmap":
        return Pmap(step_fn, config.seed)
    if config.parallel == "shard_map":
        return ShardMap(step_fn, config.seed)
    return SingleDevice(compiled_step, config.seed)
