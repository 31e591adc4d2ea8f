"""A small ResNet with BatchNorm for 28x28 images (Fashion-MNIST), activations by name.

Layout (He et al. 2016's CIFAR ResNets, narrowed): a 3x3 stem convolution -> BatchNorm ->
activation; three stages of basic residual blocks (3x3 conv -> BatchNorm -> activation ->
3x3 conv -> BatchNorm, plus the skip, then the activation), ``widths`` 16/32/64 channels, the
first block of stages 2 and 3 halving the map with stride 2 (28 -> 14 -> 7) and its skip a
1x1 convolution + BatchNorm where the shape changes; global average pooling; a dense output.

Why BatchNorm matters for agile activations: after BatchNorm a per-channel agile ReLU
``a * relu(x - b)`` is nearly a reparameterisation (BatchNorm's scale and shift can absorb
``a`` and ``b``), which is the question this model lets the study ask.

BatchNorm keeps its running statistics in the ``batch_stats`` collection: ``train=True``
normalises by the batch and updates them (apply with ``mutable=["batch_stats"]``),
``train=False`` uses them. Activations follow :mod:`agile.paper.models.activations`: every
name of :mod:`agile.activations` and of :mod:`agile.paper.baselines`, one layer per place
(each with its own parameters), per channel by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.errors import ConfigError, as_config_error, unknown_value_error
from agile.layers import validate_granularity
from agile.paper.models.activations import IMPLEMENTATIONS, activate, validate_activation
from agile.paper.models.ops import strided_canonical_conv

BN_MOMENTUM = 0.9  # flax's ResNet examples' value: running stats follow ~10 recent batches.


class Conv(nn.Module):
    """A bias-free SAME convolution with ``nn.Conv``'s parameter (``kernel``: its shape and
    initializer): ``implementation="fast"`` through
    :func:`agile.paper.models.ops.strided_canonical_conv` (its gradients stay fast inside the
    loops of seed batches), ``"reference"`` through ``lax.conv_general_dilated`` as ``nn.Conv``
    computes it. Both read one parameter tree."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    implementation: str = "fast"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                            jnp.float32)
        if self.implementation == "reference":
            return jax.lax.conv_general_dilated(x, kernel, (self.strides,) * 2, "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return strided_canonical_conv(x, kernel, self.strides)


class ResidualBlock(nn.Module):
    """conv -> BN -> act -> conv -> BN, plus the skip (1x1 conv + BN when the shape changes),
    then act."""

    features: int
    strides: int
    activation: str
    granularity: str
    implementation: str = "fast"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = partial(Conv, self.features, implementation=self.implementation)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM)
        y = conv(3, self.strides, name="conv_0")(x)
        y = self._act(norm(name="bn_0")(y), "act_0")
        y = conv(3, name="conv_1")(y)
        y = norm(name="bn_1")(y)
        skip = x
        if x.shape[-1] != self.features or self.strides != 1:
            skip = conv(1, self.strides, name="skip_conv")(x)
            skip = norm(name="skip_bn")(skip)
        return self._act(y + skip, "act_1")

    def _act(self, x: jax.Array, name: str) -> jax.Array:
        return activate(x, self.activation, self.granularity, name, self.implementation)


class ResNet(nn.Module):
    """Stem, ``len(widths)`` stages of ``blocks_per_stage`` residual blocks, global average
    pooling, dense logits; ``model(images (N, H, W, C), train) -> logits (N, num_classes)``.

    Attributes:
      widths: channels of each stage (the stem has ``widths[0]``); every stage after the first
        starts with a stride-2 block.
      blocks_per_stage: residual blocks per stage (1 -> 8 conv layers, 3 -> ResNet-20's 20).
      num_classes: logits per image.
      activation: any name :func:`agile.paper.models.activations.validate_activation` takes
        (``relu``, ``agile_relu``, ``gelu``, ``combined:relu,tanh``, ``prelu``, ``apl:2``...).
      granularity: where learned activations place their parameters: ``"channel"`` (default,
        one set per channel of each layer), ``"element"`` or ``"scalar"``.
      implementation: ``"fast"`` (default) runs per-channel agile activations through
        :func:`channel_agile` and the convolutions through :class:`Conv`'s fast path;
        ``"reference"`` through ``agile.Agile`` and ``nn.Conv``'s convolution (same
        function, same parameters).
    """

    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    num_classes: int = 10
    activation: str = "relu"
    granularity: str = "channel"
    implementation: str = "fast"

    def validate(self) -> None:
        """Raises a one-line ConfigError for a bad field, before anything is traced."""
        validate_activation(self.activation, "The ResNet")
        with as_config_error():
            validate_granularity(self.granularity)
        if not self.widths or any(_not_positive(w) for w in self.widths):
            raise ConfigError(f"widths must be one or more positive integers, got {self.widths}.")
        if _not_positive(self.blocks_per_stage):
            raise ConfigError(
                f"blocks_per_stage must be a positive integer, got {self.blocks_per_stage!r}.")
        if self.implementation not in IMPLEMENTATIONS:
            raise unknown_value_error("implementation", self.implementation, IMPLEMENTATIONS)
        if _not_positive(self.num_classes):
            raise ConfigError(f"num_classes must be a positive integer, got {self.num_classes!r}.")

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        self.validate()
        x = Conv(self.widths[0], implementation=self.implementation, name="stem")(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name="stem_bn")(x)
        x = activate(x, self.activation, self.granularity, "stem_act", self.implementation)
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, strides, self.activation, self.granularity,
                                  self.implementation, name=f"stage_{stage}_block_{block}")(
                                      x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="output")(x)


def _not_positive(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < 1
