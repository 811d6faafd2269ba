"""Typed settings of each trainable, importable without torch (one module per trainable)."""
