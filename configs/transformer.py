"""The character-level transformer on a text folder (#29): ``--config=configs/transformer.py
:<activation>``, the MLP's activation (default ``gelu``; ``agile_gelu``, ``xielu``, ``relu``,
...); agile parameters are per hidden channel (``--config.model.granularity=scalar`` for one
pair per layer). The corpus: ``TEXT_DIR`` (or ``--config.data.dir``), e.g. Jane Austen's
novels in ``../shared/data/austen``. Losses are in nats per character; bits per character =
nats / ln 2. Sized so one run to early stopping takes a few minutes on one core.
"""

from agile.paper import config


def get_config(activation: str | None = None):
    c = config.get_config(model="transformer", data="text")
    c.model.activation = activation or "gelu"
    # Sized by measurement (one core, shared machine): width 128, context 128 ran 0.6 steps/s
    # (about 130 steps in 4 minutes); width 64, context 64 runs 2-4 steps/s and reaches about
    # 1.85 nats (2.67 bits per character) in 500 steps at learning rate 3e-3.
    c.model.width = 64
    c.data.context = 64
    c.learning_rate = 3e-3
    c.agile_learning_rate = 3e-3
    c.batch_size = 32
    c.num_epochs = 1  # an epoch of train_windows: 600 steps
    c.eval_every_steps = 100
    c.patience = 5
    c.test_every = 3
    c.checkpoint_every_steps = 100
    c.data.train_windows = 19_200  # spread evenly over the six books
    c.data.val_windows = 512
    c.data.test_windows = 2_048
    c.data.eval_batch_size = 256
    return c
