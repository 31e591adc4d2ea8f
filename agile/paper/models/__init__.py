"""The experiments' models, each a linen module ``model(inputs, train) -> logits``, chosen by
name in :mod:`agile.paper.tasks`: the paper's CNN (``paper_cnn``, with its fused fast path in
``ops``), a BatchNorm ResNet (``resnet``) and a character transformer (``transformer``); their
activations by name through ``activations`` (every ``agile`` name and the baselines)."""
