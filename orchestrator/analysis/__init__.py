"""A study read back from storage: trial tables, seed aggregates and paired deltas, rendering
(Markdown, LaTeX), the end-of-run summary, `status`, `results`, `compare`, `report` and
`eval-retrieval`. Reads storage and records, never execution: it works without Ray, on any
machine that can read the storage."""
