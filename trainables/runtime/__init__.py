"""What every recipe runs on: the session (Ray Tune, Ray Train or local), the best epoch by the
stage's select metric, checkpoints, seeds and devices, data parallelism, GPU telemetry, metadata,
early stopping and storage retries. Knows no recipe."""
