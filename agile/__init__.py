"""agile: learnable (agile) activation functions z = a * f(x - b) for JAX and Flax."""

__version__ = "0.2.0"

from agile.activations import (
    ACTIVATION_NAMES,
    agile,
    agile_elu,
    agile_gelu,
    agile_leaky_relu,
    agile_relu,
    agile_sigmoid,
    agile_silu,
    agile_softplus,
    agile_tanh,
    get_activation,
)
from agile.layers import Agile, activation_layer

__all__ = [
    "__version__",
    "ACTIVATION_NAMES",
    "Agile",
    "activation_layer",
    "agile",
    "agile_elu",
    "agile_gelu",
    "agile_leaky_relu",
    "agile_relu",
    "agile_sigmoid",
    "agile_silu",
    "agile_softplus",
    "agile_tanh",
    "get_activation",
]
