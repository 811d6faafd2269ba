"""The study's storage: local disk or S3 through pyarrow (atomic writes, retries), the study
folder's own files (study file, metadata, the record of every stage) and `sync` between
storages. Imports nothing else of the orchestrator: every other package reads storage through it."""
