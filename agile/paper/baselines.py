"""The learnable activations the field already uses, as baselines for agile ones in the study.

Each is a linen layer whose parameters follow the granularity rules of :mod:`agile.layers`
(one set per element, per channel or per layer), named in a config like any activation:

- ``"prelu"``: PReLU (He et al. 2015), ``max(0, x) + alpha * min(0, x)``, ``alpha`` = 0.25
  at the start (He et al.'s and PyTorch's value).
- ``"swish_beta"``: Swish with a learned beta (Ramachandran et al. 2017),
  ``x * sigmoid(beta * x)``, ``beta`` = 1 at the start (SiLU).
- ``"apl:<S>"``: APL with S hinges (Agostinelli et al. 2015),
  ``max(0, x) + sum_s a_s * max(0, -x + b_s)`` (parameters ``slope`` = a and ``hinge`` = b,
  named apart from agile a and b); ``a_s`` = 0 at the start (the unit starts as ReLU, as an
  agile unit starts as its plain activation) and the hinges ``b_s`` evenly spread over
  [-1, 1] (distinct, so they learn different things).
- ``"xielu"``: xIELU (Huang & Schlag 2024, arXiv 2411.13010, "Deriving Activation Functions
  Using Integration"), ``alpha_p * x**2 + beta * x`` for ``x > 0`` and
  ``alpha_n * (expm1(min(x, eps)) - x) + beta * x`` for ``x <= 0``, with
  ``alpha_p = softplus(alpha_p_raw)`` and ``alpha_n = beta + softplus(alpha_n_raw)`` learned
  (parameters ``alpha_p``, ``alpha_n`` hold the raw values), ``beta`` = 0.5 and
  ``eps`` = -1e-6 fixed, and ``alpha_p = alpha_n = 0.8`` at the start: the paper's reference
  implementation's values. The paper learns one pair per layer: ``granularity="scalar"``;
  like the other baselines it follows the granularity given.

Their parameters are weights to :func:`agile.param_labels` (they are not agile a and b), so
they train at ``config.learning_rate`` (the study's default equals the agile rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.errors import ConfigError, unknown_value_error
from agile.layers import broadcast_shape, parameter_shape

PRELU, SWISH_BETA, APL_PREFIX, XIELU_NAME = "prelu", "swish_beta", "apl:", "xielu"
BASELINE_FORMS = (PRELU, SWISH_BETA, "apl:<hinges>", XIELU_NAME)
PRELU_INIT = 0.25
XIELU_BETA, XIELU_EPS, XIELU_ALPHA_INIT = 0.5, -1e-6, 0.8


def apl_hinges(name: str) -> int:
    """S of ``"apl:<S>"``; ConfigError unless S is a whole number >= 1."""
    text = name[len(APL_PREFIX):]
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"In {name!r}: APL takes a whole number of hinges >= 1, e.g. 'apl:2'.")
    return int(text)


def is_baseline_name(name: object) -> bool:
    """Whether ``name`` names a baseline of this module (``"apl:<S>"`` with any S)."""
    return isinstance(name, str) and (name in (PRELU, SWISH_BETA, XIELU_NAME)
                                      or name.startswith(APL_PREFIX))


def validate_baseline_name(name: str) -> str:
    """``name`` if it names a baseline, else a one-line ConfigError listing the forms."""
    if not is_baseline_name(name):
        raise unknown_value_error("baseline activation", name, BASELINE_FORMS)
    if name.startswith(APL_PREFIX):
        apl_hinges(name)
    return name


class _Learned(nn.Module):
    """Parameters of ``shape_lead + parameter_shape(x)`` placed as the agile layers place a, b."""

    granularity: str = "channel"

    def _param(self, name: str, x: jax.Array, init: Callable, lead: tuple[int, ...] = ()):
        shape = parameter_shape(x.shape, self.granularity)
        value = self.param(name, init, lead + shape, jnp.float32)
        placement = -1 if self.granularity == "channel" else None
        target = lead + broadcast_shape(shape, x.shape, placement, type(self).__name__)
        return value.reshape(target).astype(x.dtype)


class PReLU(_Learned):
    """``max(0, x) + alpha * min(0, x)`` with a learned ``alpha``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self._param("alpha", x, nn.initializers.constant(PRELU_INIT))
        return jnp.maximum(x, 0) + alpha * jnp.minimum(x, 0)


class SwishBeta(_Learned):
    """``x * sigmoid(beta * x)`` with a learned ``beta``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        beta = self._param("beta", x, nn.initializers.ones)
        return x * jax.nn.sigmoid(beta * x)


def _spread_hinges(key, shape, dtype=jnp.float32) -> jax.Array:
    del key
    hinges = shape[0]
    spots = jnp.linspace(-1.0, 1.0, hinges) if hinges > 1 else jnp.zeros(1)
    return jnp.broadcast_to(spots.reshape((hinges,) + (1,) * (len(shape) - 1)), shape).astype(
        dtype)


class APL(_Learned):
    """``max(0, x) + sum_s a_s * max(0, -x + b_s)`` with learned ``a`` and ``b`` (S hinges)."""

    hinges: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lead = (self.hinges,)
        a = self._param("slope", x, nn.initializers.zeros, lead)
        b = self._param("hinge", x, _spread_hinges, lead)
        return jnp.maximum(x, 0) + sum(a[s] * jnp.maximum(b[s] - x, 0)
                                       for s in range(self.hinges))


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class XIELU(_Learned):
    """xIELU: ``alpha_p x^2 + beta x`` for ``x > 0``, ``alpha_n (expm1(min(x, eps)) - x) +
    beta x`` for ``x <= 0``; ``alpha_p = softplus(raw)``, ``alpha_n = beta + softplus(raw)``.

    ``beta`` and ``eps`` are fixed (the paper's 0.5 and -1e-6); ``min(x, eps)`` keeps the
    unused branch of ``where`` finite for large positive ``x``, so its gradient is 0, not nan.
    """

    beta: float = XIELU_BETA
    eps: float = XIELU_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p_init = nn.initializers.constant(_inverse_softplus(XIELU_ALPHA_INIT))
        n_init = nn.initializers.constant(_inverse_softplus(XIELU_ALPHA_INIT - self.beta))
        alpha_p = jax.nn.softplus(self._param("alpha_p", x, p_init))
        alpha_n = self.beta + jax.nn.softplus(self._param("alpha_n", x, n_init))
        negative = alpha_n * (jnp.expm1(jnp.minimum(x, self.eps)) - x)
        return jnp.where(x > 0, alpha_p * x * x, negative) + self.beta * x


def baseline_layer(name: str, granularity: str, layer_name: str) -> nn.Module:
    """The layer ``name`` (``"prelu"``, ``"swish_beta"``, ``"apl:<S>"``, ``"xielu"``) at
    ``granularity``."""
    validate_baseline_name(name)
    if name == XIELU_NAME:
        return XIELU(granularity=granularity, name=layer_name)
    if name == PRELU:
        return PReLU(granularity=granularity, name=layer_name)
    if name == SWISH_BETA:
        return SwishBeta(granularity=granularity, name=layer_name)
    return APL(granularity=granularity, hinges=apl_hinges(name), name=layer_name)
