"""agile.paper.models.transformer: the character-level decoder-only transformer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import compiled_init
from paper_testing import train_briefly

from agile.errors import ConfigError
from agile.paper.data import text as text_data
from agile.paper.models.transformer import Transformer, causal_attention

TINY = {"vocab_size": 11, "context": 16, "num_layers": 2, "width": 16, "num_heads": 2}


def _tokens(batch=3, length=16, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, 11).astype(jnp.uint8)


def test_shapes_and_mlp_activation_granularity():
    """Logits (B, T, vocab); an agile MLP activation has (a, b) per hidden channel (4 x
    width) by default and one pair per layer at granularity scalar; shorter sequences fit."""
    # Shapes only, so traced (jax.eval_shape), not computed: op by op, computing them
    # compiled every op of the model on its own (the slowest fast test of this file).
    model = Transformer(**TINY, activation="agile_gelu")
    variables = jax.eval_shape(model.init, jax.random.key(0), _tokens())

    def logits(tokens, **kwargs):
        return jax.eval_shape(lambda v, t: model.apply(v, t, **kwargs), variables, tokens)

    assert logits(_tokens(), train=True).shape == (3, 16, 11)
    assert logits(_tokens(length=5)).shape == (3, 5, 11)
    assert variables["params"]["block_1"]["mlp_act"]["a"].shape == (64,)
    assert "batch_stats" not in variables
    scalar = Transformer(**TINY, activation="xielu", granularity="scalar")
    assert jax.eval_shape(scalar.init, jax.random.key(0), _tokens())["params"]["block_0"][
        "mlp_act"]["alpha_p"].shape == ()


def test_attention_is_causal():
    """Changing the token at position 6 leaves the logits before it unchanged and changes
    those at and after it."""
    model = Transformer(**TINY)
    tokens = _tokens(1)
    variables = compiled_init(model, jax.random.key(0), tokens)
    changed = tokens.at[0, 6].set((tokens[0, 6] + 1) % 11)
    apply = jax.jit(model.apply)
    before, after = apply(variables, tokens), apply(variables, changed)
    np.testing.assert_array_equal(before[:, :6], after[:, :6])
    assert not np.allclose(before[:, 6], after[:, 6])
    assert not np.allclose(before[:, -1], after[:, -1])


@pytest.mark.slow
def test_einsum_and_dot_product_attention_agree():
    q, k, v = jax.random.normal(jax.random.key(3), (3, 2, 9, 4, 8))
    attention = jax.jit(causal_attention, static_argnums=3)
    np.testing.assert_allclose(attention(q, k, v, "einsum"),
                               attention(q, k, v, "dot_product"), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fast_and_reference_agile_mlps_compute_the_same_function():
    """implementation="fast" (channel_agile) and "reference" (agile.Agile): same values
    and gradients."""
    tokens = _tokens()
    fast = Transformer(**TINY, activation="agile_gelu")
    reference = Transformer(**TINY, activation="agile_gelu", implementation="reference")
    params = fast.init(jax.random.key(0), tokens)["params"]
    params = jax.tree.map(lambda p: p + 0.1, params)  # a != 1, b != 0

    def loss(params, model):
        return jnp.sum(model.apply({"params": params}, tokens) ** 2)

    np.testing.assert_allclose(loss(params, fast), loss(params, reference), rtol=1e-5)
    grads = [jax.grad(loss)(params, m) for m in (fast, reference)]
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_one_line_errors_for_bad_fields():
    cases = [({"activation": "swish"}, r"^Unknown activation 'swish'.*The transformer also "
                                       r"takes the baselines"),
             ({"granularity": "row"}, r"^Unknown granularity 'row'"),
             ({"context": 0}, r"^context must be a whole number >= 1, got 0\.$"),
             ({"num_layers": -1}, r"^num_layers must be a whole number >= 1, got -1\.$"),
             ({"num_heads": 3}, r"^width \(16\) must be a multiple of num_heads \(3\)\.$"),
             ({"attention": "flash"}, r"^Unknown attention 'flash'\. Valid: einsum, dot_product"),
             ({"implementation": "turbo"}, r"^Unknown implementation 'turbo'")]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            Transformer(**{**TINY, **fields}).validate()
    with pytest.raises(ValueError, match=r"^Sequences of 17 tokens exceed the context 16\."):
        Transformer(**TINY).init(jax.random.key(0), _tokens(length=17))


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["gelu", "agile_gelu"])
def test_a_short_training_on_a_tiny_corpus_learns(tmp_path, activation):
    """On windows of a tiny repetitive corpus (text_data), 60 steps take the per-character
    loss far below chance (ln of the vocabulary size)."""
    (tmp_path / "a.txt").write_text("the cat sat on the mat; the dog sat on the log. " * 30)
    datasets, vocabulary = text_data.load_text(tmp_path, context=16)
    inputs, targets = datasets.train[0][:64], datasets.train[1][:64]
    model = Transformer(**{**TINY, "vocab_size": len(vocabulary)}, activation=activation)
    _, first, last = train_briefly(model, jnp.asarray(inputs), jnp.asarray(targets, jnp.int32),
                                   steps=60, learning_rate=1e-2)
    chance = math.log(len(vocabulary))
    assert first > 0.8 * chance and last < 0.4 * chance
    assert text_data.bits_per_character(last) < 0.4 * math.log2(len(vocabulary))
