"""Where the train step's time goes: per XLA op, forward vs backward, per layer, roofline.

Compiles ``agile.paper.steps.train_step`` (under ``jax.jit`` with the state donated,
as benchmarks/benchmark.py times it) for each ``--combos`` combination, reads
the optimized HLO (``compiled.as_text()``), records ``--steps`` steps under
``jax.profiler.trace`` and sums each HLO instruction's (XLA:CPU thunk's) time
over all threads. Every top-level op gets its phase (forward, backward, loss,
optimizer), its layer, the bytes it reads and writes, its FLOPs and a roofline
floor: max(bytes / measured bandwidth, FLOPs / measured matmul peak).

By default the process first pins itself to one CPU (``--one_cpu``): XLA:CPU
then runs one op at a time, so the per-op times add up to the step (this
machine's two vCPUs are one core's hyperthreads; benchmarks/benchmark.py times
the unpinned step). Prints markdown and writes it to ``--output``:
  python benchmarks/profile_step.py --combos=7,12 --output=profile.md
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import itertools
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import benchmarking
import jax
import jax.numpy as jnp
from absl import app, flags

from agile.paper import steps as steps_lib
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.data import images as data_lib

_COMBOS = flags.DEFINE_list("combos", ["7", "12"], "Combinations to profile.")
_STEPS = flags.DEFINE_integer("steps", 50, "Steps recorded under the profiler.")
_WALL_ROUNDS = flags.DEFINE_integer("wall_rounds", 7, "Rounds of --steps timed without it.")
_TOP = flags.DEFINE_integer("top", 25, "Ops listed per combination.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the markdown here.")
_ONE_CPU = flags.DEFINE_bool(
    "one_cpu", True, "Pin the process to one CPU first, so XLA:CPU runs one op at a time.")
_IMPLEMENTATION = flags.DEFINE_enum(
    "implementation", "fast", ["fast", "reference"], "config.model.implementation.")

BATCH = 100
FULL_RES = BATCH * 28 * 28  # Elements per channel of a first-block (28 x 28) array.
DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "pred": 1, "f16": 2, "bf16": 2, "s8": 1, "u8": 1,
               "s64": 8, "f64": 8}
SYNC_OPTIONS = {"xla_cpu_multi_thread_eigen": False}
PHASES = ("forward", "backward", "loss", "optimizer", "other")
LAYERS = ("block 0", "block 1", "block 2", "dense", "other")
KIND_NAMES = {"__ynn_fusion": "YNNPACK call", "kLoop": "XLA loop", "kInput": "XLA reduction",
              "convolution": "Eigen convolution", "dot": "Eigen dot", "conditional": "conditional",
              "concatenate": "concatenate", "copy": "copy"}


@dataclasses.dataclass
class Op:
    """One top-level instruction of the optimized HLO entry computation."""

    name: str
    opcode: str
    shape: str
    operands: list[str]
    op_name: str
    calls: str | None
    line: str
    branches: tuple[str, ...] = ()


def shape_arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """The (dtype, dims) of every array in an HLO shape string, tuples flattened."""
    return [(dtype, tuple(int(d) for d in dims.split(",") if d))
            for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape)]


def shape_bytes(shape: str) -> int:
    """Bytes of all arrays in an HLO shape string."""
    return sum(DTYPE_BYTES.get(dtype, 4) * math.prod(dims) for dtype, dims in shape_arrays(shape))


def parse_instruction(line: str) -> Op | None:
    """An ``Op`` from one HLO instruction line, or None for other lines."""
    match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.*)$", line)
    if not match:
        return None
    name, rest = match.groups()
    if rest.startswith("("):  # Tuple shape: up to its matching parenthesis.
        depths = itertools.accumulate({"(": 1, ")": -1}.get(char, 0) for char in rest)
        end = next(index for index, depth in enumerate(depths) if depth == 0)
        shape, rest = rest[: end + 1], rest[end + 2:]
    else:
        shape, _, rest = rest.partition(" ")
    opcode, _, args = rest.partition("(")
    args_only = re.split(r"\), (?=[a-z_]+=)", args, maxsplit=1)[0]
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
    return Op(name, opcode, shape, re.findall(r"%([\w.\-]+)", args_only),
              op_name.group(1) if op_name else "", calls.group(1) if calls else None, line,
              tuple(re.findall(r"%([\w.\-]+)", branches.group(1))) if branches else ())


def parse_hlo(text: str) -> tuple[list[Op], dict[str, list[Op]]]:
    """The entry computation's ops, and every computation's ops by computation name."""
    computations: dict[str, list[Op]] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            op = parse_instruction(line)
            if op:
                computations[current].append(op)
    if entry is None:
        raise ValueError("No ENTRY computation in the HLO text.")
    return computations[entry], computations


def op_flops(op: Op, computations: dict[str, list[Op]], shapes: dict[str, str]) -> int:
    """Multiply-add FLOPs (2 per MAC) of the dots and convolutions in ``op`` (or its fusion).

    ``shapes`` maps the entry computation's names to their shapes (``op``'s operands).
    """
    ops = computations.get(op.calls, []) if op.calls else [op]
    shapes = {**shapes, **{o.name: o.shape for o in ops}}
    total = 0
    for inner in ops:
        out = math.prod(shape_arrays(inner.shape)[0][1]) if shape_arrays(inner.shape) else 0
        if inner.opcode == "dot":
            lhs = shape_arrays(shapes.get(inner.operands[0], ""))
            dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", inner.line)
            if lhs and dims:
                total += 2 * out * math.prod(lhs[0][1][int(d)] for d in dims.group(1).split(",")
                                             if d)
        elif inner.opcode == "convolution":
            lhs = shape_arrays(shapes.get(inner.operands[0], ""))
            window = re.search(r"size=([\dx]+)", inner.line)
            labels = re.search(r"dim_labels=(\w+)_", inner.line)
            groups = re.search(r"feature_group_count=(\d+)", inner.line)
            if lhs and window and labels:
                features = lhs[0][1][labels.group(1).index("f")]
                taps = math.prod(int(s) for s in window.group(1).split("x"))
                total += 2 * out * taps * features // int(groups.group(1) if groups else 1)
    return total


def phase_of(op_name: str) -> str:
    """forward / backward (of the CNN), loss (its forward and backward), optimizer, other."""
    if "transpose(jvp(CNN))" in op_name:
        return "backward"
    if "jvp(CNN)" in op_name:
        return "forward"
    if "jvp(" in op_name or "transpose(" in op_name:
        return "loss"
    return "optimizer" if op_name else "other"


def spatial_block(dims: tuple[int, ...]) -> int | None:
    """0, 1 or 2 for an array of block 0's (28 x 28), 1's (14 x 14) or 2's (7 x 7) resolution.

    Recognises the spatial pair, the pair split into pooling windows (14, 2, 14, 2) and the
    flattened batch x rows x columns axis (100 * 28 * 28 = 78400).
    """
    for block, size in enumerate((28, 14, 7)):
        half = size // 2
        pooled = any(dims[i:i + 4] == (half, 2, half, 2) for i in range(len(dims)))
        if dims.count(size) >= 2 or pooled or BATCH * size * size in dims:
            return block
    return None


def layer_of(op: Op, shapes: dict[str, str]) -> str:
    """The block (or dense part) an op belongs to, from its name scope or its array shapes."""
    match = re.search(r"/conv(?:_act)?_(\d)/", op.op_name + "/")
    if match:
        return f"block {match.group(1)}"
    if re.search(r"/(hidden|hidden_act|output)/", op.op_name + "/"):
        return "dense"
    blocks = [spatial_block(dims) for s in [op.shape, *(shapes.get(o, "") for o in op.operands)]
              for _, dims in shape_arrays(s)]
    blocks = [b for b in blocks if b is not None]
    return f"block {min(blocks)}" if blocks else "other"


def thunk_times_ms(trace_dir: str, names: set[str]) -> dict[str, float]:
    """Median milliseconds per run of every HLO instruction in ``names`` (each runs once a step).

    XLA:CPU runs some ops (convolutions) asynchronously: their trace event
    spans only the launch, their work shows as a gap in the timeline, and an
    ``end: <name>`` marker follows. Each gap (no op event on any thread) goes to
    the latest launched such op. The median over steps drops the steps in which
    another process preempted an op.
    """
    from jax.profiler import ProfileData

    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    events, asynchronous = [], set()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in names:
                    events.append((event.start_ns, event.start_ns + event.duration_ns, event.name))
                elif event.name.startswith("end: ") and event.name[5:] in names:
                    asynchronous.add(event.name[5:])
    runs: dict[str, list[int]] = collections.defaultdict(list)
    covered, launched = None, None
    for start, end, name in sorted(events):
        runs[name].append(end - start)
        if covered is not None and start > covered and launched is not None:
            runs[launched][-1] += start - covered
        covered = end if covered is None else max(covered, end)
        launched = name if name in asynchronous else launched
    return {name: statistics.median(ns) / 1e6 for name, ns in runs.items()}


def _batch() -> dict[str, jax.Array]:
    image_key, label_key = jax.random.split(jax.random.key(0))
    return {"inputs": jax.random.uniform(image_key, (BATCH, *data_lib.IMAGE_SHAPE)),
            "targets": jax.random.randint(label_key, (BATCH,), 0, 10, jnp.int32)}


def profile_combo(combo: int, steps: int, wall_rounds: int, implementation: str = "fast") -> dict:
    """Optimized HLO, per-op ms per step under the profiler, and wall ms per step without it.

    The traced step is compiled with ``SYNC_OPTIONS``: XLA:CPU then runs
    convolutions on the calling thread instead of handing them to its Eigen
    pool, so each op's trace event spans its work (with the pool, a convolution
    records only its launch). Both compilations are timed, interleaved.
    """
    batch = _batch()
    config = get_config(combo)
    config.model.implementation = implementation
    state = steps_lib.create_train_state(config, jax.random.key(0))
    steps_by_mode = {
        "default": jax.jit(steps_lib.train_step, donate_argnums=0),
        "sync": jax.jit(steps_lib.train_step, donate_argnums=0, compiler_options=SYNC_OPTIONS),
    }
    hlo = steps_by_mode["sync"].lower(state, batch).compile().as_text()

    def runner(step):
        def run(state):
            for _ in range(steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            return state
        return jax.tree.map(jnp.copy, state), run

    runners = {mode: runner(step) for mode, step in steps_by_mode.items()}
    seconds = benchmarking.time_round_robin(runners, wall_rounds)
    wall, _ = benchmarking.median_and_p20(benchmarking.per_unit(seconds, steps, 1e3))
    entry, computations = parse_hlo(hlo)
    names = {op.name for op in entry}
    names |= {op.name for inner in nested_ops(entry, computations).values() for op in inner}
    run_sync = runners["sync"][1]
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run_sync(state)
        times = thunk_times_ms(trace_dir, names)
    return {"entry": entry, "computations": computations, "times": times,
            "wall_ms": wall["default"], "sync_wall_ms": wall["sync"],
            "implementation": implementation}


def machine_ceilings() -> dict[str, float]:
    """Measured GFLOP/s of a 512^3 f32 matmul and GB/s of streaming and L2-sized elementwise ops."""
    def best_seconds(fn, *args, repeats=30):
        fn(*args).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args).block_until_ready()
            times.append(time.perf_counter() - start)
        return min(times)

    a = jnp.ones((512, 512), jnp.float32)
    matmul = 2 * 512**3 / best_seconds(jax.jit(jnp.dot), a, a) / 1e9
    ceilings = {"matmul_gflops": matmul}
    for label, count in (("map_5mb_gbs", FULL_RES * 16), ("map_1mb_gbs", FULL_RES * 4)):
        x = jnp.ones((count,), jnp.float32)
        seconds = best_seconds(jax.jit(lambda x: x * 1.5 + 1.0), x)
        ceilings[label] = 2 * 4 * count / seconds / 1e9
    return ceilings


def nested_ops(entry: list[Op], computations: dict[str, list[Op]]) -> dict[str, list[Op]]:
    """The ops inside each conditional's branches (``agile.paper.models.ops.stored``), by
    conditional."""
    return {op.name: [inner for branch in op.branches for inner in computations.get(branch, [])
                      if inner.opcode not in ("parameter", "get-tuple-element", "tuple")]
            for op in entry if op.branches}


def op_row(op: Op, profile: dict, ceilings: dict[str, float], shapes: dict[str, str],
           phase: str | None = None, layer: str | None = None) -> dict:
    """Time, phase, layer, bytes moved, FLOPs and roofline floor of one op."""
    reads = [shapes.get(o, "") for o in op.operands]
    full_res = sum(DTYPE_BYTES.get(t, 4) * math.prod(d) for s in [op.shape, *reads]
                   for t, d in shape_arrays(s)
                   if spatial_block(d) == 0 and math.prod(d) >= 4 * FULL_RES)
    moved = shape_bytes(op.shape) + sum(shape_bytes(s) for s in reads)
    flops = op_flops(op, profile["computations"], shapes)
    kind = re.search(r'"kind":"(\w+)"', op.line) or re.search(r"kind=(k\w+)", op.line)
    return {
        "op": op.name, "kind": kind.group(1) if kind else op.opcode,
        "ms": profile["times"].get(op.name, 0.0), "phase": phase or phase_of(op.op_name),
        "layer": layer or layer_of(op, shapes), "mb": moved / 1e6, "full_res_mb": full_res / 1e6,
        "mflop": flops / 1e6, "shape": op.shape.split("{")[0],
        "floor_ms": max(moved / ceilings["map_5mb_gbs"] / 1e6,
                        flops / ceilings["matmul_gflops"] / 1e6),
        "source": op.op_name.removeprefix("jit(train_step)/"),
    }


def op_rows(profile: dict, ceilings: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Rows of the timed top-level ops, and of the ops inside conditionals (not in the totals)."""
    entry, computations = profile["entry"], profile["computations"]
    shapes = {op.name: op.shape for op in entry}
    rows = [op_row(op, profile, ceilings, shapes) for op in entry if op.name in profile["times"]]
    by_name = {row["op"]: row for row in rows}
    inner_rows = []
    for cond, inner in nested_ops(entry, computations).items():
        inner_shapes = {**shapes, **{op.name: op.shape for op in inner}}
        for op in inner:
            if op.name in profile["times"] and cond in by_name:
                row = op_row(op, profile, ceilings, inner_shapes, by_name[cond]["phase"],
                             by_name[cond]["layer"])
                inner_rows.append(row | {"op": f"{cond} > {op.name}"})
    return sorted(rows, key=lambda r: -r["ms"]), sorted(inner_rows, key=lambda r: -r["ms"])


def phase_layer_table(rows: list[dict]) -> list[str]:
    """Milliseconds per step by phase (rows) and layer (columns)."""
    sums: collections.Counter = collections.Counter()
    for row in rows:
        for phase in (row["phase"], "total"):
            for layer in (row["layer"], "total"):
                sums[phase, layer] += row["ms"]
    columns = [*LAYERS, "total"]
    lines = ["| phase | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for phase in (*PHASES, "total"):
        if sums[phase, "total"]:
            cells = " | ".join(f"{sums[phase, c]:.2f}" for c in columns)
            lines.append(f"| {phase} | {cells} |")
    return lines


def kind_summary(rows: list[dict]) -> str:
    """One line: milliseconds per step by kind of op (library calls, loops, conditionals...)."""
    sums: collections.Counter = collections.Counter()
    for row in rows:
        sums[KIND_NAMES.get(row["kind"], row["kind"])] += row["ms"]
    return "By kind: " + ", ".join(f"{kind} {ms:.2f}" for kind, ms in sums.most_common()) + " ms."


def op_table(rows: list[dict], total: float) -> list[str]:
    """Markdown table of op rows."""
    lines = ["| op | kind | phase | layer | ms | % | MB | GB/s | MFLOP | floor ms | shape "
             "| source |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        rate = r["mb"] / r["ms"] if r["ms"] else 0
        lines.append(
            f"| {r['op']} | {KIND_NAMES.get(r['kind'], r['kind'])} | {r['phase']} | {r['layer']} "
            f"| {r['ms']:.3f} | {100 * r['ms'] / total:.1f} | {r['mb']:.2f} | {rate:.1f} | "
            f"{r['mflop']:.1f} | {r['floor_ms']:.3f} | {r['shape']} | {r['source'][-60:]} |")
    return lines


def first_block_traffic(rows: list[dict], total: float) -> list[str]:
    """Which ops read or write a large first-block (28 x 28) array, and how much."""
    full = [r for r in rows if r["full_res_mb"]]
    ms = sum(r["ms"] for r in full)
    lines = [f"Ops that read or write a 28 x 28 array of 313,600+ elements (a quarter of the "
             f"first block's 100 x 28 x 28 x 16 map or more): "
             f"{len(full)} ops, {sum(r['full_res_mb'] for r in full):.1f} MB of such arrays, "
             f"{ms:.2f} ms/step ({100 * ms / total:.0f}% of op time)."]
    if full:
        lines += ["", "| op | phase | MB of 28x28 arrays | ms | shape |", "|---|---|---:|---:|---|",
                  *(f"| {r['op']} | {r['phase']} | {r['full_res_mb']:.2f} | {r['ms']:.3f} | "
                    f"{r['shape']} |" for r in full)]
    return lines


def combo_markdown(combo: int, profile: dict, ceilings: dict[str, float], top: int) -> str:
    """Markdown for one combination: totals, phase x layer, kinds, top ops, first-map traffic."""
    rows, inner = op_rows(profile, ceilings)
    total = sum(r["ms"] for r in rows)
    conv, dense = COMBOS[combo]
    lines = [
        f"### Combo {combo} ({conv} / {dense}), implementation={profile['implementation']}", "",
        f"Wall {profile['wall_ms']:.2f} ms/step without the profiler ({profile['sync_wall_ms']:.2f}"
        f" compiled with {SYNC_OPTIONS}, as profiled); op times under the profiler sum to "
        f"{total:.2f} ms/step over {len(rows)} ops ({sum(r['mflop'] for r in rows):.0f} MFLOP, "
        f"{sum(r['mb'] for r in rows):.1f} MB read + written by ops; their roofline floor "
        f"{sum(r['floor_ms'] for r in rows):.2f} ms).", "",
        "Milliseconds per step by phase and layer:", "", *phase_layer_table(rows), "",
        kind_summary(rows), "",
        f"Top {top} ops (floor = max(MB / {ceilings['map_5mb_gbs']:.0f} GB/s, "
        f"MFLOP / {ceilings['matmul_gflops']:.0f} GFLOP/s)):", "", *op_table(rows[:top], total),
    ]
    if inner:
        lines += ["", "Inside the conditionals (`paper.ops.stored`; part of their time above):",
                  "", *op_table(inner[:top], total)]
    return "\n".join([*lines, "", *first_block_traffic(rows, total)]) + "\n"


def pin_to_one_cpu() -> str:
    """Restricts this process to its first allowed CPU (before JAX starts its CPU client).

    XLA:CPU sizes its thread pool by the CPUs it may use; with one it runs one op
    at a time and each op's trace event is that op's own time. Returns a note.
    """
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    return f"pinned to CPU {cpus[0]} of {len(cpus)} (one XLA:CPU thread)"


def main(argv: list[str]) -> None:
    del argv
    pinned = pin_to_one_cpu() if _ONE_CPU.value else "not pinned (XLA:CPU threads overlap ops)"
    combos = [int(n) for n in _COMBOS.value]
    ceilings = machine_ceilings()
    parts = [
        f"## Train-step profile ({jax.devices()[0].platform}, jax {jax.__version__}, "
        f"batch {BATCH}, {_STEPS.value} steps under jax.profiler, per-op medians over steps; "
        f"{pinned})", "",
        f"Measured now: f32 matmul 512^3 {ceilings['matmul_gflops']:.0f} GFLOP/s; "
        f"elementwise x*1.5+1 over 5.0 MB {ceilings['map_5mb_gbs']:.1f} GB/s, over 1.3 MB "
        f"{ceilings['map_1mb_gbs']:.1f} GB/s (read + write).", "",
    ]
    for combo in combos:
        profile = profile_combo(combo, _STEPS.value, _WALL_ROUNDS.value, _IMPLEMENTATION.value)
        parts.append(combo_markdown(combo, profile, ceilings, _TOP.value))
    text = "\n".join(parts)
    if _OUTPUT.value:
        Path(_OUTPUT.value).write_text(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
