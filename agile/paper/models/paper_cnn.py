"""The paper's CNN: conv -> activation -> pooling blocks, a hidden dense layer, logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.errors import ConfigError, as_config_error, unknown_value_error
from agile.layers import validate_granularity
from agile.paper.models.activations import (
    activation_parts,
    fusable_activation,
    named_activation,
    validate_activation,
)
from agile.paper.models.ops import (
    act_max_pool,
    canonical_conv,
    conv_act_max_pool,
    patch_conv,
    reshape_pool,
    validate_pooling,
)

IMPLEMENTATIONS = ("fast", "reference")


class SameConv(nn.Module):
    """Stride-1 SAME convolution with ``nn.Conv``'s parameters (``kernel``, ``bias``).

    Same parameter names, shapes and initializers as ``nn.Conv``, so one
    parameter tree serves both. A single-channel input goes through
    :func:`agile.paper.models.ops.patch_conv` (one matmul; XLA:CPU's convolution is slow for
    it); wider inputs through :func:`agile.paper.models.ops.canonical_conv` (XLA's
    convolution, with gradients XLA:CPU runs fast also inside loops, as the
    seed batches of ``agile.paper.parallel`` need), which beat patches @ kernel on
    XLA:CPU for the 16- and 8-channel layers.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array, block: Callable | None = None) -> jax.Array:
        """The convolution of ``x``; with ``block``, ``block(x, kernel, bias)`` instead.

        ``block`` lets a caller fuse the convolution with what follows it
        (:func:`agile.paper.models.ops.conv_act_max_pool`) while the parameters stay this layer's.
        """
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        if block is not None:
            return block(x, kernel, bias)
        if x.shape[-1] == 1:
            return patch_conv(x, kernel, bias)
        return canonical_conv(x, kernel) + bias


class CNN(nn.Module):
    """Kong, Ko & Ko (2020) MNIST CNN with configurable (agile) activations.

    Conv layers use SAME padding; pooling is VALID with stride = window, so a
    7x7 map pools to 3x3. Agile activations get one (a, b) pair per element by
    default (per feature-map position and channel; per dense node).

    ``implementation="fast"`` computes the same function with the same
    parameters as ``"reference"`` (``nn.Conv`` and ``nn.max_pool``/``nn.avg_pool``)
    through :mod:`agile.paper.models.ops`, several times faster to train on XLA:CPU.
    """

    conv_features: Sequence[int] = (16, 8, 4)
    kernel_size: tuple[int, int] = (3, 3)
    pool_size: tuple[int, int] = (2, 2)
    pooling: str = "max"
    dense_features: int = 30
    num_classes: int = 10
    conv_activation: str = "relu"
    dense_activation: str = "relu"
    granularity: str = "element"
    implementation: str = "fast"

    def validate(self) -> None:
        """Raises ConfigError (a ValueError) for a bad field, before anything is traced.

        Activations are plain names, ``agile_<name>``, ``combined:<name>,<name>,...`` or a
        baseline of :mod:`agile.paper.baselines` (``prelu``, ``swish_beta``, ``apl:<S>``).
        No ``conv_features`` makes a network of dense layers only.
        """
        for activation in (self.conv_activation, self.dense_activation):
            validate_activation(activation, "The paper's CNN")
        with as_config_error():
            validate_granularity(self.granularity)
        validate_pooling(self.pooling)
        if any(int(f) < 1 for f in self.conv_features):
            raise ConfigError(f"conv_features must be positive integers, got {self.conv_features}.")
        if self.implementation not in IMPLEMENTATIONS:
            raise unknown_value_error("implementation", self.implementation, IMPLEMENTATIONS)
        sizes = (*self.kernel_size, *self.pool_size)
        if len(sizes) != 4 or any(int(size) < 1 for size in sizes):
            raise ConfigError(
                f"kernel_size and pool_size must be pairs of positive integers, "
                f"got {self.kernel_size} and {self.pool_size}."
            )

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Maps images (N, H, W, C) to logits (N, num_classes); ``train`` (the experiment
        loop's flag for models with batch statistics or dropout) changes nothing here."""
        del train
        self.validate()
        x = images
        kernel_size, pool_size = tuple(self.kernel_size), tuple(self.pool_size)
        for i, features in enumerate(self.conv_features):
            if self.implementation == "fast":
                x = self._fast_block(i, features, x)
                continue
            x = nn.Conv(features, kernel_size, padding="SAME", name=f"conv_{i}")(x)
            x = self._activation(self.conv_activation, f"conv_act_{i}")(x)
            x = self._pool(x, pool_size)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.dense_features, name="hidden")(x)
        x = self._activation(self.dense_activation, "hidden_act")(x)
        return nn.Dense(self.num_classes, name="output")(x)

    def _fast_block(self, i: int, features: int, x: jax.Array) -> jax.Array:
        """Block ``i`` (conv -> activation -> pooling) of the fast path.

        Max pooling after a plain or ``Agile`` activation runs fused with it
        (:func:`agile.paper.models.ops.act_max_pool`), and with the convolution too for a
        1-channel input (:func:`agile.paper.models.ops.conv_act_max_pool`); other activations
        and average pooling run one layer after the other.
        """
        kernel_size, pool_size = tuple(self.kernel_size), tuple(self.pool_size)
        conv = SameConv(features, kernel_size, name=f"conv_{i}")
        layer = self._activation(self.conv_activation, f"conv_act_{i}")
        fusable = self.pooling == "max" and fusable_activation(layer)
        if not fusable:
            return self._pool(layer(conv(x)), pool_size)
        map_shape = (*x.shape[:3], features)
        fn, a, b = activation_parts(layer, map_shape)
        if x.shape[-1] == 1:
            block = lambda x, k, bias: conv_act_max_pool(x, k, bias, fn, a, b, pool_size)  # noqa: E731
            return conv(x, block=block)
        return act_max_pool(conv(x), fn, a, b, pool_size)

    def _pool(self, x: jax.Array, pool_size: tuple[int, int]) -> jax.Array:
        """VALID pooling with stride = window, in the chosen implementation."""
        if self.implementation == "fast":
            return reshape_pool(x, pool_size, self.pooling)
        pool = nn.max_pool if self.pooling == "max" else nn.avg_pool
        return pool(x, pool_size, strides=pool_size, padding="VALID")

    def _activation(self, activation: str, name: str):
        """A named ``Agile`` or ``CombinedAgile`` layer for agile or combined names, a named
        baseline layer (:mod:`agile.paper.baselines`), else f
        (:func:`agile.paper.models.activations.named_activation`)."""
        return named_activation(activation, self.granularity, name)


def count_params(params) -> int:
    """Total number of scalars in a parameter tree."""
    return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
