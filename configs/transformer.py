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
    c.batch_size = 32
    c.num_epochs = 2
    c.eval_every_steps = 200
    c.patience = 4
    c.test_every = 5
    c.checkpoint_every_steps = 200
    c.data.eval_batch_size = 256
    return c
