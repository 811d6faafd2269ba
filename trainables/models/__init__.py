"""The networks of the recipes, and the encoder that pretraining and fine-tuning share (its
export format and the transfer of its forward direction into a causal LSTM). Training loops are
the recipes'."""
