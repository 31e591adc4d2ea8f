"""A character-level decoder-only transformer whose MLP activation is chosen by name.

``model(tokens (B, T), train) -> logits (B, T, vocab_size)``: a token embedding plus learned
positions, ``num_layers`` pre-LayerNorm blocks (``x + attention(LN(x))``, then
``x + MLP(LN(x))``), a final LayerNorm and a dense layer to the vocabulary's logits. The
attention is causal multi-head self-attention (one fused q/k/v projection, ``num_heads``
heads of ``width / num_heads``); the MLP is ``width -> 4 * width -> width`` with the named
activation in between. No dropout (``train`` changes nothing; it is the seam's signature).

An agile activation in the MLP has one ``(a, b)`` per hidden channel (``granularity=
"channel"``, the default: parameters of shape ``(4 * width,)``) or one pair per layer
(``"scalar"``, as xATLU/xIELU learn theirs); the baselines of :mod:`agile.paper.baselines`
(``xielu``, ``prelu``, ...) follow the same granularity.

Speed on XLA:CPU (``benchmarks/benchmark_models.py``): the attention is written as two
einsums over ``(B, H, T, D)`` with the causal mask added before a float32 softmax, which
XLA:CPU fuses well; ``jax.nn.dot_product_attention`` computes the same function
(``attention="dot_product"``) and was measured against it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.errors import ConfigError, as_config_error, unknown_value_error
from agile.layers import validate_granularity
from agile.paper.models.activations import IMPLEMENTATIONS, activate, validate_activation

ATTENTIONS = ("einsum", "dot_product")
MLP_RATIO = 4


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, kind: str = "einsum"
                     ) -> jax.Array:
    """Causal softmax attention of ``q, k, v`` of shape ``(B, T, H, D)`` -> ``(B, T, H, D)``.

    ``kind="einsum"``: scores ``q k^T / sqrt(D)`` with ``-inf``-like values above the
    diagonal; ``"dot_product"``: ``jax.nn.dot_product_attention(is_causal=True)``.
    """
    if kind == "dot_product":
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    t = q.shape[1]
    mask = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class Block(nn.Module):
    """Pre-LayerNorm block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``."""

    width: int
    num_heads: int
    activation: str
    granularity: str
    attention: str
    implementation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        head_dim = self.width // self.num_heads
        y = nn.LayerNorm(name="ln_attention")(x)
        qkv = nn.Dense(3 * self.width, name="qkv")(y)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2)
        y = causal_attention(q, k, v, self.attention).reshape(batch, length, self.width)
        x = x + nn.Dense(self.width, name="attention_out")(y)
        y = nn.LayerNorm(name="ln_mlp")(x)
        y = nn.Dense(MLP_RATIO * self.width, name="mlp_in")(y)
        y = activate(y, self.activation, self.granularity, "mlp_act", self.implementation)
        return x + nn.Dense(self.width, name="mlp_out")(y)


class Transformer(nn.Module):
    """Decoder-only character transformer; ``model(tokens (B, T), train) -> (B, T, vocab)``.

    Attributes:
      vocab_size: characters in the vocabulary (logits per position).
      context: the longest sequence (rows of the learned position table); ``T <= context``.
      num_layers, width, num_heads: blocks, model width, attention heads (``width`` must be a
        multiple of ``num_heads``).
      activation: the MLP's activation, any name
        :func:`agile.paper.models.activations.validate_activation` takes (``gelu``,
        ``agile_gelu``, ``xielu``, ...).
      granularity: ``"channel"`` (default: per hidden channel), ``"scalar"`` (per layer) or
        ``"element"`` (per position and channel).
      attention: ``"einsum"`` (default) or ``"dot_product"``, the same function
        (:func:`causal_attention`).
      implementation: ``"fast"`` (default: a per-channel agile activation through
        :func:`agile.paper.models.activations.channel_agile`) or ``"reference"``
        (``agile.Agile``); the same function and parameters.
    """

    vocab_size: int
    context: int = 128
    num_layers: int = 4
    width: int = 128
    num_heads: int = 4
    activation: str = "gelu"
    granularity: str = "channel"
    attention: str = "einsum"
    implementation: str = "fast"

    def validate(self) -> None:
        """Raises a one-line ConfigError for a bad field, before anything is traced."""
        validate_activation(self.activation, "The transformer")
        with as_config_error():
            validate_granularity(self.granularity)
        for field in ("vocab_size", "context", "num_layers", "width", "num_heads"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a whole number >= 1, got {value!r}.")
        if self.width % self.num_heads:
            raise ConfigError(f"width ({self.width}) must be a multiple of num_heads "
                              f"({self.num_heads}).")
        if self.attention not in ATTENTIONS:
            raise unknown_value_error("attention", self.attention, ATTENTIONS)
        if self.implementation not in IMPLEMENTATIONS:
            raise unknown_value_error("implementation", self.implementation, IMPLEMENTATIONS)

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout: training and evaluation compute the same function
        self.validate()
        length = tokens.shape[-1]
        if length > self.context:
            raise ValueError(f"Sequences of {length} tokens exceed the context {self.context}.")
        x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens.astype(jnp.int32))
        positions = self.param("positions", nn.initializers.normal(0.02),
                               (self.context, self.width), jnp.float32)
        x = x + positions[:length]
        for i in range(self.num_layers):
            x = Block(self.width, self.num_heads, self.activation, self.granularity,
                      self.attention, self.implementation, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.vocab_size, name="logits")(x)
