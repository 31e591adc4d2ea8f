"""The experiment config, defined once: the paper's MNIST study, one (conv, dense) combination.

``configs/default.py`` and ``configs/combo_NN.py`` (the files ``--config=`` takes) are thin
wrappers over :func:`get_config`; tests and scripts build their configs from it too, so
there is one set of defaults. Every field can be overridden on the command line, e.g.
``--config.num_epochs=3``; ``get_config("12")`` (or ``--config=configs/default.py:12``)
picks Table 1's row 12.
"""

from __future__ import annotations

import ml_collections

from agile.combos import combo_activations


def get_config(combo: str | int | None = None) -> ml_collections.ConfigDict:
    """Returns the default config; ``combo`` (1..12) sets the two activations from Table 1."""
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
    config.allow_config_change = False  # Resume a workdir whose saved config differs.
    config.parallel = "none"  # "none", "pmap" or "shard_map" (data parallelism over devices).
    config.num_seeds = 1  # Independent models trained together (seeds seed .. seed+K-1).
    config.seed_batching = "auto"  # num_seeds > 1: "scan" (XLA:CPU), "vmap" (GPU/TPU), "auto".

    config.model = ml_collections.ConfigDict()
    config.model.conv_activation = "relu"  # Any name agile.get_activation knows.
    config.model.dense_activation = "relu"  # Likewise, for the hidden dense layer.
    config.model.granularity = "element"  # Agile (a, b) per "element" (paper), "channel", "scalar".
    config.model.conv_features = (16, 8, 4)  # Filters of the three conv layers.
    config.model.kernel_size = (3, 3)  # Conv kernel (SAME padding).
    config.model.pooling = "max"  # "max" or "avg" pooling after each conv activation.
    config.model.pool_size = (2, 2)  # Pooling window and stride (VALID).
    config.model.dense_features = 30  # Hidden dense nodes.
    config.model.num_classes = 10  # Output logits.
    config.model.implementation = "fast"  # "fast" (agile.ops) or "reference" (nn.Conv, max_pool).

    config.data = ml_collections.ConfigDict()
    config.data.source = "auto"  # "idx" (files in dir or $MNIST_DIR), "tfds", or "auto".
    config.data.dir = ml_collections.FieldReference(None, field_type=str)  # IDX folder.
    config.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS dir.
    config.data.train_size = 5000  # Balanced training subset (500 per digit); 0 = all 60,000.
    config.data.val_size = 1000  # Balanced validation split held out of the rest; 0 = none.
    config.data.test_size = ml_collections.FieldReference(None, field_type=int)  # None = 10,000.
    config.data.subset_seed = 0  # Seed of the subset draw, fixed across training seeds.
    config.data.standardize = False  # Scale to [0, 1] (False) or standardise (mean/std of MNIST).
    config.data.drop_remainder = True  # Drop an epoch's last partial batch; else wrap around.
    config.data.eval_batch_size = 1000  # Examples per evaluation call (memory, not results).

    if combo not in (None, ""):
        config.model.conv_activation, config.model.dense_activation = combo_activations(int(combo))
    return config
