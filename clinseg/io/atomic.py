"""Atomic outputs: a reader never sees a half-written file or folder.

Write into a temporary sibling (same folder, hence same file system), then
``os.replace`` it onto the target; on any error the temporary is removed and
the target, if it existed, is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def full_suffix(path: str | Path) -> str:
    """``'.seg.nrrd'``, ``'.nii.gz'``, ``'.nrrd'``... (all suffixes, lower case kept as is)."""
    return "".join(Path(path).suffixes)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same full suffix; replace ``path`` with it on success.

    The suffix is kept so that writers choosing the format from the file name
    (SimpleITK, pynrrd) write the intended format.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    # Not mkstemp: its 0600 mode would stick to the final file.
    tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes ``path``.

    A non-empty existing ``path`` is refused (``FileExistsError``) unless
    ``overwrite``; then it is swapped out and deleted only once the new folder
    is complete, so a failure leaves the old outputs intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty (use overwrite)")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
