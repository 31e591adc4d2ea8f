"""The character-level transformer on a text folder (#29): ``--config=configs/transformer.py
:<activation>``, the MLP's activation (default ``gelu``; ``agile_gelu``, ``xielu``, ``relu``,
...); agile parameters are per hidden channel (``--config.model.granularity=scalar`` for one
pair per layer). The corpus: ``TEXT_DIR`` (or ``--config.data.dir``), e.g. Jane Austen's
novels in ``../shared/data/austen``. Losses are in nats per character; bits per character =
nats / ln 2. The sizes are ``agile.paper.config.transformer_config``'s.
"""

from agile.paper import config


def get_config(activation: str | None = None):
    return config.transformer_config(activation)
