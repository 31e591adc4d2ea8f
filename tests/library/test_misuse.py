"""Library misuse ends in one line that names the fix (#27 F6, F8, F10; reliability report
2026-12-07 N016, N020, N021, N024): written as a user meets each case."""

import importlib.util
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import REPO_ROOT
from flax import nnx

import agile
import agile.nnx as agile_nnx
from agile import Agile, CombinedAgile, agile_factory


class _Block(nn.Module):
    """flax's ResNet block pattern: ``act`` called as ``self.act(y)`` at two places."""

    act: object

    @nn.compact
    def __call__(self, x):
        return self.act(nn.Dense(4)(self.act(nn.Dense(4)(x))))


class _ResNet(nn.Module):
    act: object

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = _Block(self.act)(x)
        return x


def _init(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _one_line_error(error_type, match, call):
    with pytest.raises(error_type, match=match) as error:
        call()
    assert "\n" not in str(error.value).split("\n--------------------")[0]  # jax's own footer
    return str(error.value)


def test_one_agile_instance_reused_at_equal_widths_is_an_error_unless_shared():
    """F6: ``ResNet(act=Agile("relu"))`` shared one (4,) pair over six call sites silently."""
    x = jnp.ones((2, 4))
    _one_line_error(ValueError, r"One Agile layer instance was called at two places .* a factory, "
                                r"act=Agile.factory\(...\) .* shared=True",
                    lambda: _init(_ResNet(act=Agile("relu")), x))
    tied = _init(_ResNet(act=Agile("relu", shared=True)), x)["params"]
    assert tied["act"]["a"].shape == (4,)  # one pair on purpose
    own = _init(_ResNet(act=agile_factory("relu")), x)["params"]
    assert sum(name.startswith("Agile") for block in own.values() for name in block) == 6


def test_factory_keywords_are_checked_when_the_factory_is_made():
    """F10: ``agile_factory("relu", foo=1)`` used to fail at the model's first call."""
    _one_line_error(TypeError, r"Agile has no attribute 'foo'; it takes a_init, b_init, channels, ",
                    lambda: agile_factory("relu", foo=1))
    _one_line_error(TypeError, r"CombinedAgile has no attribute 'granularty'",
                    lambda: CombinedAgile.factory(("relu", "tanh"), granularty="channel"))
    assert agile_factory("relu", granularity="element", shared=False) is not None


def test_the_factory_itself_or_the_class_as_act_says_what_to_pass():
    """N020: ``act=agile_factory`` dumped the input tensor in a 9.5 KB message; N021:
    ``act=Agile`` gave AttributeError 'Agile' object has no attribute 'ndim'."""
    x = jnp.ones((2, 4))
    message = _one_line_error(
        ValueError, r"agile_factory\(fn\) got an array of shape \(2, 4\) where the activation "
                    r"goes: was agile_factory itself passed as a model's act= .* "
                    r"act=agile_factory\('relu'\)",
        lambda: _init(_ResNet(act=agile_factory), x))
    assert len(message) < 600
    _one_line_error(ValueError, r"Agile\(fn\) got an array of shape \(2, 4\) as its activation: "
                                r"was the class passed as a model's act= \(act=Agile\).* "
                                r"act=Agile.factory\('relu'\)",
                    lambda: _init(_ResNet(act=Agile), x))


def test_agile_factory_of_a_combined_name_points_to_the_combined_factories():
    """N024: a name ``activation_factory`` accepts was called unknown."""
    _one_line_error(ValueError, r"agile_factory makes Agile layers, one activation each; for "
                                r"'combined:relu,tanh' use activation_factory\('combined:relu,"
                                r"tanh'\) or CombinedAgile.factory",
                    lambda: agile_factory("combined:relu,tanh"))
    assert agile.activation_factory("combined:relu,tanh") is not None


def test_nnx_shape_takes_numpy_ints_and_refuses_floats_in_one_line():
    """N016: ``np.int64(4)`` and ``4.0`` said "'numpy.int64' object is not iterable"."""
    assert agile_nnx.Agile("relu", np.int64(4)).a.shape == (4,)
    assert agile_nnx.Agile("relu", (np.int32(2), 3)).a.shape == (2, 3)
    _one_line_error(ValueError, r"shape must be an int \(channels\) or a tuple of ints >= 1, "
                                r"got 4.0 \(float\)",
                    lambda: agile_nnx.Agile("relu", 4.0))


def test_labels_of_a_whole_nnx_state_name_the_variables_that_break_the_optimizer():
    """F10: ``param_labels(nnx.state(model))`` with BatchNorm gave an optax structure error."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.act = agile_nnx.Agile("relu", 3)

    model = Net(nnx.Rngs(0))
    _one_line_error(ValueError, r"param_labels got a state with variables that are not "
                                r"nnx.Param: bn/mean \(BatchStat\), bn/var \(BatchStat\)\. "
                                r"nnx.Optimizer\(..., wrt=nnx.Param\) .* pass "
                                r"nnx.state\(model, nnx.Param\) or the model itself",
                    lambda: agile.param_labels(nnx.state(model)))
    assert agile.param_labels(model)["act"]["a"] == "agile"


def test_every_layer_call_has_a_docstring():
    """F10: neither layer's ``__call__`` had one."""
    for layer in (agile.Agile, agile.CombinedAgile, agile_nnx.Agile, agile_nnx.CombinedAgile):
        assert layer.__call__.__doc__ and "output" in layer.__call__.__doc__, layer


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_static_types_require_the_nnx_shape_and_a_known_granularity(tmp_path):
    """F8: a missing NNX shape and an unknown granularity are type errors; factories, fold and
    the lazy submodules are typed."""
    program = tmp_path / "user.py"
    program.write_text(
        "import jax.numpy as jnp\nimport agile\nimport agile.nnx\n"
        "agile.nnx.Agile('relu')\n"
        "agile.Agile('relu', granularity='pixel')\n"
        "reveal_type(agile.agile_factory('relu')(jnp.ones(3)))\n"
        "reveal_type(agile.plotting.plot_depth)\n"
        "reveal_type(agile.fold)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", str(program), "--ignore-missing-imports",
         "--follow-imports=silent", "--no-incremental"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    lines = result.stdout.splitlines()
    assert any(':4: error: Missing positional argument "shape"' in line for line in lines)
    assert any(":5: error:" in line and "Literal['element', 'channel', 'scalar']" in line
               for line in lines), result.stdout
    assert any(":6: note: Revealed type is" in line and "Array" in line for line in lines)
    assert any(":7: note: Revealed type is \"def (params: Any" in line for line in lines)
    assert any(":8: note:" in line and "agile.folding.FoldResult" in line for line in lines)
