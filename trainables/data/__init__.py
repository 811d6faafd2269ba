"""The data the recipes read, torch-free where `validate` reads it: OHLC windows (Parquet, the
CSV converter, synthetic windows), labeled windows, which windows overlap and the splits that
keep them apart, masks and augmentation (vectorised, on the device), span features, retrieval
data and synthetic text."""
