"""The inputs of `contrastive_isotropy` before a run. `check` reads the base model's location,
every triples file and BEIR folder (ValueError naming the file, line and field; `validate`, and
`run` before Ray starts); `preflight` shrinks them for `orchestrator preflight` (and stands in
the offline MiniLM for a hub model)."""

from __future__ import annotations

from pathlib import Path

from trainables.configs.contrastive_isotropy import OFFLINE_MINILM, Config
from trainables.data.retrieval import load_beir
from trainables.data.triples import head_triples, open_triples
from trainables.inputs.model_folders import check_source

CHECK_FIELDS = ("batch_size", "beir_split", "triple_columns")  # what `check` reads besides the inputs


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: two steps on the first 32 triples; the offline
    MiniLM if the base is a hub name (pre-flight must not download); synthetic stand-ins for
    data files that are not on this machine."""
    base = config.get("base_model", OFFLINE_MINILM)
    local = base == OFFLINE_MINILM or Path(base).is_dir()
    columns = config.get("triple_columns")
    beir = [  # one small synthetic folder of its own for each folder not on this machine (names stay distinct)
        f"synthetic:beir?docs=30&queries=5&seed={i}" if str(b).startswith("synthetic:") or not Path(b).exists() else b
        for i, b in enumerate(config.get("beir", []))
    ]
    return {
        "max_steps": 2,
        "eval_every_steps": 1,
        "batch_size": 4,
        "epochs": 1,
        "warmup_steps": 1,
        "isotropy_sample": 20,
        "base_model": base if local else OFFLINE_MINILM,
        "output_dim": 32,
        "train_data": head_triples(config.get("train_data"), 32, Path(workdir) / "train.jsonl", columns),
        "val_data": head_triples(config.get("val_data"), 32, Path(workdir) / "val.jsonl", columns),
        "triple_columns": None,  # the heads are JSONL with the default keys
        "beir": beir,
    }


def check(cfg: Config) -> str | None:
    """The base model (`model_folders.check_source`), every triples file and BEIR folder, read
    once (ValueError naming file, line and field); a note when the model cannot be checked here."""
    note = check_source(cfg.base_model, "base_model")  # None: given by a reference, known at run time
    checks = [("train_data", lambda f: open_triples(f, cfg.triple_columns), cfg.train_data)]
    checks += [("val_data", lambda f: open_triples(f, cfg.triple_columns), cfg.val_data)] if cfg.val_data else []
    checks += [("beir", lambda f: load_beir(f, cfg.beir_split), f) for f in cfg.beir]
    for field, load, source in checks:
        try:
            rows = load(source)
            if field == "train_data" and len(rows) < cfg.batch_size:
                raise ValueError(f"{source}: {len(rows)} triples are fewer than batch_size ({cfg.batch_size})")
        except ValueError as exc:
            exc.field = field  # type: ignore[attr-defined]
            raise
    return note
