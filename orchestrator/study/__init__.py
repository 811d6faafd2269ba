"""The study file: its schema (pydantic, unknown keys rejected), YAML with line numbers, one-line
errors with key paths, search spaces, the reference syntax and tracker entries. Checks of the
file alone: no Ray, no torch, no storage (the trainables' own settings are checked by planning)."""
