"""A study folder that was moved or copied (`mv`, `sync s3://... ./local`): its records, and the
configs Tune's experiment state keeps for its trials, name paths in the place where they were
written (the checkpoints a later stage used, the trial folders). A study continues from where
it is now: those paths are moved under the new place before anything reads them, on the driver
(`run_study`: the stage records) and in each trial (`run_trial`: its config, which Tune restores
as it was), so that nothing is read from or written to the old place, and the two folders are
never mixed. (Tune moves its own trial and checkpoint paths itself: `Trial.set_storage`.)
"""

from __future__ import annotations

import posixpath


def relocated(value, old: str, new: str):
    """`value` (a config or record: dicts, lists, strings) with every path at or under the study
    folder `old` (a URI or local path) moved under `new`; other values as they are."""
    old, new = old.rstrip("/"), new.rstrip("/")
    if old == new:
        return value
    prefix = old + "/"

    def move(v):
        if isinstance(v, str):
            if v == old:
                return new
            return new + "/" + v[len(prefix) :] if v.startswith(prefix) else v
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        if isinstance(v, list):
            return [move(x) for x in v]
        return v

    return move(value)


def recorded_location(meta: dict | None, records: dict[str, dict | None]) -> str | None:
    """Where the study folder was when it was last run: `study.json`'s `location`, or (studies
    stored before it was recorded) the folder above a trial's recorded `<stage>/<trial id>` path."""
    if meta and meta.get("location"):
        return meta["location"]
    for record in records.values():
        for trial in (record or {}).get("trials", {}).values():
            path = trial.get("path")
            if path and path.rstrip("/").endswith(f"/{trial.get('stage')}/{trial.get('trial_id')}"):
                return posixpath.dirname(posixpath.dirname(path.rstrip("/")))
    return None
