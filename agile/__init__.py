"""agile: learnable (agile) activation functions z = a * f(x - b) for JAX and Flax.

Pure JAX functions (``agile_relu``, ``agile(fn)``, ``combined(*fns)``, typed by the
protocols ``AgileFn`` and ``CombinedFn``), Flax linen layers (``Agile``,
``CombinedAgile``) and their factories for ``act=`` fields (``agile_factory``,
``activation_factory``), and optax helpers (``param_labels``, ``weight_decay_mask``)
load with ``import agile``. The submodules ``agile.nnx`` (Flax NNX layers),
``agile.fold`` (fold trained agile layers into a plain network) and ``agile.plotting``
(matplotlib) load on first use, so ``import agile`` needs neither ``flax.nnx`` nor
matplotlib. The distribution is ``agile-activations``.
"""

import importlib

__version__ = "0.3.0"

from agile.activations import (
    ACTIVATION_NAMES,
    AgileFn,
    CombinedFn,
    agile,
    agile_elu,
    agile_gelu,
    agile_leaky_relu,
    agile_relu,
    agile_sigmoid,
    agile_silu,
    agile_softplus,
    agile_tanh,
    combined,
    combined_a_init,
    get_activation,
)
from agile.labels import param_labels, weight_decay_mask
from agile.layers import (
    Agile,
    CombinedAgile,
    LayerFactory,
    activation_factory,
    activation_layer,
    agile_factory,
    validate_granularity,
)

_LAZY_SUBMODULES = ("nnx", "plotting", "fold")

__all__ = [
    "__version__",
    "ACTIVATION_NAMES",
    "Agile",
    "AgileFn",
    "CombinedAgile",
    "CombinedFn",
    "LayerFactory",
    "activation_factory",
    "activation_layer",
    "agile",
    "agile_elu",
    "agile_factory",
    "agile_gelu",
    "agile_leaky_relu",
    "agile_relu",
    "agile_sigmoid",
    "agile_silu",
    "agile_softplus",
    "agile_tanh",
    "combined",
    "combined_a_init",
    "get_activation",
    "param_labels",
    "validate_granularity",
    "weight_decay_mask",
]


def __getattr__(name: str):
    """Loads ``agile.nnx`` and ``agile.plotting`` on first attribute access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"agile.{name}")
    raise AttributeError(f"module 'agile' has no attribute {name!r}")
