"""Activation layers by name for every model of the experiments: one resolver, one check.

A name is a plain activation (``relu``, ``gelu``, ...), ``agile_<plain>``,
``combined:<plain>,<plain>,...`` (all of :mod:`agile.activations`) or a baseline of
:mod:`agile.paper.baselines` (``prelu``, ``swish_beta``, ``apl:<S>``, ``xielu``). The paper's
CNN, the ResNet and the transformer build their activation layers here, so a name means the
same thing, and is refused with the same one-line error, in each of them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from agile.activations import is_learnable_name, validate_activation_name
from agile.errors import ConfigError
from agile.layers import activation_layer
from agile.paper.baselines import (
    BASELINE_FORMS,
    baseline_layer,
    is_baseline_name,
    validate_baseline_name,
)


def validate_activation(activation: str, model: str) -> str:
    """``activation`` if it names an activation or a baseline, else a one-line ConfigError.

    ``model`` names the model in the message (``"The paper's CNN"``), which lists the
    baselines after the library's names.
    """
    if is_baseline_name(activation):
        return validate_baseline_name(activation)
    try:
        return validate_activation_name(activation)
    except ConfigError as err:
        raise ConfigError(f"{err} {model} also takes the baselines "
                          f"{', '.join(BASELINE_FORMS)}.") from None


def named_activation(activation: str, granularity: str, name: str) -> Callable[[jax.Array],
                                                                                jax.Array]:
    """A layer named ``name`` for agile, combined or baseline names, else the plain function.

    Agile and combined names give ``Agile``/``CombinedAgile`` (:func:`agile.activation_layer`);
    baselines their layer of :mod:`agile.paper.baselines`; both place their parameters by
    ``granularity``. A plain name gives the parameter-free function (no submodule).
    """
    if is_baseline_name(activation):
        return baseline_layer(activation, granularity, name)
    if is_learnable_name(activation):
        return activation_layer(activation, granularity, name=name)
    return activation_layer(activation, granularity)
