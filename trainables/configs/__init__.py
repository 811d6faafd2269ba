"""Typed settings of each trainable (one module per trainable), with the two torch-free hooks the
planner calls (`check_inputs`, `preflight`); the data they read is `trainables.data`'s."""
