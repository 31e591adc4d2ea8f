"""agile: learnable (agile) activation functions z = a * f(x - b) for JAX and Flax.

Pure JAX functions (``agile_relu``, ``agile(fn)``, ``combined(*fns)``, typed by the
protocols ``AgileFn`` and ``CombinedFn``), Flax linen layers (``Agile``,
``CombinedAgile``) and their factories for ``act=`` fields (``agile_factory``,
``activation_factory``), and optax helpers (``param_labels``, ``weight_decay_mask``)
load with ``import agile``, as does ``fold`` (:func:`agile.folding.fold`: fold trained
agile layers into a plain network; its links, results and errors are in
:mod:`agile.folding`). The submodules ``agile.nnx`` (Flax NNX layers) and
``agile.plotting`` (matplotlib) load on first use, so ``import agile`` needs neither
``flax.nnx`` nor matplotlib. The distribution is ``agile-activations``.
"""

import importlib
import sys
from typing import TYPE_CHECKING

__version__ = "0.4.0"

from agile import folding
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
from agile.folding import fold
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

if TYPE_CHECKING:  # for type checkers: the lazy submodules' real types, not Any
    from agile import nnx, plotting  # noqa: F401

# Before 0.4.0 the fold module was agile.fold; agile.fold is now the function, and this keeps
# ``from agile.fold import chain, fold`` (and ``import agile.fold``) finding the module.
sys.modules.setdefault("agile.fold", folding)

_LAZY_SUBMODULES = ("nnx", "plotting")

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
    "fold",
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
