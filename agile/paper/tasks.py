"""The registry of tasks: data sources and models by name, the one place a task is named.

A run's task is what the experiment loop trains on and what it trains: a data source
(``config.data.name``: :data:`DATA_SOURCES`) and a model (``config.model.name``: :data:`MODELS`).
:func:`build` turns a config into a :class:`Task` once, at set-up; the loop, the steps, the
evaluation, the sweeps and the worker pool receive it and never name a data set or a model.
Adding a task touches this module, one data or model module and configs, nothing in the loop.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from agile.errors import ConfigError, unknown_value_error
from agile.paper.combos import combo_number
from agile.paper.data import Datasets
from agile.paper.data import images as images_lib
from agile.paper.data import text as text_lib
from agile.paper.models.paper_cnn import CNN
from agile.paper.models.resnet import ResNet
from agile.paper.models.transformer import Transformer


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A data set the loop can train on: how to check, load and shape it from ``config.data``."""

    name: str
    title: str  # as messages and the report write it
    load: Callable[[ml_collections.ConfigDict], Datasets]
    check_available: Callable[[ml_collections.ConfigDict], None]  # cheap; before any write
    input_shape: Callable[[ml_collections.ConfigDict], tuple[int, ...]]  # of one example
    input_dtype: Any
    num_classes: Callable[[ml_collections.ConfigDict], int]
    validate: Callable[[ml_collections.ConfigDict], None]  # the data fields, before reading
    # What data.json records beside the fingerprint, so a change is named (a vocabulary).
    details: Callable[[ml_collections.ConfigDict], dict[str, Any]] = lambda data_config: {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the loop can train: built from ``config.model``, the example shape and the
    class count. ``collections`` are the variables it updates in training besides its
    parameters (``("batch_stats",)`` for BatchNorm), carried in the train state."""

    name: str
    build: Callable[[ml_collections.ConfigDict, tuple[int, ...], int], nn.Module]
    validate: Callable[[ml_collections.ConfigDict, tuple[int, ...], int], None]
    # What summary.json says of the model (e.g. the paper CNN's Table 1 row and activations).
    summary_fields: Callable[[ml_collections.ConfigDict], dict[str, Any]]
    collections: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Task:
    """A config's data source and its model, built once (:func:`build`)."""

    data: DataSource
    model: nn.Module
    input_shape: tuple[int, ...]
    input_dtype: Any
    collections: tuple[str, ...]

    def example(self) -> jax.Array:
        """A batch of one zero example, to initialise or trace the model."""
        return jnp.zeros((1, *self.input_shape), self.input_dtype)


# ---------------------------------------------------------------------------------------------
# Data sources.


def _image_validate(config: ml_collections.ConfigDict) -> None:
    images_lib.check_sizes(config)


def _image_source(name: str) -> DataSource:
    image_set = images_lib.IMAGE_SETS[name]
    return DataSource(
        name=name, title=image_set.title, load=images_lib.load_datasets,
        check_available=images_lib.check_available,
        input_shape=lambda data_config: images_lib.IMAGE_SHAPE, input_dtype=jnp.float32,
        num_classes=lambda data_config: images_lib.NUM_CLASSES, validate=_image_validate)


TEXT_ENV = "TEXT_DIR"  # the text source's folder when data.dir is unset


def _text_folder(data_config: ml_collections.ConfigDict) -> Path:
    folder = data_config.dir or os.environ.get(TEXT_ENV)
    if not folder:
        raise ConfigError(f"data.name='text' needs a folder of UTF-8 text files: set {TEXT_ENV} "
                          "(or data.dir), e.g. to ../shared/data/austen.")
    return Path(folder).expanduser()


@functools.lru_cache(maxsize=8)
def _vocabulary(folder: Path, pattern: str, stamp: tuple) -> str:
    del stamp  # part of the key only: changed files give a new vocabulary
    return text_lib.corpus_vocabulary(text_lib.read_corpus(folder, pattern))


def text_vocabulary(data_config: ml_collections.ConfigDict) -> str:
    """The corpus' vocabulary (its sorted characters), read once per state of the files."""
    folder = _text_folder(data_config)
    paths = sorted(folder.glob(data_config.pattern)) if folder.is_dir() else []
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _vocabulary(folder, data_config.pattern, stamp)


def _load_text(data_config: ml_collections.ConfigDict) -> Datasets:
    datasets, _ = text_lib.load_text(_text_folder(data_config), data_config.context,
                                     data_config.train_stride, text_vocabulary(data_config),
                                     data_config.pattern)
    return Datasets(*(text_lib.spread_subset(split, data_config[f"{name}_windows"])
                      for name, split in zip(Datasets._fields, datasets, strict=True)))


def _validate_text(config: ml_collections.ConfigDict) -> None:
    for name in ("train_windows", "val_windows", "test_windows"):
        value = config.data[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"config.data.{name} must be an integer >= 0 (0: every window), "
                              f"got {value!r}.")
    stride = config.data.train_stride
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)
                               or stride < 1):
        raise ConfigError(f"config.data.train_stride must be None or an integer >= 1, got "
                          f"{stride!r}.")


TEXT_SOURCE = DataSource(
    name="text", title="text", load=_load_text,
    check_available=lambda data_config: text_vocabulary(data_config) and None,
    input_shape=lambda data_config: (data_config.context,), input_dtype=jnp.int32,
    num_classes=lambda data_config: len(text_vocabulary(data_config)), validate=_validate_text,
    details=lambda data_config: {"vocabulary": text_vocabulary(data_config)})

DATA_SOURCES: dict[str, DataSource] = {
    **{name: _image_source(name) for name in images_lib.IMAGE_SETS}, "text": TEXT_SOURCE}
# Environment variables naming the sources' offline folders: passed on to sweep workers.
DATA_ENV_VARS = (*(image_set.env for image_set in images_lib.IMAGE_SETS.values()), TEXT_ENV)


# ---------------------------------------------------------------------------------------------
# Models.


def _paper_cnn_fields(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
    m = model_config
    return dict(conv_features=tuple(m.conv_features), kernel_size=tuple(m.kernel_size),
                pool_size=tuple(m.pool_size), pooling=m.pooling,
                dense_features=m.dense_features, num_classes=m.num_classes,
                conv_activation=m.conv_activation, dense_activation=m.dense_activation,
                granularity=m.granularity, implementation=m.implementation)


def _build_paper_cnn(model_config, input_shape, num_classes) -> nn.Module:
    del input_shape, num_classes  # checked by _validate_paper_cnn
    return _cached_module(CNN, **_paper_cnn_fields(model_config))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_paper_cnn(model_config, input_shape, num_classes) -> None:
    """The CNN's shapes and sizes against the data; its names are ``CNN.validate``'s."""
    m = model_config
    for name in ("kernel_size", "pool_size"):
        value = m[name]
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
                _is_int(v) and v >= 1 for v in value):
            raise ConfigError(f"config.model.{name} must be a pair of positive integers, "
                              f"got {value!r}.")
    features = m.conv_features
    if not isinstance(features, (tuple, list)) or not all(_is_int(f) and f >= 1 for f in features):
        raise ConfigError("config.model.conv_features must be a list of positive integers "
                          f"(empty for a network of dense layers only), got {features!r}.")
    if not _is_int(m.dense_features) or m.dense_features < 1:
        raise ConfigError(f"config.model.dense_features must be an integer >= 1, got "
                          f"{m.dense_features!r}.")
    if m.num_classes != num_classes:
        raise ConfigError(f"config.model.num_classes must be {num_classes} (the data's classes), "
                          f"got {m.num_classes!r}.")
    side = min(input_shape[:2])
    for layer in range(len(features)):
        if side < m.pool_size[0] or side < m.pool_size[1]:
            raise ConfigError(
                f"config.model: the {side}x{side} map before pooling {layer} is smaller than "
                f"pool_size {tuple(m.pool_size)}; use fewer conv_features or a smaller pool.")
        side = min(side // m.pool_size[0], side // m.pool_size[1])
    CNN(**_paper_cnn_fields(m)).validate()


def _paper_cnn_summary(model_config) -> dict[str, Any]:
    conv, dense = model_config.conv_activation, model_config.dense_activation
    return {"combo": combo_number(conv, dense), "conv_activation": conv, "dense_activation": dense}


def _resnet_fields(model_config, num_classes) -> dict[str, Any]:
    m = model_config
    return dict(widths=tuple(m.widths), blocks_per_stage=m.blocks_per_stage,
                num_classes=num_classes, activation=m.activation, granularity=m.granularity,
                implementation=m.implementation)


def _validate_resnet(model_config, input_shape, num_classes) -> None:
    del input_shape
    if model_config.num_classes != num_classes:
        raise ConfigError(f"config.model.num_classes must be {num_classes} (the data's classes), "
                          f"got {model_config.num_classes!r}.")
    if not isinstance(model_config.widths, (tuple, list)):
        raise ConfigError(f"config.model.widths must be a list of positive integers, got "
                          f"{model_config.widths!r}.")
    ResNet(**_resnet_fields(model_config, num_classes)).validate()


def _transformer_fields(model_config, input_shape, num_classes) -> dict[str, Any]:
    m = model_config
    return dict(vocab_size=num_classes, context=input_shape[0], num_layers=m.num_layers,
                width=m.width, num_heads=m.num_heads, activation=m.activation,
                granularity=m.granularity, attention=m.attention,
                implementation=m.implementation)


def _layers_summary(conv: bool) -> Callable[[ml_collections.ConfigDict], dict[str, Any]]:
    """summary.json's activations of a one-activation model, in the paper's two columns: the
    ResNet's is its conv layers', the transformer's its MLP's (dense); "-": no such layer."""

    def summary(model_config) -> dict[str, Any]:
        act = model_config.activation
        return {"combo": None, "conv_activation": act if conv else "-",
                "dense_activation": "-" if conv else act,
                "granularity": model_config.granularity}

    return summary


MODELS: dict[str, ModelSpec] = {
    "paper_cnn": ModelSpec("paper_cnn", _build_paper_cnn, _validate_paper_cnn,
                           _paper_cnn_summary),
    "resnet": ModelSpec(
        "resnet", lambda m, shape, classes: _cached_module(ResNet, **_resnet_fields(m, classes)),
        _validate_resnet, _layers_summary(conv=True), collections=("batch_stats",)),
    "transformer": ModelSpec(
        "transformer",
        lambda m, shape, classes: _cached_module(Transformer,
                                                 **_transformer_fields(m, shape, classes)),
        lambda m, shape, classes: Transformer(**_transformer_fields(m, shape, classes)).validate(),
        _layers_summary(conv=False)),
}


@functools.lru_cache(maxsize=64)
def _cached_module(cls: type, **fields) -> nn.Module:
    """Equal fields give the same module object, so ``jax.jit`` reuses the code it compiled
    for one run (whose train state carries ``model.apply``) in the next run of the process."""
    return cls(**fields)


# ---------------------------------------------------------------------------------------------
# A config's task.


def data_source(config: ml_collections.ConfigDict) -> DataSource:
    """The data source ``config.data.name`` names."""
    if config.data.name not in DATA_SOURCES:
        raise unknown_value_error("config.data.name", config.data.name, tuple(DATA_SOURCES))
    return DATA_SOURCES[config.data.name]


def model_spec(config: ml_collections.ConfigDict) -> ModelSpec:
    """The model ``config.model.name`` names."""
    if config.model.name not in MODELS:
        raise unknown_value_error("config.model.name", config.model.name, tuple(MODELS))
    return MODELS[config.model.name]


def validate(config: ml_collections.ConfigDict) -> None:
    """ConfigError for data or model fields that cannot make this task (before any reading)."""
    source, spec = data_source(config), model_spec(config)
    source.validate(config)
    spec.validate(config.model, source.input_shape(config.data), source.num_classes(config.data))


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The model of ``config``'s task (for callers outside the loop: plots, reports, tests)."""
    return build(config).model


def build(config: ml_collections.ConfigDict) -> Task:
    """The task ``config`` describes (validated): its data source and its model."""
    validate(config)
    source, spec = data_source(config), model_spec(config)
    shape = tuple(source.input_shape(config.data))
    model = spec.build(config.model, shape, source.num_classes(config.data))
    return Task(data=source, model=model, input_shape=shape,
                input_dtype=np.dtype(source.input_dtype), collections=spec.collections)
