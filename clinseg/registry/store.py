"""The model cache: install (download), import (weight file or model pack), verify, load.

Layout: ``<home>/models/<id>/card.json`` plus the weight files the card lists,
where ``<home>`` is ``$CLINSEG_HOME`` or ``~/.clinseg``. Every model folder is
built in a temporary sibling and renamed into place only once each file's
SHA-256 matched, so a failed or interrupted install leaves nothing behind.

Weights are only ever read with safetensors or ``torch.load(weights_only=True)``
(no arbitrary pickles). A PyTorch state dict is converted to safetensors once its
hash matched; the installed card copy records ``converted_from_sha256``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, ModelError
from ..io.atomic import atomic_output_dir, atomic_write
from ..nets import build_network
from ..progress import ProgressCallback, ProgressTracker
from ..volume import label_of
from .card import FileEntry, ModelCard

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "models"
CARD_NAME = "card.json"
CHUNK = 1 << 20
URL_SCHEMES = ("https://", "http://", "file://")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # as in schema.json; also keeps ids inside the cache folder


def clinseg_home() -> Path:
    """Cache root: ``$CLINSEG_HOME`` or ``~/.clinseg``."""
    env = os.environ.get("CLINSEG_HOME")
    return Path(env).expanduser() if env else Path.home() / ".clinseg"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_model_pack(path: str | Path) -> bool:
    """A zip holding a ``card.json`` (a PyTorch ``.pth`` is a zip too, but without a card)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n == CARD_NAME or n.endswith("/" + CARD_NAME) for n in archive.namelist())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_digest(model_id: str, entry: FileEntry, actual: str, size: int) -> None:
    if actual != entry.sha256:
        sizes = f" (size {size} bytes, expected {entry.size})" if size != entry.size else ""
        raise ModelError(
            model_id, f"{entry.name}: SHA-256 mismatch, expected {entry.sha256}, got {actual}{sizes}; refused"
        )


def _copy_verified(model_id: str, entry: FileEntry, source, dest: Path, tracker: ProgressTracker | None = None) -> None:
    """Stream ``source`` (a binary file object) to ``dest``, hashing as it goes; refuse a wrong hash or size."""
    digest, written = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > entry.size:  # stop early: never store more than the card allows
                raise ModelError(model_id, f"{entry.name}: larger than the expected {entry.size} bytes; refused")
            digest.update(chunk)
            out.write(chunk)
            if tracker is not None:
                tracker.step(len(chunk))
    _check_digest(model_id, entry, digest.hexdigest(), written)


def read_state_dict(path: Path, fmt: str, subject: str) -> dict[str, torch.Tensor]:
    """Tensors of one weight file, on the CPU, without unpickling arbitrary objects."""
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or non-tensor content: safetensors/torch raise many types
        raise ModelError(subject, f"{path.name} cannot be read as {fmt}: {_first_line(error)}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(subject, f"{path.name} is not a plain state dict (name -> tensor)")
    return dict(state)


def _tensor_shapes(path: Path, fmt: str, subject: str) -> dict[str, tuple[int, ...]]:
    if fmt == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as error:  # header errors come as several exception types
            raise ModelError(subject, f"{path.name} cannot be read as safetensors: {_first_line(error)}") from None
    return {k: tuple(v.shape) for k, v in read_state_dict(path, fmt, subject).items()}


def _convert_to_safetensors(model_id: str, path: Path, entry: FileEntry) -> FileEntry:
    """Verified ``weights_only`` load of a state dict, written as safetensors beside it; the original is removed."""
    from safetensors.torch import save_file

    state = read_state_dict(path, entry.format, model_id)
    out = path.with_suffix(".safetensors")
    # Clones: safetensors refuses tensors that share storage or are non-contiguous views.
    tensors = {key: value.detach().clone().contiguous() for key, value in state.items()}
    # One metadata key only: safetensors writes several in random order, and the file's hash should be reproducible.
    save_file(tensors, str(out), metadata={"converted_from_sha256": entry.sha256})
    path.unlink()
    return FileEntry(out.name, sha256_file(out), out.stat().st_size, "safetensors", None, entry.sha256)


class Registry:
    """Built-in model cards (shipped in ``clinseg/models``) plus the models installed under ``<home>/models``."""

    def __init__(self, home: str | Path | None = None, builtin_dir: str | Path = BUILTIN_DIR) -> None:
        self.home = Path(home) if home is not None else clinseg_home()
        self.builtin_dir = Path(builtin_dir)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    # --- cards --------------------------------------------------------------------
    def builtin_cards(self) -> dict[str, ModelCard]:
        cards = {}
        for path in sorted(self.builtin_dir.glob(f"*/{CARD_NAME}")):
            card = ModelCard.load(path)
            cards[card.id] = card
        return cards

    def installed_cards(self) -> dict[str, ModelCard]:
        """Valid installed cards by id; broken ones are left to ``verify``."""
        cards = {}
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.glob(f"*/{CARD_NAME}")):
                if path.parent.name.startswith("."):  # staging folders of installs in progress
                    continue
                try:
                    card = ModelCard.load(path)
                except ModelError:
                    continue
                if card.id == path.parent.name:
                    cards[card.id] = card
        return cards

    def list(self) -> list[ModelCard]:
        """Every known model, sorted by id; an installed card copy replaces its built-in card."""
        cards = {**self.builtin_cards(), **self.installed_cards()}
        return [cards[key] for key in sorted(cards)]

    def card(self, model_id: str) -> ModelCard:
        """The installed card of ``model_id`` if any, else its built-in card; unknown ids raise ``ModelError``."""
        installed = self.models_dir / model_id / CARD_NAME
        if _ID.fullmatch(model_id) and installed.is_file():
            return ModelCard.load(installed)
        builtin = self.builtin_cards()
        if model_id in builtin:
            return builtin[model_id]
        known = ", ".join(card.id for card in self.list()) or "none"
        raise ModelError("models", f"unknown model '{model_id}'; known: {known}")

    def _source_card(self, model_id: str) -> ModelCard:
        """The card to install from: built-in when there is one (it names the original files)."""
        return self.builtin_cards().get(model_id) or self.card(model_id)

    def model_dir(self, model_id: str) -> Path | None:
        """Folder holding the model's card and weights, or ``None`` when they are not available."""
        installed = self.models_dir / model_id
        if _ID.fullmatch(model_id) and (installed / CARD_NAME).is_file():
            return installed
        # Small weights may ship inside the package beside their card.
        card = self.builtin_cards().get(model_id)
        if card is not None and all((self.builtin_dir / model_id / f.name).is_file() for f in card.files):
            return self.builtin_dir / model_id
        return None

    def is_installed(self, model_id: str) -> bool:
        return self.model_dir(model_id) is not None

    # --- installing ---------------------------------------------------------------
    def install(self, model_id: str, url: str | None = None, progress: ProgressCallback | None = None) -> ModelCard:
        """Download the model's files (``url`` overrides a single file's URL), check hashes, install atomically."""
        card = self._source_card(model_id)
        files = card.files
        if url is not None and len(files) != 1:
            raise ModelError(model_id, f"has {len(files)} files; --url only works for single-file models")
        for entry in files:
            source = url or entry.url
            if source is None:
                raise ModelError(model_id, f"{entry.name} has no download URL; give one or import the file")
            if not source.lower().startswith(URL_SCHEMES):
                raise ModelError(model_id, f"unsupported URL {source!r} (expected https://, http:// or file://)")
        with atomic_output_dir(self.models_dir / model_id, overwrite=True) as stage:
            for entry in files:
                source = url or entry.url
                tracker = ProgressTracker(f"download {entry.name}", entry.size, progress)
                try:
                    with urllib.request.urlopen(source, timeout=60) as response:
                        _copy_verified(model_id, entry, response, stage / entry.name, tracker)
                except (urllib.error.URLError, OSError, ValueError) as error:
                    reason = getattr(error, "reason", None) or _first_line(error)
                    raise ModelError(model_id, f"download of {entry.name} from {source} failed: {reason}") from None
            self._finish(card, stage, source=url or ", ".join(str(f.url) for f in files))
        return ModelCard.load(self.models_dir / model_id / CARD_NAME)

    def import_file(self, path: str | Path, model_id: str | None = None) -> ModelCard:
        """Install a weight file from disk, identified by its SHA-256 among the known cards (a model pack is passed
        on to ``import_pack``)."""
        path = Path(path)
        subject = label_of(path)
        if not path.is_file():
            raise InputError(subject, "no such file")
        if is_model_pack(path):
            return self.import_pack(path)
        digest = sha256_file(path)
        cards = {**self.installed_cards(), **self.builtin_cards()}  # built-in cards name the original files
        if model_id is not None:
            cards = {model_id: self._source_card(model_id)}
        matches = [(card, entry) for card in cards.values() for entry in card.files if entry.sha256 == digest]
        if not matches:
            which = f"model '{model_id}'" if model_id else f"any known model ({', '.join(sorted(cards)) or 'none'})"
            raise ModelError(subject, f"SHA-256 {digest} is not a weight file of {which}; refused")
        card, entry = matches[0]
        if len(card.files) != 1:
            raise ModelError(card.id, f"has {len(card.files)} weight files; import a model pack (.zip) instead")
        with atomic_output_dir(self.models_dir / card.id, overwrite=True) as stage:
            with open(path, "rb") as source:  # hash the copy too: the file may change after the first read
                _copy_verified(card.id, entry, source, stage / entry.name)
            self._finish(card, stage, source=str(path.resolve()))
        return ModelCard.load(self.models_dir / card.id / CARD_NAME)

    def import_pack(self, zip_path: str | Path) -> ModelCard:
        """Install a model pack: a zip holding ``card.json`` and the weight files it lists (hash-checked)."""
        zip_path = Path(zip_path)
        subject = label_of(zip_path)
        try:
            archive = zipfile.ZipFile(zip_path)
        except (OSError, zipfile.BadZipFile) as error:
            raise InputError(subject, f"not a readable model pack (zip): {_first_line(error)}") from None
        with archive:
            card_members = [n for n in archive.namelist() if n == CARD_NAME or n.endswith("/" + CARD_NAME)]
            if len(card_members) != 1:
                raise InputError(subject, f"a model pack holds exactly one {CARD_NAME}; found {len(card_members)}")
            prefix = card_members[0][: -len(CARD_NAME)]
            try:
                data = json.loads(archive.read(card_members[0]).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise InputError(subject, f"{CARD_NAME} is not valid JSON: {_first_line(error)}") from None
            if isinstance(data, dict):
                data.pop("installed", None)
            card = ModelCard.from_dict(data)
            self._check_pack_against_builtin(card)
            members = set(archive.namelist())
            with atomic_output_dir(self.models_dir / card.id, overwrite=True) as stage:
                for entry in card.files:
                    if prefix + entry.name not in members:
                        raise ModelError(card.id, f"model pack {subject} lacks {entry.name}")
                    with archive.open(prefix + entry.name) as source:
                        _copy_verified(card.id, entry, source, stage / entry.name)
                self._finish(card, stage, source=str(zip_path.resolve()))
        return ModelCard.load(self.models_dir / card.id / CARD_NAME)

    def _check_pack_against_builtin(self, card: ModelCard) -> None:
        """A pack may not swap other weights under a built-in model's id."""
        builtin = self.builtin_cards().get(card.id)
        if builtin is None:
            return
        allowed = {entry.sha256 for entry in builtin.files}
        for entry in card.files:
            if entry.sha256 not in allowed and entry.converted_from_sha256 not in allowed:
                raise ModelError(card.id, f"model pack file {entry.name} (SHA-256 {entry.sha256}) is not a file of "
                                 "the built-in model; refused")

    def _finish(self, card: ModelCard, stage: Path, source: str) -> None:
        """Convert state dicts to safetensors, check the weights fit the network, write the card copy."""
        entries = []
        for entry in card.files:
            if entry.format == "torch-state-dict":
                entry = _convert_to_safetensors(card.id, stage / entry.name, entry)
            entries.append(entry.as_dict())
        data = card.to_dict()
        data["files"] = entries
        data["installed"] = {"source": source, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        installed = ModelCard.from_dict(data)
        problems = self._weight_problems(installed, stage)
        if problems:
            raise ModelError(card.id, "weights do not fit the network: " + "; ".join(problems[:3]))
        (stage / CARD_NAME).write_text(installed.to_json(), encoding="utf-8")

    def export_pack(self, model_id: str, zip_path: str | Path) -> Path:
        """Write an installed, verified model as a pack zip (``card.json`` + weights) for offline machines."""
        folder = self.model_dir(model_id)
        if folder is None:
            raise ModelError(model_id, "is not installed; nothing to export")
        problems = self.verify(model_id)
        if problems:
            raise ModelError(model_id, "fails verification: " + "; ".join(problems[:3]))
        card = ModelCard.load(folder / CARD_NAME)
        data = card.to_dict()
        data.pop("installed", None)
        with atomic_write(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(CARD_NAME, json.dumps(data, indent=2) + "\n")
                for entry in card.files:
                    archive.write(folder / entry.name, entry.name)
        return Path(zip_path)

    # --- checking and loading -----------------------------------------------------
    def _weight_problems(self, card: ModelCard, folder: Path) -> list[str]:
        """Tensor names/shapes of the files against the card's network, and its parameter count."""
        name, kwargs = card.architecture
        try:
            with torch.device("meta"):  # shapes only: no memory for the weights
                network = build_network(name, kwargs)
        except (LookupError, TypeError, ValueError) as error:
            return [f"network {name}{kwargs} cannot be built: {_first_line(error)}"]
        expected = {key: tuple(value.shape) for key, value in network.state_dict().items()}
        count = sum(p.numel() for p in network.parameters())
        problems = [] if count == card.parameter_count else [
            f"{name} has {count} parameters, the card says {card.parameter_count}"
        ]
        found: dict[str, tuple[int, ...]] = {}
        for entry in card.files:
            found.update(_tensor_shapes(folder / entry.name, entry.format, card.id))
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        if missing:
            problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            first = wrong[0]
            problems.append(f"{len(wrong)} tensors of wrong shape (e.g. {first}: {found[first]} vs {expected[first]})")
        return problems

    def _file_problems(self, card: ModelCard, folder: Path) -> list[str]:
        problems = []
        for entry in card.files:
            path = folder / entry.name
            if not path.is_file():
                problems.append(f"{entry.name}: missing")
                continue
            size = path.stat().st_size
            if size != entry.size:
                problems.append(f"{entry.name}: size {size} bytes, expected {entry.size}")
            actual = sha256_file(path)
            if actual != entry.sha256:
                problems.append(f"{entry.name}: SHA-256 mismatch, expected {entry.sha256}, got {actual}")
        return problems

    def verify(self, model_id: str) -> list[str]:
        """Problems of an installed model (card, file sizes and hashes, tensors vs network); empty when sound."""
        self.card(model_id)  # unknown ids raise
        folder = self.model_dir(model_id)
        if folder is None:
            return ["not installed"]
        try:
            card = ModelCard.load(folder / CARD_NAME)
        except ModelError as error:
            return [error.problem]
        problems = [] if card.id == model_id else [f"card id '{card.id}' does not match folder '{model_id}'"]
        problems += self._file_problems(card, folder)
        if not problems:
            try:
                problems += self._weight_problems(card, folder)
            except ModelError as error:
                problems.append(error.problem)
        return problems

    def load_network(self, model_id: str, device: str | torch.device = "cpu") -> nn.Module:
        """Build the card's network, load its hash-checked weights strictly, move to ``device``, eval mode."""
        self.card(model_id)  # unknown ids raise
        folder = self.model_dir(model_id)
        if folder is None:
            raise ModelError(model_id, f"is not installed; run 'clinseg models install {model_id}' "
                             "or 'clinseg models import FILE'")
        card = ModelCard.load(folder / CARD_NAME)
        problems = self._file_problems(card, folder)
        if problems:
            raise ModelError(model_id, "; ".join(problems) + f"; reinstall with 'clinseg models install {model_id}'")
        state: dict[str, torch.Tensor] = {}
        for entry in card.files:
            state.update(read_state_dict(folder / entry.name, entry.format, model_id))
        name, kwargs = card.architecture
        try:
            network = build_network(name, kwargs)
            network.load_state_dict(state, strict=True)
        except (LookupError, TypeError, RuntimeError) as error:
            raise ModelError(model_id, f"weights do not load into {name}: {_first_line(error)}") from None
        return network.to(device).eval()

    def remove(self, model_id: str) -> bool:
        """Delete an installed model folder; ``False`` when it was not installed."""
        folder = self.models_dir / model_id
        if not _ID.fullmatch(model_id) or not (folder / CARD_NAME).is_file():
            return False
        shutil.rmtree(folder)
        return True


def get_registry(home: str | Path | None = None) -> Registry:
    """The registry for ``home`` (default ``$CLINSEG_HOME`` or ``~/.clinseg``), read afresh each call."""
    return Registry(home)
