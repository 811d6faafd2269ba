"""Scoring a recipe's model after (or between) its epochs: forward passes over whole blocks,
thresholds chosen on validation and applied to the test block, checkpoint ensembles. A package of
its own because it needs models, losses and metrics together (and losses already import metrics,
so metrics cannot import losses back)."""
