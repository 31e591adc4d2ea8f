"""The experiments' models, each a linen module ``inputs -> logits``, chosen by name in
``agile.paper.tasks``: the paper's CNN (``paper_cnn``, with its fused fast path in ``ops``)."""
