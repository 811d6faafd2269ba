"""Experiment orchestrator: one YAML study file -> Ray Tune trials, checkpoints and result tables."""

__version__ = "0.1.0"
