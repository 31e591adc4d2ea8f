"""Pure array ops behind the CNN's fast path.

XLA:CPU runs ``nn.max_pool``'s backward (``select_and_scatter``), convolutions
with a single input channel, and every pass over the 100 x 28 x 28 x 16 first
feature map slowly. These ops compute the same math in forms it runs well:
patch convolution and reshape pooling; :func:`canonical_conv` (convolutions
whose gradients stay fast inside loops, padded to YNNPACK's width); and
conv -> activation -> max-pool blocks fused at pooled resolution
(:func:`act_max_pool`, :func:`conv_act_max_pool`), with the values several
backward loops read computed once (:func:`stored`) and batch sums as add trees
(:func:`batch_sum`). docs/performance.md has the measurements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from agile.errors import unknown_value_error

Array = jax.Array
POOLINGS = ("max", "avg")


def validate_pooling(pooling: str) -> str:
    """Returns ``pooling`` if it is one of :data:`POOLINGS`, else raises a one-line ConfigError."""
    if pooling not in POOLINGS:
        raise unknown_value_error("pooling", pooling, POOLINGS)
    return pooling


def same_padding(kernel_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(low, high)`` padding of each spatial axis for a stride-1 SAME convolution.

    Matches ``lax.conv_general_dilated(padding="SAME")``: the extra row or
    column of an even kernel goes to the high side.
    """
    return tuple(((k - 1) // 2, k // 2) for k in kernel_size)


def conv_patches(x: Array, kernel_size: tuple[int, int]) -> Array:
    """SAME-padded patches of ``x`` (N, H, W, C): (N, H, W, kh * kw * C).

    The last axis is ordered (row offset, column offset, channel), the order of
    a ``(kh, kw, C, F)`` kernel reshaped to ``(kh * kw * C, F)``.
    """
    _, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), *same_padding(kernel_size), (0, 0)))
    kh, kw = kernel_size
    return jnp.concatenate(
        [padded[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)],
        axis=-1,
    )


def patch_conv(x: Array, kernel: Array, bias: Array) -> Array:
    """Stride-1 SAME convolution as patches @ kernel: (N, H, W, C) -> (N, H, W, F).

    Equals ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` (NHWC, HWIO)
    plus ``bias``, for ``kernel`` of shape (kh, kw, C, F) and ``bias`` (F,).
    """
    kh, kw, in_features, features = kernel.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"Input has {x.shape[-1]} channels, the kernel expects {in_features}.")
    patches = conv_patches(x, (kh, kw))
    return patches @ kernel.reshape(kh * kw * in_features, features) + bias


def _pool_windows(x: Array, pool_size: tuple[int, int]) -> Array:
    """(N, H, W, C) -> (N, H // ph, ph, W // pw, pw, C), cropping what VALID pooling drops."""
    n, height, width, channels = x.shape
    ph, pw = pool_size
    rows, cols = height // ph, width // pw
    return x[:, : rows * ph, : cols * pw].reshape(n, rows, ph, cols, pw, channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: Array, pool_size: tuple[int, int]) -> Array:
    return _pool_windows(x, pool_size).max(axis=(2, 4))


def _max_pool_forward(x: Array, pool_size: tuple[int, int]) -> tuple[Array, tuple[Array, Array]]:
    pooled = _max_pool(x, pool_size)
    return pooled, (x, pooled)


def _max_pool_backward(
    pool_size: tuple[int, int], residuals: tuple[Array, Array], grad: Array
) -> tuple[Array]:
    """Sends each window's gradient to its first maximum in row-major order.

    That is the position ``select_and_scatter`` (``nn.max_pool``'s gradient)
    picks, so ties, e.g. a saturated sigmoid's exact 1.0s, match it too.
    """
    x, pooled = residuals
    n, rows, cols, channels = pooled.shape
    ph, pw = pool_size
    windows = _pool_windows(x, pool_size)
    first_max = jnp.full(pooled.shape, ph * pw - 1, jnp.int32)
    for position in reversed(range(ph * pw - 1)):
        is_max = windows[:, :, position // pw, :, position % pw, :] == pooled
        first_max = jnp.where(is_max, position, first_max)
    window_shape = (1, 1, ph, 1, pw, 1)
    position = pw * jax.lax.broadcasted_iota(jnp.int32, window_shape, 2)
    position = position + jax.lax.broadcasted_iota(jnp.int32, window_shape, 4)
    is_first_max = position == first_max[:, :, None, :, None, :]
    window_grad = jnp.where(is_first_max, grad[:, :, None, :, None, :], 0).astype(x.dtype)
    cropped = window_grad.reshape(n, rows * ph, cols * pw, channels)
    pads = ((0, 0), (0, x.shape[1] - rows * ph), (0, x.shape[2] - cols * pw), (0, 0))
    return (jnp.pad(cropped, pads),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def checked_pool_size(x: Array, pool_size) -> tuple[int, int]:
    """``pool_size`` as a pair of ints, or ValueError if the window is larger than x's map."""
    pool_size = tuple(int(p) for p in pool_size)
    if x.ndim != 4 or x.shape[1] < pool_size[0] or x.shape[2] < pool_size[1]:
        raise ValueError(f"Pool window {pool_size} is larger than the {x.shape[1:3]} map.")
    return pool_size


def reshape_pool(x: Array, pool_size: tuple[int, int], pooling: str) -> Array:
    """VALID pooling with stride = window, as a reshape and a max or mean.

    Equals ``nn.max_pool`` / ``nn.avg_pool(x, pool_size, strides=pool_size,
    padding="VALID")`` on (N, H, W, C), so odd sizes crop (7 -> 3), and so
    do their gradients, ties included (the max's goes to each window's first
    maximum).
    """
    validate_pooling(pooling)
    pool_size = checked_pool_size(x, pool_size)
    if pooling == "max":
        return _max_pool(x, pool_size)
    return _pool_windows(x, pool_size).mean(axis=(2, 4))


# XLA:CPU hands a convolution to YNNPACK only if its input or output has more than 16
# features; narrower ones go to Eigen, which ran this model's 16 -> 8 and 8 -> 16
# convolutions (and their 8 -> 4, 4 -> 8 ones) slower than YNNPACK runs the same
# convolution with its output padded to 17 features (zero kernel columns, sliced off).
YNN_MIN_FEATURES = 17


def _conv_nhwc(x: Array, kernel: Array, padding) -> Array:
    """Stride-1 ``conv_general_dilated`` (NHWC, HWIO), its output padded to YNNPACK's width.

    A kernel whose input and output feature counts are both below
    ``YNN_MIN_FEATURES`` gets zero output columns up to it; the result is sliced
    back, so the values are those of the plain convolution.
    """
    features = kernel.shape[-1]
    if max(kernel.shape[-2:]) < YNN_MIN_FEATURES:
        pads = ((0, 0), (0, 0), (0, 0), (0, YNN_MIN_FEATURES - features))
        kernel = jnp.pad(kernel, pads)
    out = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out[..., :features]


@jax.custom_vjp
def canonical_conv(x: Array, kernel: Array) -> Array:
    """Stride-1 SAME ``lax.conv_general_dilated`` (NHWC, HWIO) whose gradients are canonical convs.

    The same function as the plain convolution; its backward pass spells out the
    transposes that make both gradient convolutions (NHWC, HWIO) ones, which
    XLA:CPU runs through its fast convolution even inside loops, where it does
    not canonicalise the convolutions autodiff produces.
    """
    return _conv_nhwc(x, kernel, same_padding(kernel.shape[:2]))


def _canonical_conv_forward(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return canonical_conv(x, kernel), (x, kernel)


def _canonical_conv_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    x, kernel = residuals
    padding = same_padding(kernel.shape[:2])
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    transposed_padding = tuple((k - 1 - low, k - 1 - high) for k, (low, high)
                               in zip(kernel.shape[:2], padding, strict=True))
    grad_x = _conv_nhwc(grad, flipped, transposed_padding)
    return grad_x, _kernel_grad(x, grad, kernel.shape)


def _kernel_grad(x: Array, grad: Array, kernel_shape) -> Array:
    """Kernel gradient of the SAME convolution of ``x`` (N, H, W, C) given ``grad`` (N, H, W, F).

    One canonical convolution over the batch as features: ``grad`` as (F, H, W, N)
    slides over ``x`` as an (H, W, N, C) kernel, padded (high, low) so the output
    is the kernel gradient flipped. The transposes this needs move single
    elements only of ``grad``, the narrower of the two (C > F here); XLA:CPU runs
    the convolution on YNNPACK (N = 100 features).
    """
    padding = tuple((high, low) for low, high in same_padding(kernel_shape[:2]))
    flipped = _conv_nhwc(grad.transpose(3, 1, 2, 0), x.transpose(1, 2, 0, 3), padding)
    return jnp.flip(flipped, (1, 2)).transpose(1, 2, 3, 0)


canonical_conv.defvjp(_canonical_conv_forward, _canonical_conv_backward)


def strided_canonical_conv(x: Array, kernel: Array, stride: int) -> Array:
    """SAME ``lax.conv_general_dilated`` of ``x`` (NHWC) with an odd square ``kernel`` (HWIO)
    at ``stride`` in both spatial axes, through :func:`canonical_conv` (gradients XLA:CPU
    runs fast inside loops: a ResNet's seed batch stepped 6x slower per seed with flax's
    convolutions; docs/performance.md).

    A strided SAME convolution reads the positions the stride-1 one reads at every
    ``stride``-th output, shifted by the difference of their low paddings: it is the stride-1
    result sliced (a 1x1 kernel slices the input instead, the same values without the extra
    work). A 3x3 stride-2 layer so computes 4x its products, a few percent of a ResNet's step.
    """
    size = kernel.shape[0]
    if kernel.shape[0] != kernel.shape[1] or size % 2 == 0:
        raise ValueError(f"strided_canonical_conv takes odd square kernels, got {kernel.shape}.")
    if stride == 1:
        return canonical_conv(x, kernel)
    height, width = x.shape[1:3]
    out_h, out_w = -(-height // stride), -(-width // stride)
    offsets = [(size - 1) // 2 - max((out - 1) * stride + size - extent, 0) // 2
               for out, extent in ((out_h, height), (out_w, width))]
    if size == 1:
        return canonical_conv(x[:, offsets[0]::stride, offsets[1]::stride], kernel)
    full = canonical_conv(x, kernel)
    return full[:, offsets[0]::stride, offsets[1]::stride][:, :out_h, :out_w]


# Blocks of conv -> activation -> max pooling, pooled without a full-resolution backward.
#
# VALID max pooling with stride = window (ph, pw) reads each map position once, so a map
# splits into ph * pw *subgrids*, one per window offset q = (di, dj): subgrid q holds the
# positions (ph * i + di, pw * j + dj). The pooled map is the elementwise maximum of the
# subgrids, and its gradient goes to the subgrid of each window's first maximum (``select``).
# Everything below works on subgrids, i.e. at pooled resolution: XLA fuses the elementwise
# work into loops over the pooled map, and the batch sums of the per-element ``a`` and ``b``
# gradients run as trees of adds (XLA:CPU's own reductions over the batch axis run several
# times slower when a select feeds them). For a single-channel input the convolution itself
# is evaluated per subgrid, so the 28 x 28 x 16 map of the first block is never stored.


def _subgrids(x: Array, pool_size: tuple[int, int]) -> list[Array]:
    """The ``ph * pw`` window-offset subgrids of ``x`` (..., H, W, C), row-major, cropped."""
    ph, pw = pool_size
    height, width = x.shape[-3:-1]
    rows, cols = height // ph, width // pw
    return [
        x[..., di : di + ph * (rows - 1) + 1 : ph, dj : dj + pw * (cols - 1) + 1 : pw, :]
        for di in range(ph)
        for dj in range(pw)
    ]


def _unpool(parts: Array, select: Array, pool_size: tuple[int, int], shape) -> Array:
    """Each value of ``parts`` (..., R, C, F) at its window's ``select`` position of ``shape``.

    The other positions, and the rows and columns VALID pooling crops, are zero.
    Cropped rows and columns come from windows padded in (select -1 matches no
    position) and a final slice, not from padding the result: XLA would fold such
    a pad into a following convolution's padding, and XLA:CPU then declines to
    run that convolution on YNNPACK (its input would be smaller than its output).
    """
    ph, pw = pool_size
    height, width = shape[-3:-1]
    rows, cols = -(-height // ph), -(-width // pw)
    pads = [(0, 0)] * (parts.ndim - 3) + [(0, rows - parts.shape[-3]), (0, cols - parts.shape[-2]),
                                          (0, 0)]
    parts, select = jnp.pad(parts, pads), jnp.pad(select, pads, constant_values=-1)
    offset = pw * jax.lax.broadcasted_iota(select.dtype, (ph, 1, pw, 1), 0)
    offset = offset + jax.lax.broadcasted_iota(select.dtype, (ph, 1, pw, 1), 2)
    spread = lambda v: v[..., :, None, :, None, :]  # noqa: E731  (..., R, 1, C, 1, F)
    windows = jnp.where(spread(select) == offset, spread(parts), 0).astype(parts.dtype)
    full = windows.reshape(*parts.shape[:-3], rows * ph, cols * pw, parts.shape[-1])
    return full[..., :height, :width, :]


def _first_max(values: list[Array]) -> Array:
    """Index of the first of ``values`` that holds the elementwise maximum.

    int8 (one byte per window, read by several backward loops) unless there are
    more than 127 values.
    """
    maximum = functools.reduce(jnp.maximum, values)
    dtype = jnp.int8 if len(values) <= 127 else jnp.int32
    select = jnp.full(maximum.shape, len(values) - 1, dtype)
    for index in reversed(range(len(values) - 1)):
        select = jnp.where(values[index] == maximum, index, select)
    return select


def _pick(values: list[Array], select: Array) -> Array:
    """Elementwise ``values[select]``."""
    picked = values[-1]
    for index in reversed(range(len(values) - 1)):
        picked = jnp.where(select == index, values[index], picked)
    return picked


def batch_sum(x: Array, fan_in: int = 2) -> Array:
    """Sum over the leading axis as a tree of adds, ``fan_in`` slices per level.

    Equals ``x.sum(0)`` up to rounding. XLA fuses the adds, and the elementwise
    work that produces ``x``, into loops over a level's output, where XLA:CPU's
    reduction over a leading axis first stores a select-fed input and runs
    several times slower. XLA stores the levels it does not fuse; a wider
    ``fan_in`` makes the first of them smaller when producing ``x`` is costly.
    """
    rest = []
    while x.shape[0] > 1:
        width = min(fan_in, x.shape[0])
        rows = x.shape[0] // width
        rest += [x[row] for row in range(rows * width, x.shape[0])]
        x = functools.reduce(jnp.add, [x[i * rows : (i + 1) * rows] for i in range(width)])
    return functools.reduce(jnp.add, [x[0], *rest])


def stored(fn: Callable, *args):
    """``fn(*args)``, evaluated once into buffers of its own.

    XLA fuses an elementwise result into each of its consumers and recomputes it
    there; a value that several consumers read and that is costly to compute
    (an activation over a feature map) is cheaper stored. XLA does not fuse
    across a conditional, so ``fn`` runs as both branches of one (the predicate,
    which reads every argument so that XLA cannot fold it while any argument is
    a runtime value, only keeps XLA from removing it; either branch gives the same
    result).
    """
    firsts = [jnp.ravel(leaf)[0] for leaf in jax.tree.leaves(args)]
    predicate = functools.reduce(jnp.logical_and, [first == first for first in firsts])
    return jax.lax.cond(predicate, fn, fn, *args)


def _activated(parts: list[Array], fn: Callable, params: tuple) -> list[Array]:
    """``fn`` of each subgrid, or ``a * fn(u - b)`` with ``params = (a_parts, b_parts)``."""
    if not params:
        return [fn(u) for u in parts]
    return [a * fn(u - b) for u, a, b in zip(parts, *params, strict=True)]


def _param_subgrids(params: tuple, pool_size: tuple[int, int]) -> tuple:
    """The subgrids of ``(a, b)`` (each (H, W, F)), or ``()`` for a plain activation."""
    return tuple(_subgrids(p, pool_size) for p in params)


def _pool_forward(parts_fn: Callable, args: tuple, fn: Callable, params: tuple, pool_size):
    """``(pooled, select, v)``: the max-pooled activation, its first maximum, ``fn``'s input there.

    ``parts_fn(*args)`` gives the pre-activation's subgrids; ``select`` and ``v``
    (``u - b`` at the window maximum) are computed once and stored, for the
    pooled value and the backward pass.
    """
    def select_and_input(args, params):
        parts, param_parts = parts_fn(*args), _param_subgrids(params, pool_size)
        select = _first_max(_activated(parts, fn, param_parts))
        v = _pick(parts, select)
        return select, (v - _pick(param_parts[1], select) if params else v)

    select, v = stored(select_and_input, args, params)
    if not params:
        return fn(v), select, v
    return _pick(_param_subgrids(params, pool_size)[0], select) * fn(v), select, v


def _pool_backward(grad, select, v, fn, params, pool_size, map_shape) -> tuple:
    """``(du, dparams)``: the pooled-resolution gradient of the pre-activation and of (a, b).

    ``du`` belongs at each window's ``select`` position; ``dparams`` are the batch-summed
    gradients of ``a`` and ``b`` at full resolution ``map_shape[1:]``, or ``()``. Only
    ``du``, which several consumers read, is stored (recomputing an activation's
    derivative in each costs more); ``a``'s gradient ``grad * fn(v)`` is computed
    inside its batch sum.
    """
    def slope(v):
        return jax.jvp(fn, (v,), (jnp.ones_like(v),))[1]

    def pre_activation_grad(grad, select, v, params):
        if not params:
            return grad * slope(v)
        return grad * _pick(_param_subgrids(params, pool_size)[0], select) * slope(v)

    du = stored(pre_activation_grad, grad, select, v, params)
    if not params:
        return du, ()
    da = batch_sum(_unpool(grad * fn(v), select, pool_size, map_shape))
    return du, (da, -batch_sum(_unpool(du, select, pool_size, map_shape)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _act_max_pool(u: Array, params: tuple, fn: Callable, pool_size: tuple[int, int]) -> Array:
    return functools.reduce(jnp.maximum, _activated(
        _subgrids(u, pool_size), fn, _param_subgrids(params, pool_size)))


def _act_max_pool_forward(u, params, fn, pool_size):
    pooled, select, v = _pool_forward(
        lambda u: _subgrids(u, pool_size), (u,), fn, params, pool_size)
    return pooled, (u, params, select, v)


def _act_max_pool_backward(fn, pool_size, residuals, grad):
    u, params, select, v = residuals
    du, dparams = _pool_backward(grad, select, v, fn, params, pool_size, u.shape)
    return _unpool(du, select, pool_size, u.shape), dparams


_act_max_pool.defvjp(_act_max_pool_forward, _act_max_pool_backward)


def _agile_params(a, b, map_shape) -> tuple:
    """``(a, b)`` broadcast to the (H, W, F) map, or ``()`` for a plain activation."""
    if a is None and b is None:
        return ()
    if a is None or b is None:
        raise ValueError("Pass both a and b (an agile activation) or neither (a plain one).")
    return tuple(jnp.broadcast_to(jnp.asarray(p, jnp.float32), map_shape[1:]) for p in (a, b))


def act_max_pool(u: Array, fn: Callable, a=None, b=None, pool_size=(2, 2)) -> Array:
    """``reshape_pool(a * fn(u - b), pool_size, "max")``, or of ``fn(u)`` without ``a``, ``b``.

    ``u`` is (N, H, W, F); ``a`` and ``b`` broadcast against (H, W, F). Same values
    and gradients (ties to each window's first maximum), but the backward pass
    works at pooled resolution: one activation derivative per window, and the
    batch sums of the ``a``, ``b`` gradients as fused trees of adds.
    """
    pool_size = checked_pool_size(u, pool_size)
    return _act_max_pool(u, _agile_params(a, b, u.shape), fn, pool_size)


def _offset_slices(x: Array, kernel_size, pool_size) -> dict[tuple[int, int], Array]:
    """``{(r, s): xpad[:, ph * i + r, pw * j + s]}`` over the pooled grid, for a 1-channel x.

    ``xpad`` is ``x`` SAME-padded for ``kernel_size``; offsets run over
    ``r < ph + kh - 1`` and ``s < pw + kw - 1``, each slice (N, rows, cols).
    """
    (kh, kw), (ph, pw) = kernel_size, pool_size
    rows, cols = x.shape[1] // ph, x.shape[2] // pw
    padded = jnp.pad(x[..., 0], ((0, 0), *same_padding(kernel_size)))
    return {
        (r, s): padded[:, r : r + ph * (rows - 1) + 1 : ph, s : s + pw * (cols - 1) + 1 : pw]
        for r in range(ph + kh - 1)
        for s in range(pw + kw - 1)
    }


def _subgrid_conv(x: Array, kernel: Array, bias: Array, pool_size) -> list[Array]:
    """The SAME convolution of a 1-channel ``x`` (plus ``bias``) on each pooling subgrid.

    Subgrid q = (di, dj) of ``patch_conv(x, kernel, bias)``, as 9 broadcast
    multiply-adds per output that XLA fuses with what consumes them.
    """
    kh, kw, _, _ = kernel.shape
    ph, pw = pool_size
    slices = _offset_slices(x, (kh, kw), pool_size)
    parts = []
    for di in range(ph):
        for dj in range(pw):
            taps = [slices[di + ki, dj + kj][..., None] * kernel[ki, kj, 0]
                    for ki in range(kh) for kj in range(kw)]
            parts.append(functools.reduce(jnp.add, taps) + bias)
    return parts


def _subgrid_conv_kernel_grad(x: Array, select: Array, du: Array, kernel_shape, pool_size):
    """Gradient of ``kernel`` from the pooled-resolution ``du`` at the ``select`` positions.

    Tap (ki, kj) of the kernel gradient sums ``du`` times the input that tap
    read at each window's selected position: the offset slices stacked once
    (N, offset rows, offset columns, rows, cols), each subgrid's taps a static
    slice of them, picked by ``select``, times ``du``, summed over the batch by
    :func:`batch_sum` and then over the pooled map.
    """
    kh, kw, _, _ = kernel_shape
    ph, pw = pool_size
    slices = _offset_slices(x, (kh, kw), pool_size)
    offsets = jnp.stack([slices[r, s] for r in range(ph + kh - 1) for s in range(pw + kw - 1)], 1)
    offsets = offsets.reshape(x.shape[0], ph + kh - 1, pw + kw - 1, *offsets.shape[2:])
    taps_per_subgrid = [
        offsets[:, di : di + kh, dj : dj + kw].reshape(x.shape[0], kh * kw, *offsets.shape[3:])
        for di in range(ph)
        for dj in range(pw)
    ]
    under_maximum = _pick([taps[..., None] for taps in taps_per_subgrid], select[:, None])
    return batch_sum(under_maximum * du[:, None], fan_in=10).sum((1, 2)).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _conv_act_max_pool(x, kernel, bias, params, fn, pool_size):
    parts = _subgrid_conv(x, kernel, bias, pool_size)
    return functools.reduce(jnp.maximum, _activated(
        parts, fn, _param_subgrids(params, pool_size)))


def _conv_act_max_pool_forward(x, kernel, bias, params, fn, pool_size):
    pooled, select, v = _pool_forward(
        lambda *args: _subgrid_conv(*args, pool_size), (x, kernel, bias), fn, params, pool_size)
    return pooled, (x, kernel, bias, params, select, v)


def _conv_act_max_pool_backward(fn, pool_size, residuals, grad):
    x, kernel, bias, params, select, v = residuals
    map_shape = (*x.shape[:3], kernel.shape[-1])
    du, dparams = _pool_backward(grad, select, v, fn, params, pool_size, map_shape)
    dkernel = _subgrid_conv_kernel_grad(x, select, du, kernel.shape, pool_size)
    subgrids = range(pool_size[0] * pool_size[1])
    _, conv_vjp = jax.vjp(lambda x: _subgrid_conv(x, kernel, bias, pool_size), x)
    (dx,) = conv_vjp([jnp.where(select == q, du, 0).astype(du.dtype) for q in subgrids])
    return dx, dkernel, du.sum(axis=(0, 1, 2)), dparams


_conv_act_max_pool.defvjp(_conv_act_max_pool_forward, _conv_act_max_pool_backward)


def conv_act_max_pool(
    x: Array, kernel: Array, bias: Array, fn: Callable, a=None, b=None, pool_size=(2, 2)
) -> Array:
    """``act_max_pool(patch_conv(x, kernel, bias), fn, a, b, pool_size)`` for a 1-channel ``x``.

    The same values and gradients, but the full-resolution convolution output
    (100 x 28 x 28 x 16 in the paper's first block) is never stored, forward or
    backward: the convolution runs per pooling subgrid, fused with the
    activation and the maximum, and the kernel gradient is one matmul at pooled
    resolution.
    """
    if x.ndim != 4 or x.shape[-1] != 1 or kernel.shape[2] != 1:
        raise ValueError(
            f"conv_act_max_pool takes a 1-channel (N, H, W, 1) input and a (kh, kw, 1, F) "
            f"kernel, got {x.shape} and {kernel.shape}."
        )
    pool_size = checked_pool_size(x, pool_size)
    params = _agile_params(a, b, (*x.shape[:3], kernel.shape[-1]))
    return _conv_act_max_pool(x, kernel, bias, params, fn, pool_size)
