"""The experiment config, defined once: the paper's MNIST study, one (conv, dense) combination.

A config names its task: ``config.data.name`` (``mnist``, ``fashion_mnist``) and
``config.model.name`` (``paper_cnn``), resolved by :mod:`agile.paper.tasks`.

``configs/default.py`` and ``configs/combo_NN.py`` (the files ``--config=`` takes) are thin
wrappers over :func:`get_config`; tests and scripts build their configs from it too, so
there is one set of defaults. Every field can be overridden on the command line, e.g.
``--config.num_epochs=3``; ``get_config("12")`` (or ``--config=configs/default.py:12``)
picks Table 1's row 12.
"""

from __future__ import annotations

import ml_collections

from agile.errors import ConfigError, as_config_error, unknown_value_error
from agile.paper import tasks
from agile.paper.combos import combo_activations
from agile.paper.parallel import validate_scaling_config

OPTIMIZERS = ("sgd", "adam")


def get_config(combo: str | int | None = None, *, model: str = "paper_cnn",
               data: str | None = None) -> ml_collections.ConfigDict:
    """Returns the default config of a task: the fields every run has, then those of the
    ``model`` (:data:`MODEL_FIELDS`) and of the ``data`` source (:data:`DATA_FIELDS`; default:
    the model's usual data, :data:`DEFAULT_DATA`). ``combo`` (1..12) sets the paper CNN's two
    activations from Table 1."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Parameter init and data order (the data subset has its own seed below).
    config.batch_size = 100  # Global batch size (the paper: 100).
    config.num_epochs = 200  # Upper bound on training length; early stopping may end sooner.
    config.optimizer = "adam"  # "sgd" (with optional momentum) or "adam".
    config.learning_rate = 1e-3  # Rate for conv filters and dense weights (the paper's rho1, rho2).
    config.agile_learning_rate = 1e-3  # Rate for every agile a and b (the paper's rho3).
    config.momentum = 0.0  # SGD momentum; 0 is plain SGD. Ignored by adam.
    config.eval_every_steps = 0  # Evaluate every N steps; 0 means once per epoch.
    # The 10,000-image test split is evaluated only where a reported number needs it: the
    # final evaluation, the best model (once, at the end), and every `test_every`-th
    # evaluation for test-loss curves (0: no curve points). Without a validation split
    # the test loss selects the best step, so it is evaluated every time.
    config.test_every = 10
    config.log_every_steps = 50  # Progress line (step, loss, steps/s, time left) every N steps.
    config.checkpoint_every_steps = 500  # Orbax checkpoint every N steps (and at the end).
    config.patience = 10  # Early stopping: evaluations without a better val loss; 0 disables.
    # Resume a workdir whose saved config differs in fields a resume can apply
    # (config.RESUMABLE_FIELDS); a change of any other field is refused with its name.
    config.allow_config_change = False
    config.parallel = "none"  # "none", "pmap" or "shard_map" (data parallelism over devices).
    config.num_seeds = 1  # Independent models trained together (seeds seed .. seed+K-1).
    # num_seeds > 1: "scan" (one seed after another in one program), "vmap" (all as one
    # batched model), "map" (seed_chunk_size at a time, vmapped within a chunk), or "auto":
    # scan on CPU; on GPU/TPU vmap if data.order_seed is set, else map (agile.paper.parallel).
    config.seed_batching = "auto"
    config.seed_chunk_size = 1  # "map": seeds stepped together in one chunk.

    config.model = ml_collections.ConfigDict()
    config.model.name = model  # agile.paper.tasks.MODELS: "paper_cnn", "resnet", "transformer".
    if model not in MODEL_FIELDS:
        raise unknown_value_error("model", model, tuple(MODEL_FIELDS))
    MODEL_FIELDS[model](config)

    config.data = ml_collections.ConfigDict()
    config.data.name = data or DEFAULT_DATA[model]  # agile.paper.tasks.DATA_SOURCES.
    # The data's folder; None: the source's environment variable (MNIST_DIR,
    # FASHION_MNIST_DIR, TEXT_DIR).
    config.data.dir = ml_collections.FieldReference(None, field_type=str)
    # Seed of the batch order; None: each training seed's own. Set, every seed of a seed batch
    # sees the same batches (a seed then varies the initialisation only), which keeps vmap's
    # first convolution dense on an accelerator.
    config.data.order_seed = ml_collections.FieldReference(None, field_type=int)
    config.data.drop_remainder = True  # Drop an epoch's last partial batch; else wrap around.
    # Examples per evaluation call: a memory setting, but the float32 sums of another size
    # round differently (losses differ in the last digits), so keep it across compared runs.
    config.data.eval_batch_size = 1000
    if config.data.name not in DATA_KINDS:
        raise unknown_value_error("data", config.data.name, tuple(DATA_KINDS))
    DATA_FIELDS[DATA_KINDS[config.data.name]](config)

    if combo not in (None, ""):
        if model != "paper_cnn":
            raise ConfigError(f"combo={combo!r} is a row of the paper CNN's Table 1; the "
                              f"{model} takes model.activation instead.")
        config.model.conv_activation, config.model.dense_activation = combo_activations(int(combo))
    return config


def _paper_cnn_fields(config: ml_collections.ConfigDict) -> None:
    """model.name = "paper_cnn": the paper's CNN (conv -> activation -> pooling, dense)."""
    config.model.conv_activation = "relu"  # Any name agile.get_activation knows.
    config.model.dense_activation = "relu"  # Likewise, for the hidden dense layer.
    config.model.granularity = "element"  # Agile (a, b) per "element" (paper), "channel", "scalar".
    config.model.conv_features = (16, 8, 4)  # Filters of the conv layers; () = dense layers only.
    config.model.kernel_size = (3, 3)  # Conv kernel (SAME padding).
    config.model.pooling = "max"  # "max" or "avg" pooling after each conv activation.
    config.model.pool_size = (2, 2)  # Pooling window and stride (VALID).
    config.model.dense_features = 30  # Hidden dense nodes.
    config.model.num_classes = 10  # Output logits.
    config.model.implementation = "fast"  # "fast" (paper.ops) or "reference" (nn.Conv, max_pool).


def _resnet_fields(config: ml_collections.ConfigDict) -> None:
    """model.name = "resnet": a BatchNorm ResNet (agile.paper.models.resnet)."""
    config.model.activation = "relu"  # Any name agile.get_activation or the baselines know.
    config.model.granularity = "channel"  # Agile (a, b) per "channel", "element" or "scalar".
    config.model.widths = (16, 32, 64)  # Channels of each stage (stride 2 from the second on).
    config.model.blocks_per_stage = 1  # Residual blocks per stage.
    config.model.num_classes = 10  # Output logits.
    config.model.implementation = "fast"  # "fast" (channel_agile) or "reference" (agile.Agile).


def _transformer_fields(config: ml_collections.ConfigDict) -> None:
    """model.name = "transformer": a character-level decoder (agile.paper.models.transformer)."""
    config.model.activation = "gelu"  # The MLP's activation: any name (agile_gelu, xielu...).
    config.model.granularity = "channel"  # Agile (a, b) per hidden "channel", or "scalar".
    config.model.num_layers = 4  # Pre-LayerNorm blocks.
    config.model.width = 128  # Model width (the MLP is 4x wider).
    config.model.num_heads = 4  # Attention heads (width must divide by them).
    config.model.attention = "einsum"  # "einsum" or "dot_product" (the same function).
    config.model.implementation = "fast"  # "fast" (channel_agile) or "reference" (agile.Agile).


def _image_data_fields(config: ml_collections.ConfigDict) -> None:
    """data.name = "mnist" or "fashion_mnist": 28x28 grey images of 10 classes."""
    # "idx" (files in data.dir or the environment variable), "tfds", or "auto".
    config.data.source = "auto"
    config.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS dir.
    config.data.train_size = 5000  # Balanced training subset (500 per digit); 0 = all 60,000.
    config.data.val_size = 1000  # Balanced validation split held out of the rest; 0 = none.
    config.data.test_size = ml_collections.FieldReference(None, field_type=int)  # None = 10,000.
    config.data.subset_seed = 0  # Seed of the subset draw, fixed across training seeds.
    config.data.standardize = False  # Scale to [0, 1] (False) or standardise (the set's mean/std).


def _text_data_fields(config: ml_collections.ConfigDict) -> None:
    """data.name = "text": the UTF-8 files of a folder as characters (agile.paper.data.text)."""
    config.data.context = 128  # Characters a model reads; windows of context + 1.
    # Training windows start every N characters; None: every `context` (no overlap).
    config.data.train_stride = ml_collections.FieldReference(None, field_type=int)
    config.data.pattern = "*.txt"  # Which files of the folder are the corpus.
    config.data.train_windows = 0  # Windows kept per split, spread evenly; 0 = every window.
    config.data.val_windows = 0  # Likewise for the validation split (evaluated every time).
    config.data.test_windows = 0  # Likewise for the test split.


MODEL_FIELDS = {"paper_cnn": _paper_cnn_fields, "resnet": _resnet_fields,
                "transformer": _transformer_fields}
DEFAULT_DATA = {"paper_cnn": "mnist", "resnet": "fashion_mnist", "transformer": "text"}
DATA_KINDS = {"mnist": "images", "fashion_mnist": "images", "text": "text"}
DATA_FIELDS = {"images": _image_data_fields, "text": _text_data_fields}
# Where --help finds the fields and their comments.
FIELD_SOURCES = (get_config, *MODEL_FIELDS.values(), *DATA_FIELDS.values())


# ---------------------------------------------------------------------------------------------
# The sized tasks beyond the paper (#29): ``configs/resnet.py`` and ``configs/transformer.py``
# and the study's groups (agile.paper.study) read them here, so they are defined once.


def resnet_config(activation: str | None = None) -> ml_collections.ConfigDict:
    """The BatchNorm ResNet on Fashion-MNIST with ``activation`` (default relu), sized so one
    run to early stopping takes a few minutes on one core (docs/experiments.md)."""
    c = get_config(model="resnet", data="fashion_mnist")
    c.model.activation = activation or "relu"
    # Sized by measurement (one core, shared machine): widths 16/32/64 ran ~1 step/s at batch
    # 128, so a 3-minute run could not reach early stopping; 8/16/32 runs ~3 steps/s.
    c.model.widths = (8, 16, 32)
    c.batch_size = 128
    # Adam at 3e-3 (the paper CNN's 1e-3 is slow here): measured (agile_relu, seed 0, patience
    # 3), at 1e-3 the run stopped at epoch 22 (step 682; best test loss 0.489), at 3e-3 at
    # epoch 11 (step 341; best step 248, best test loss 0.513, accuracy 82.0%): half the steps.
    c.learning_rate = 3e-3
    c.agile_learning_rate = 3e-3
    # Early stopping: the validation loss swings by +-0.05 from epoch to epoch once it is near
    # its minimum (no decay), so a patience of 5 kept finding marginally lower minima; 3 stops
    # within a few epochs of it. 30 epochs is the cap.
    c.num_epochs = 30
    c.patience = 3
    c.data.train_size = 4_000  # 400 per class; 2,000 more held out for validation
    c.data.val_size = 2_000
    c.data.standardize = True  # Fashion-MNIST's own mean and std
    c.test_every = 5
    return c


def transformer_config(activation: str | None = None) -> ml_collections.ConfigDict:
    """The character-level transformer on a text folder with the MLP's ``activation``
    (default gelu), sized so one run to early stopping takes a few minutes on one core."""
    c = get_config(model="transformer", data="text")
    c.model.activation = activation or "gelu"
    # Sized by measurement (one core, shared machine): width 128, context 128 ran 0.6 steps/s
    # (about 130 steps in 4 minutes); width 64, context 64 runs 3-5 steps/s.
    c.model.width = 64
    c.data.context = 64
    c.learning_rate = 3e-3
    c.agile_learning_rate = 3e-3
    c.batch_size = 32
    # A subset of the training split, like the paper's 5,000 MNIST images: on all of it (or
    # 19,200 windows) the validation loss still fell after 1,400 steps (1.51 nats), far past
    # 4 minutes; on 1,600 windows (102,400 characters spread evenly over the six books; 50
    # steps an epoch) it reaches its minimum near step 800 (1.78 nats) and early stopping
    # ends the run; on 800 windows the minimum came at step 400 but only at 2.31 nats.
    c.data.train_windows = 1_600
    c.num_epochs = 40  # the cap: 2,000 steps
    c.eval_every_steps = 50
    c.patience = 3
    c.test_every = 5
    c.checkpoint_every_steps = 200
    c.data.val_windows = 512
    c.data.test_windows = 2_048
    c.data.eval_batch_size = 256
    return c


# The tasks by name (the study's groups name theirs): the paper's CNN on MNIST, and the two above.
PRESETS = {"paper": get_config, "resnet": resnet_config, "transformer": transformer_config}


# What `allow_config_change=True` lets a resume change: each takes effect from the resumed step
# (more epochs, other rates for the rest of training, another evaluation or checkpoint
# schedule, patience counted anew over the whole history, another device layout, another
# place to read the same data from). Every other field decides the model's parameters, the
# optimizer's state, the seeds and their batches or the data itself, so a checkpoint cannot
# continue under another value: `agile.paper.workdir.check_config` refuses it with its name.
RESUMABLE_FIELDS = (
    "num_epochs", "learning_rate", "agile_learning_rate", "eval_every_steps", "test_every",
    "log_every_steps", "checkpoint_every_steps", "patience", "parallel", "seed_batching",
    "seed_chunk_size", "devices", "xla_cpu_threads",
    "model.implementation", "data.source", "data.dir", "data.tfds_data_dir",
    "data.eval_batch_size",
)


# ---------------------------------------------------------------------------------------------
# Validation: every field's type and range, checked before any data is read or code compiled.

MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed
_INTEGERS = {  # field: smallest valid value
    "seed": 0, "batch_size": 1, "num_epochs": 1, "eval_every_steps": 0, "test_every": 0,
    "log_every_steps": 1, "checkpoint_every_steps": 1, "patience": 0, "num_seeds": 1,
    "data.subset_seed": 0, "data.eval_batch_size": 1, "data.context": 1,
}
_POSITIVE_NUMBERS = ("learning_rate", "agile_learning_rate")
_BOOLEANS = ("allow_config_change", "data.standardize", "data.drop_remainder")
_OPTIONAL_STRINGS = ("data.dir", "data.tfds_data_dir")


def _get(config: ml_collections.ConfigDict, name: str):
    section, _, field = name.rpartition(".")
    return (config[section] if section else config)[field]


def _present(config: ml_collections.ConfigDict, names):
    """The ``names`` this config has (a task's fields: subset_seed only for image data)."""
    return [name for name in names
            if name.rpartition(".")[2] in (config[name.rpartition(".")[0]]
                                           if "." in name else config)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reference(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The default config of ``config``'s model and data, whose fields ``config`` must have."""
    model, data = config.model.get("name"), config.data.get("name")
    if model not in MODEL_FIELDS:
        raise unknown_value_error("config.model.name", model, tuple(MODEL_FIELDS))
    if data not in DATA_KINDS:
        raise unknown_value_error("config.data.name", data, tuple(DATA_KINDS))
    reference = get_config(model=model, data=data)
    for section in ("model", "data"):
        missing = sorted(set(reference[section].keys()) - set(config[section].keys()))
        if missing:
            raise ConfigError(
                f"config.{section} lacks the fields of {section}.name={reference[section].name!r}"
                f" ({', '.join(missing)}): a config's {section} fields are its {section}'s. "
                f"Start from a config of that {section} (configs/) instead of changing "
                f"{section}.name.")
    return reference


def _check_fields_known(config: ml_collections.ConfigDict, reference, prefix: str = "") -> None:
    """Refuses fields that no default defines (a typo would otherwise be ignored silently)."""
    for key in config.keys():
        if key not in reference:
            raise ConfigError(f"Unknown config field '{prefix}{key}'; the fields and their "
                              "defaults are in agile/paper/config.py.")
        if isinstance(config[key], ml_collections.ConfigDict):
            _check_fields_known(config[key], reference[key], f"{prefix}{key}.")


def _check_scalars(config: ml_collections.ConfigDict) -> None:
    for name in _present(config, _INTEGERS):
        minimum = _INTEGERS[name]
        value = _get(config, name)
        if not _is_int(value) or value < minimum:
            raise ConfigError(f"config.{name} must be an integer >= {minimum}, got {value!r}.")
    order_seed = config.data.order_seed
    if order_seed is not None and (not _is_int(order_seed) or not 0 <= order_seed <= MAX_SEED):
        raise ConfigError(f"config.data.order_seed must be None or an integer in [0, 2**63 - 1], "
                          f"got {order_seed!r}.")
    last_seed = config.seed + config.num_seeds - 1
    if last_seed > MAX_SEED:
        raise ConfigError(f"config.seed + num_seeds - 1 = {last_seed} exceeds the largest seed "
                          f"jax.random.key takes, 2**63 - 1 = {MAX_SEED}.")
    for name in _POSITIVE_NUMBERS:
        value = _get(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"config.{name} must be a positive number, got {value!r}.")
    if isinstance(config.momentum, bool) or not isinstance(config.momentum, (int, float)) or (
            not 0 <= config.momentum < 1):
        raise ConfigError(f"config.momentum must be a number in [0, 1), got {config.momentum!r}.")
    for name in _present(config, _BOOLEANS):
        if not isinstance(_get(config, name), bool):
            raise ConfigError(f"config.{name} must be True or False, got {_get(config, name)!r}.")
    for name in _present(config, _OPTIONAL_STRINGS):
        if _get(config, name) is not None and not isinstance(_get(config, name), str):
            raise ConfigError(f"config.{name} must be a path or None, got {_get(config, name)!r}.")
    if config.optimizer not in OPTIMIZERS:
        raise unknown_value_error("optimizer", config.optimizer, OPTIMIZERS)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`~agile.errors.ConfigError` naming the first bad field and what is valid.

    Checks every field's type and range, the task (``agile.paper.tasks.validate``: the data
    source's sizes, the model's names and shapes against the data), and the parallel
    settings (device counts, seed batching): everything that can be known before data is
    read or code compiled.
    """
    _check_fields_known(config, _reference(config))
    _check_scalars(config)
    with as_config_error():
        tasks.validate(config)
    validate_scaling_config(config)
