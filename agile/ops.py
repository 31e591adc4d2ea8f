"""Pure array ops behind the CNN's fast path: patch convolution and reshape pooling.

XLA:CPU runs ``nn.max_pool``'s backward (``select_and_scatter``) and convolutions
with a single input channel slowly. These ops express the same math as
reshapes, elementwise work and one matmul, which XLA:CPU handles well and
which ``jax.vmap`` turns into batched matmuls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array
POOLINGS = ("max", "avg")


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


def reshape_pool(x: Array, pool_size: tuple[int, int], pooling: str) -> Array:
    """VALID pooling with stride = window, as a reshape and a max or mean.

    Equals ``nn.max_pool`` / ``nn.avg_pool(x, pool_size, strides=pool_size,
    padding="VALID")`` on (N, H, W, C), so odd sizes crop (7 -> 3), and so
    do their gradients, ties included (the max's goes to each window's first
    maximum).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}. Valid: {', '.join(POOLINGS)}.")
    pool_size = tuple(int(p) for p in pool_size)
    if x.shape[1] < pool_size[0] or x.shape[2] < pool_size[1]:
        raise ValueError(f"Pool window {pool_size} is larger than the {x.shape[1:3]} map.")
    if pooling == "max":
        return _max_pool(x, pool_size)
    return _pool_windows(x, pool_size).mean(axis=(2, 4))


def _conv_nhwc(x: Array, kernel: Array, padding) -> Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


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
    grad_kernel = _conv_nhwc(x.transpose(3, 1, 2, 0), grad.transpose(1, 2, 0, 3), padding)
    return grad_x, grad_kernel.transpose(1, 2, 0, 3)


canonical_conv.defvjp(_canonical_conv_forward, _canonical_conv_backward)
