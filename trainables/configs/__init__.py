"""Typed settings of each trainable, one module per trainable: its `Config` (unknown keys
rejected, one description per field) and what the planner needs to know of it (input fields,
data parallelism). Settings only: no data reading, no model building, no torch."""
