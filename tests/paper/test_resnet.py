"""agile.paper.models.resnet: the BatchNorm ResNet with activations by name."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import compiled_init, first_fast
from paper_testing import train_briefly

from agile.errors import ConfigError
from agile.layers import Agile
from agile.paper.models.activations import channel_agile
from agile.paper.models.resnet import ResNet

TINY = {"widths": (4, 8, 8)}


def _images(n=6, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


@pytest.mark.slow
def test_shapes_and_per_channel_agile_parameters():
    """Logits (N, classes); the map halves per stage; agile a, b per channel of each layer."""
    model = ResNet(**TINY, blocks_per_stage=2, activation="agile_relu", num_classes=7)
    variables = compiled_init(model, jax.random.key(0), _images(), train=False)
    assert model.apply(variables, _images(), train=False).shape == (6, 7)
    params = variables["params"]
    assert params["stem_act"]["a"].shape == (4,)
    assert params["stage_2_block_1"]["act_1"]["b"].shape == (8,)
    assert "skip_conv" in params["stage_1_block_0"]  # 4 -> 8 channels, stride 2
    assert "skip_conv" not in params["stage_2_block_1"]
    assert variables["batch_stats"]["stem_bn"]["mean"].shape == (4,)


@pytest.mark.parametrize("activation, granularity", first_fast([
    ("relu", "channel"), ("gelu", "scalar"), ("agile_relu", "element"),
    ("combined:relu,tanh", "channel"), ("prelu", "channel"), ("swish_beta", "scalar"),
    ("apl:2", "channel"), ("xielu", "scalar")], multiple_args=True))
def test_every_kind_of_activation_name_builds(activation, granularity):
    model = ResNet(**TINY, activation=activation, granularity=granularity)
    variables = compiled_init(model, jax.random.key(0), _images(2), train=False)
    assert np.all(np.isfinite(model.apply(variables, _images(2), train=False)))


@pytest.mark.slow
def test_batchnorm_stats_update_in_training_and_serve_evaluation():
    """train=True normalises by the batch and updates the running stats; train=False uses
    the stored stats: an image's logits do not depend on the rest of the batch, and change
    when the stats do."""
    model = ResNet(**TINY)
    images = _images(8)
    variables = compiled_init(model, jax.random.key(0), images, train=False)
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before, after = variables["batch_stats"], updates["batch_stats"]
    assert not np.allclose(before["stem_bn"]["mean"], after["stem_bn"]["mean"])
    assert not np.allclose(before["stage_1_block_0"]["bn_1"]["var"],
                           after["stage_1_block_0"]["bn_1"]["var"])
    trained = {"params": variables["params"], "batch_stats": after}
    whole = model.apply(trained, images, train=False)
    np.testing.assert_allclose(model.apply(trained, images[:3], train=False), whole[:3],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.apply(variables, images, train=False), whole)
    in_training = model.apply(trained, images[:3], train=True, mutable=["batch_stats"])[0]
    assert not np.allclose(in_training, whole[:3])


@pytest.mark.parametrize("fn", ["relu", "gelu", "tanh"])
def test_channel_agile_equals_the_agile_layer_with_its_gradients(fn):
    """The fast path is agile.Agile per channel: same values, same gradients in x, a, b."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 5, 4))
    a = jnp.array([1.5, -0.5, 1.0, 2.0])
    b = jnp.array([0.1, -0.3, 0.0, 0.5])
    layer = Agile(fn)
    reference = lambda x, a, b: jnp.sum(jnp.sin(layer.apply(  # noqa: E731
        {"params": {"a": a, "b": b}}, x)))
    fast = lambda x, a, b: jnp.sum(jnp.sin(channel_agile(  # noqa: E731
        jax.nn.relu if fn == "relu" else getattr(jax.nn, fn, jnp.tanh), x, a, b)))
    np.testing.assert_allclose(fast(x, a, b), reference(x, a, b), rtol=1e-6)
    for got, want in zip(jax.grad(fast, (0, 1, 2))(x, a, b),
                         jax.grad(reference, (0, 1, 2))(x, a, b), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fast_and_reference_resnets_compute_the_same_function():
    """Same parameter tree, same logits and gradients in training mode."""
    images = _images(4)
    fast = ResNet(**TINY, activation="agile_relu")
    reference = ResNet(**TINY, activation="agile_relu", implementation="reference")
    variables = compiled_init(fast, jax.random.key(0), images, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        compiled_init(reference, jax.random.key(0), images, train=False))

    def loss(params, model):
        logits, _ = model.apply({**variables, "params": params}, images, train=True,
                                mutable=["batch_stats"])
        return jnp.sum(logits ** 2)

    np.testing.assert_allclose(loss(variables["params"], fast),
                               loss(variables["params"], reference), rtol=1e-5)
    grads = [jax.grad(loss)(variables["params"], m) for m in (fast, reference)]
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_one_line_errors_for_bad_fields():
    cases = [({"activation": "swish"}, r"^Unknown activation 'swish'.*The ResNet also takes "
                                       r"the baselines prelu, swish_beta, apl:<hinges>, xielu\.$"),
             ({"activation": "apl:0"}, r"^In 'apl:0': APL takes a whole number of hinges"),
             ({"granularity": "pixel"}, r"^Unknown granularity 'pixel'"),
             ({"widths": ()}, r"^widths must be one or more positive integers"),
             ({"widths": (8, 0)}, r"^widths must be one or more positive integers"),
             ({"blocks_per_stage": 0}, r"^blocks_per_stage must be a positive integer, got 0"),
             ({"num_classes": -1}, r"^num_classes must be a positive integer"),
             ({"implementation": "turbo"}, r"^Unknown implementation 'turbo'")]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            ResNet(**fields).validate()
        assert "\n" not in str(pytest.raises(ConfigError, ResNet(**fields).validate).value)


def _pattern_images(n=96, classes=4, seed=0):
    """Class c: a bright 7x7 patch in quadrant c, on noise (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.uniform(0, 0.5, (n, 28, 28, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        row, col = 14 * (c // 2) + 3, 14 * (c % 2) + 3
        images[i, row:row + 7, col:col + 7] += 1.0
    return jnp.asarray(images), jnp.asarray(labels, jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "agile_relu"])
def test_a_short_training_learns(activation):
    """40 full-batch steps take the loss far below chance (ln 4) on quadrant patterns, and
    the trained stats classify in evaluation mode too."""
    images, labels = _pattern_images()
    model = ResNet(**TINY, activation=activation, num_classes=4)
    variables, first, last = train_briefly(model, images, labels, steps=40, learning_rate=1e-2)
    assert first > 0.8 * math.log(4) and last < 0.2 * math.log(4)
    accuracy = np.mean(np.argmax(model.apply(variables, images, train=False), -1) == labels)
    assert accuracy > 0.9
