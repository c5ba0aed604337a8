"""The case manifest: what a case folder was made from, and whether it is complete.

``<out>/<case>/manifest.json`` records the SHA-256 of the input bytes, each task's full option set, the clinseg
version (together: the ``fingerprint``), the outcome and every output file with its size. A re-run skips a case
only when its manifest says ``done``, its fingerprint equals the new one and every listed file is there with its
size; anything else (failed, half-written, other inputs or options) is redone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cases import Case

MANIFEST = "manifest.json"
CHUNK = 1 << 20


def hash_inputs(case: Case) -> str:
    """SHA-256 over each input's name and the names and bytes of its files (a DICOM series: all its slices)."""
    digest = hashlib.sha256()
    for name in sorted(case.inputs):
        digest.update(f"input:{name}\n".encode())
        for path in case.inputs[name].hashed_files():
            digest.update(f"file:{path.name}\n".encode())
            with open(path, "rb") as f:
                while block := f.read(CHUNK):
                    digest.update(block)
    return digest.hexdigest()


def fingerprint(input_sha256: str, tasks: Mapping[str, Mapping[str, Any]], version: str) -> str:
    """One hash of what decides a case's outputs: its inputs, the chained tasks in order with options, the version."""
    text = json.dumps({"inputs": input_sha256, "tasks": [[n, dict(o)] for n, o in tasks.items()],
                       "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def output_files(case_dir: Path) -> dict[str, int]:
    """Every file under ``case_dir`` but the manifest, by relative path, with its size in bytes."""
    return {p.relative_to(case_dir).as_posix(): p.stat().st_size
            for p in sorted(case_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}


def read_manifest(case_dir: Path) -> dict | None:
    try:
        data = json.loads((case_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(case_dir: Path, manifest: dict | None) -> bool:
    """The manifest says done and every file it lists is present with the listed size."""
    if not manifest or manifest.get("status") != "done" or not isinstance(manifest.get("files"), dict):
        return False
    for rel, size in manifest["files"].items():
        path = case_dir / rel
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def finished_manifest(case: Case, out_dir: Path, tasks: Mapping[str, Mapping[str, Any]], version: str) -> dict | None:
    """The manifest of ``case`` when its folder is complete and was made from the same inputs, tasks and
    version; else None (the case must be run). The inputs are hashed only when the rest already matches."""
    case_dir = out_dir / case.case_id
    manifest = read_manifest(case_dir)
    if not is_complete(case_dir, manifest):
        return None
    if manifest.get("tasks") != {n: json.loads(json.dumps(dict(o), default=str)) for n, o in tasks.items()}:
        return None
    if manifest.get("clinseg_version") != version:
        return None
    try:
        sha = hash_inputs(case)
    except OSError:
        return None  # the input went away or is unreadable: running it reports why
    return manifest if manifest.get("fingerprint") == fingerprint(sha, tasks, version) else None
