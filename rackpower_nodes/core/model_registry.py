"""The model registry: versioned model folders and ``registry.json`` saying what each one is.

Layout of a registry folder::

    <root>/
      registry.json        entries per version + the history of what was in service
      registry.json.bak    the previous registry.json (written before every replace)
      lstm-<version>/      model folders written by forecast.registry.save_model
      jobs/                retrain job work folders (requests, reports, logs)

An entry (``entries[version]``, ``version`` = the model folder's name) holds ``path`` (relative
to the root), ``model_name`` and ``model_version`` (from its model.json), ``created_unix``
(s), ``status`` (candidate, promoted, rejected, rolled_back), ``metrics`` (champion vs
challenger evaluation, W), ``trained_on`` (bags with sizes and time ranges, or sim seeds) and
``events`` (status changes with their reasons). ``history`` lists ``{version, since_unix,
reason}`` in the order versions went into service; the last one is in service.

Rejected challengers would pile up with every retrain: ``prune`` deletes the folders of all
but the newest ``keep`` rejected versions (their entries stay, with ``pruned_unix``, so the
record of what was tried and why it lost is kept). Versions that were ever in service are
never pruned: they are what a rollback goes back to.

Every change rewrites registry.json atomically (temp file, fsync, rename), after copying the
previous file to registry.json.bak. A registry.json that cannot be read raises
:class:`RegistryError` naming the file and the backup; nothing is overwritten then.
Pure Python, no rclpy; one writer at a time (the retrain_scheduler node).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["REGISTRY_FILE", "STATUSES", "ModelRegistry", "RegistryError"]

REGISTRY_FILE = "registry.json"
BACKUP_SUFFIX = ".bak"
FORMAT_VERSION = 1
STATUSES = ("candidate", "promoted", "rejected", "rolled_back")


class RegistryError(Exception):
    """The registry cannot do what was asked; the message names the file or version."""


class ModelRegistry:
    """A registry folder (created if missing). Every call re-reads registry.json."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = self.root / REGISTRY_FILE
        self.backup = self.root / (REGISTRY_FILE + BACKUP_SUFFIX)
        self._load()        # fail early on a corrupt file

    # --- reading -----------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if not self.file.exists():
            return {"format_version": FORMAT_VERSION, "entries": {}, "history": []}
        try:
            doc = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(
                f"{self.file}: unreadable registry ({exc}); nothing was changed. The previous "
                f"state is in {self.backup}" + ("" if self.backup.exists() else " (absent)")
                + ": inspect it and copy it over the broken file to recover") from exc
        ok = (isinstance(doc, dict) and isinstance(doc.get("entries"), dict)
              and isinstance(doc.get("history"), list))
        if not ok or doc.get("format_version") != FORMAT_VERSION:
            raise RegistryError(f"{self.file}: expected an object with format_version "
                                f"{FORMAT_VERSION}, 'entries' (object) and 'history' (list); "
                                f"the previous state is in {self.backup}")
        return doc

    def entries(self) -> dict[str, dict[str, Any]]:
        """All entries by version (a copy)."""
        return self._load()["entries"]

    def entry(self, version: str) -> dict[str, Any]:
        """The entry of ``version``; RegistryError naming the known versions if absent."""
        entries = self.entries()
        if version not in entries:
            raise RegistryError(f"{self.file}: no version {version!r} (known: "
                                f"{sorted(entries) or 'none'})")
        return entries[version]

    def path_of(self, version: str) -> Path:
        """Absolute model folder of ``version``."""
        return self.root / self.entry(version)["path"]

    def current(self) -> dict[str, Any] | None:
        """The entry in service (last of the history), or None when nothing was promoted."""
        doc = self._load()
        if not doc["history"]:
            return None
        return doc["entries"][doc["history"][-1]["version"]]

    def history(self) -> list[dict[str, Any]]:
        """``[{version, since_unix, reason}]``, oldest first; the last one is in service."""
        return self._load()["history"]

    # --- changing ----------------------------------------------------------------------
    def register(self, candidate_dir: str | Path, trained_on: Mapping[str, Any],
                 metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Add a model folder as a candidate; a folder outside the root is moved into it.

        Returns the new entry. RegistryError when the folder has no readable model.json or
        its version is registered already.
        """
        src = Path(candidate_dir)
        meta = _model_meta(src)
        doc = self._load()
        version = src.name
        if version in doc["entries"]:
            raise RegistryError(f"{self.file}: version {version!r} is registered already")
        dest = self.root / version
        if src.resolve() != dest.resolve():
            if dest.exists():
                raise RegistryError(f"{dest}: exists already; cannot move {src} there")
            shutil.move(str(src), dest)
        now = time.time()
        entry = {"version": version, "path": version, "model_name": meta["name"],
                 "model_version": meta["version"], "created_unix": now,
                 "status": "candidate", "metrics": _jsonable(metrics),
                 "trained_on": _jsonable(trained_on),
                 "events": [{"status": "candidate", "unix": now, "reason": "registered"}]}
        doc["entries"][version] = entry
        self._save(doc)
        return entry

    def promote(self, version: str, reason: str) -> dict[str, Any]:
        """Put ``version`` in service (status promoted, appended to the history)."""
        doc = self._load()
        entry = self._get(doc, version)
        if not (self.root / entry["path"]).is_dir():
            raise RegistryError(f"{self.root / entry['path']}: model folder of {version!r} is "
                                "missing; cannot promote it")
        self._set_status(entry, "promoted", reason)
        doc["history"].append({"version": version, "since_unix": time.time(),
                               "reason": reason})
        self._save(doc)
        return entry

    def reject(self, version: str, reason: str) -> dict[str, Any]:
        """Mark a candidate rejected (it never goes into service)."""
        doc = self._load()
        entry = self._get(doc, version)
        if doc["history"] and doc["history"][-1]["version"] == version:
            raise RegistryError(f"{self.file}: {version!r} is in service; roll back instead "
                                "of rejecting it")
        self._set_status(entry, "rejected", reason)
        self._save(doc)
        return entry

    def rollback(self, to: str | None = None, reason: str = "operator") -> dict[str, Any]:
        """Take the version in service out (status rolled_back) and put back ``to`` or, by
        default, the newest earlier version in the history that was not rolled back.
        Returns the entry now in service; RegistryError says why when there is none."""
        doc = self._load()
        if not doc["history"]:
            raise RegistryError(f"{self.file}: nothing is in service, nothing to roll back")
        current = doc["history"][-1]["version"]
        if to is None:
            earlier = [h["version"] for h in reversed(doc["history"])
                       if h["version"] != current
                       and doc["entries"][h["version"]]["status"] == "promoted"]
            if not earlier:
                raise RegistryError(f"{self.file}: no earlier version in service to roll back "
                                    f"to from {current!r} (history: "
                                    f"{[h['version'] for h in doc['history']]})")
            to = earlier[0]
        target = self._get(doc, to)
        if to == current:
            raise RegistryError(f"{self.file}: rollback to={to!r} is the version in service")
        if not (self.root / target["path"]).is_dir():
            raise RegistryError(f"{self.root / target['path']}: model folder of {to!r} is "
                                "missing; cannot roll back to it")
        self._set_status(doc["entries"][current], "rolled_back", reason)
        self._set_status(target, "promoted", f"rollback from {current}: {reason}")
        doc["history"].append({"version": to, "since_unix": time.time(),
                               "reason": f"rollback: {reason}"})
        self._save(doc)
        return target

    def prune(self, keep: int) -> list[str]:
        """Delete the model folders of rejected versions but the newest ``keep``; returns the
        versions pruned. Their entries stay, marked with ``pruned_unix``."""
        if keep < 0:
            raise ValueError(f"keep = {keep!r}: expected a count >= 0")
        doc = self._load()
        served = {h["version"] for h in doc["history"]}
        rejected = [e for v, e in doc["entries"].items()         # in registration order
                    if e["status"] == "rejected" and v not in served and "pruned_unix" not in e]
        gone = rejected[:max(len(rejected) - keep, 0)]              # all but the newest keep
        if not gone:
            return []
        now = time.time()
        for entry in gone:
            folder = self.root / entry["path"]
            if folder.resolve().parent == self.root.resolve():   # only inside the registry
                shutil.rmtree(folder, ignore_errors=True)
            entry["pruned_unix"] = now
        self._save(doc)
        return [e["version"] for e in gone]

    # --- helpers -----------------------------------------------------------------------
    def _get(self, doc: dict, version: str) -> dict[str, Any]:
        if version not in doc["entries"]:
            raise RegistryError(f"{self.file}: no version {version!r} (known: "
                                f"{sorted(doc['entries']) or 'none'})")
        return doc["entries"][version]

    @staticmethod
    def _set_status(entry: dict, status: str, reason: str) -> None:
        entry["status"] = status
        entry["events"].append({"status": status, "unix": time.time(), "reason": reason})

    def _save(self, doc: dict) -> None:
        """Atomic replace of registry.json; the old file is copied to the backup first."""
        text = json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n"
        tmp = self.file.with_name(f".{REGISTRY_FILE}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if self.file.exists():
            shutil.copy2(self.file, self.backup)
        os.replace(tmp, self.file)
        _fsync_dir(self.root)


def _model_meta(folder: Path) -> dict[str, Any]:
    meta = folder / "model.json"
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        return {"name": str(doc["name"]), "version": str(doc["version"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{meta}: not a model folder ({type(exc).__name__}: {exc}); "
                            "expected a folder written by save_model") from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(obj: Any) -> Any:
    """Mappings/sequences/numpy values/Paths -> JSON values; NaN and inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
