"""Train-step speed of the ResNet and the character transformer, agile against plain.

    python benchmarks/benchmark_models.py [--models=resnet,transformer] [--rounds=7]
        [--torch] [--torch_site=/tmp/torchvenv/lib/python3.11/site-packages]

Each variant is one jitted train step (adam, ``value_and_grad``, the state donated) on a
fixed random batch: the ResNet on Fashion-MNIST-shaped images (examples/s), the transformer
on windows of ``--context`` characters (tokens/s). Pairs: ``agile_relu`` against ``relu``
for the ResNet (per channel), ``agile_gelu`` against ``gelu`` for the transformer (per hidden
channel). With ``--torch`` (and torch importable, optionally from ``--torch_site``, a scratch
environment: torch is never a dependency of the project) the same transformer in PyTorch
eager (``F.scaled_dot_product_attention``, its fastest causal attention) runs in the same
rounds. Rounds are interleaved (:mod:`benchmarking`); the table gives medians and the ratios
the issue asks for: agile/plain step time, and JAX/torch step time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import benchmarking
import jax
import jax.numpy as jnp
import numpy as np
import optax

from agile.paper.models.resnet import ResNet
from agile.paper.models.transformer import Transformer

VOCAB = 81  # Austen's characters


def jax_runner(model, inputs: np.ndarray, targets: np.ndarray, steps: int,
               learning_rate: float = 1e-3) -> benchmarking.Runner:
    """``steps`` jitted adam steps of ``model`` per run; BatchNorm stats updated if any."""
    variables = model.init(jax.random.key(0), inputs, train=False)
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    tx = optax.adam(learning_rate)

    def loss_fn(params, stats, x, y):
        if stats:
            logits, updates = model.apply({"params": params, "batch_stats": stats}, x,
                                          train=True, mutable=["batch_stats"])
            stats = updates["batch_stats"]
        else:
            logits = model.apply({"params": params}, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, stats

    def step(state, x, y):
        params, stats, opt_state = state
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    x, y = jnp.asarray(inputs), jnp.asarray(targets)

    def run(state):
        for _ in range(steps):
            state, loss = step(state, x, y)
        loss.block_until_ready()
        return state

    return (params, stats, tx.init(params)), run


def resnet_runners(args) -> tuple[dict[str, benchmarking.Runner], int]:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.resnet_batch, 28, 28, 1)).astype(np.float32)
    labels = (np.arange(args.resnet_batch) % 10).astype(np.int32)
    runners = {}
    for activation, implementation in (("relu", "fast"), ("agile_relu", "fast"),
                                       ("agile_relu", "reference"), ("relu", "reference")):
        model = ResNet(widths=args.resnet_widths,
                       blocks_per_stage=args.blocks_per_stage, activation=activation,
                       implementation=implementation)
        name = f"resnet {activation}" + (" (reference)" if implementation == "reference" else "")
        runners[name] = jax_runner(model, images, labels, args.steps)
    return runners, args.resnet_batch


def transformer_runners(args) -> tuple[dict[str, benchmarking.Runner], int]:
    rng = np.random.default_rng(0)
    windows = rng.integers(0, VOCAB, (args.transformer_batch, args.context + 1), np.uint8)
    inputs, targets = windows[:, :-1], windows[:, 1:].astype(np.int32)
    runners = {}
    variants = {"gelu": ("gelu", args.attention, "fast"),
                "agile_gelu": ("agile_gelu", args.attention, "fast"),
                "agile_gelu (reference)": ("agile_gelu", args.attention, "reference")}
    other = "dot_product" if args.attention == "einsum" else "einsum"
    variants[f"gelu ({other})"] = ("gelu", other, "fast")
    for name, (activation, attention, implementation) in variants.items():
        model = Transformer(VOCAB, args.context, args.layers, args.width, args.heads,
                            activation=activation, attention=attention,
                            implementation=implementation)
        runners[f"transformer {name}"] = jax_runner(model, inputs, targets, args.steps)
    if args.torch:
        torch = _import_torch(args.torch_site)
        if torch is not None:
            for agile in (False, True):
                name = "torch " + ("agile_gelu" if agile else "gelu")
                runners[name] = torch_runner(torch, args, agile, inputs, targets)
    return runners, args.transformer_batch * args.context


def _import_torch(site: str | None):
    if site:
        sys.path.append(site)
    try:
        import torch
    except ImportError:
        print("torch is not importable (see --torch_site): no torch twin.")
        return None
    return torch


def torch_runner(torch, args, agile: bool, inputs: np.ndarray, targets: np.ndarray
                 ) -> benchmarking.Runner:
    """The transformer's twin in PyTorch eager: same layout, sizes, tanh GELU and adam."""
    nn, functional = torch.nn, torch.nn.functional
    width, heads = args.width, args.heads

    class AgileGelu(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.a = nn.Parameter(torch.ones(channels))
            self.b = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            return self.a * functional.gelu(x - self.b, approximate="tanh")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attention, self.ln_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp_in, self.mlp_out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            self.act = AgileGelu(4 * width) if agile else nn.GELU(approximate="tanh")

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln_attention(x)).view(b, t, 3, heads, -1).unbind(2)
            y = functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.out(y.transpose(1, 2).reshape(b, t, width))
            return x + self.mlp_out(self.act(self.mlp_in(self.ln_mlp(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, width)
            self.positions = nn.Parameter(0.02 * torch.randn(args.context, width))
            self.blocks = nn.ModuleList(Block() for _ in range(args.layers))
            self.ln_final, self.logits = nn.LayerNorm(width), nn.Linear(width, VOCAB)

        def forward(self, tokens):
            x = self.embed(tokens) + self.positions[: tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.logits(self.ln_final(x))

    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))

    def run(state):
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
            loss.backward()
            optimizer.step()
        return state

    return None, run


def report(samples: dict[str, list[float]], units: int, unit: str, steps: int,
           pairs: list[tuple[str, str, str]]) -> None:
    """Prints ms/step, units/s (medians over rounds) and the asked-for ratios."""
    median, p20 = benchmarking.median_and_p20(samples)
    print(f"| variant | ms/step (median) | ms/step (p20) | {unit}/s (median) |")
    print("|---|---:|---:|---:|")
    for name in samples:
        ms = 1e3 * median[name] / steps
        print(f"| {name} | {ms:.1f} | {1e3 * p20[name] / steps:.1f} | {units / ms * 1e3:,.0f} |")
    for label, numerator, denominator in pairs:
        if numerator in median and denominator in median:
            ratios = [a / b for a, b in zip(samples[numerator], samples[denominator],
                                            strict=True)]
            print(f"{label}: {median[numerator] / median[denominator]:.3f} "
                  f"(per-round ratios median {np.median(ratios):.3f})")


def _widths(text: str) -> tuple[int, ...]:
    """``"8,16,32"`` -> ``(8, 16, 32)``; anything else is argparse's one-line error."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 8,16,32, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet,transformer")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="Steps per variant per round.")
    parser.add_argument("--resnet_batch", type=int, default=128)
    parser.add_argument("--blocks_per_stage", type=int, default=1)
    parser.add_argument("--resnet_widths", default=(16, 32, 64), type=_widths,
                        help="Channels per stage (configs/resnet.py trains 8,16,32).")
    parser.add_argument("--transformer_batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--attention", default="einsum", choices=("einsum", "dot_product"))
    parser.add_argument("--torch", action="store_true", help="Add the torch-eager twin.")
    parser.add_argument("--torch_site", default=None, help="A site-packages with torch.")
    args = parser.parse_args(argv)
    print(f"JAX {jax.__version__}, devices {jax.devices()}")
    builders: dict[str, tuple[Callable, str, list]] = {
        "resnet": (resnet_runners, "examples",
                   [("resnet agile/plain", "resnet agile_relu", "resnet relu"),
                    ("resnet reference agile/plain", "resnet agile_relu (reference)",
                     "resnet relu (reference)"),
                    ("resnet fast/reference (relu)", "resnet relu", "resnet relu (reference)")]),
        "transformer": (transformer_runners, "tokens", [
            ("transformer agile/plain", "transformer agile_gelu", "transformer gelu"),
            ("transformer agile (reference)/plain", "transformer agile_gelu (reference)",
             "transformer gelu"),
            ("jax/torch (gelu)", "transformer gelu", "torch gelu"),
            ("jax/torch (agile_gelu)", "transformer agile_gelu", "torch agile_gelu")]),
    }
    for name in args.models.split(","):
        build, unit, pairs = builders[name]
        runners, units = build(args)
        samples = benchmarking.time_round_robin(runners, args.rounds)
        print(f"\n{name}: {args.rounds} interleaved rounds of {args.steps} steps")
        report(samples, units, unit, args.steps, pairs)


if __name__ == "__main__":
    main()
