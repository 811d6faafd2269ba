"""Trials from a study: expansion into variants x grid x seeds and trial ids, every trial's
settings and inputs checked, references resolved against finished stages, resources and packing,
cluster shapes, prices, and the `plan` view with its estimates. No Ray, no torch: `validate` and
`plan` stay fast, and `run` checks everything before Ray starts."""
