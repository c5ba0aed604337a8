"""Model cards: one JSON document per model, checked against ``schema.json``.

The validator covers the small JSON-Schema subset the schema uses (type, enum,
required, properties, additionalProperties, items, min/max, minProperties, pattern, anyOf,
local ``$ref``), so no extra dependency is needed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..terminology import Segment

SCHEMA_PATH = Path(__file__).with_name("schema.json")
TASKS = ("airway", "nodule", "oar", "ctv", "stroke")

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


@lru_cache(maxsize=1)
def card_schema() -> dict:
    """The model-card JSON schema shipped with the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":  # bool is an int in Python, never in JSON
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict, root: dict, path: str, problems: list[str]) -> None:
    schema = _resolve(schema, root)
    where = path or "card"
    if "anyOf" in schema:
        if not any(not validate_against(value, option, root, path) for option in schema["anyOf"]):
            problems.append(f"{where}: {value!r} matches none of the allowed forms")
        return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
        return
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        problems.append(f"{where}: expected {expected}, got {type(value).__name__}")
        return
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} > {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"{where}: {value} must be > {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            problems.append(f"{where}: {value} must be < {schema['exclusiveMaximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: needs at least {schema['minItems']} items, has {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: allows at most {schema['maxItems']} items, has {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]", problems)
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            problems.append(f"{where}: needs at least {schema['minProperties']} fields, has {len(value)}")
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}: missing {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key in properties:
                _check(item, properties[key], root, sub, problems)
            elif schema.get("additionalProperties", True) is False:
                problems.append(f"{where}: unexpected field {key!r}")


def validate_against(value: Any, schema: dict, root: dict | None = None, path: str = "") -> list[str]:
    """Problems (``'path: what'``) of ``value`` against a JSON-schema subset; empty when valid."""
    problems: list[str] = []
    _check(value, schema, root if root is not None else schema, path, problems)
    return problems


def validate_card(data: Any) -> list[str]:
    """Schema problems plus the consistency rules a schema cannot say (unique labels and file names)."""
    problems = validate_against(data, card_schema())
    if problems or not isinstance(data, dict):
        return problems
    values = [label["value"] for label in data["labels"]]
    if len(set(values)) != len(values):
        problems.append(f"labels: duplicate label values {sorted(values)}")
    names = [entry["name"] for entry in data["files"]]
    if len(set(names)) != len(names):
        problems.append(f"files: duplicate file names {names}")
    return problems


@dataclass(frozen=True)
class FileEntry:
    """One weight file of a model."""

    name: str
    sha256: str
    size: int
    format: str  # "safetensors" | "torch-state-dict"
    url: str | None = None
    converted_from_sha256: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; ``data`` is the card's JSON object (use ``to_dict`` for a copy)."""

    data: dict
    source: Path | None = None  # card.json it was read from

    @classmethod
    def from_dict(cls, data: Any, source: Path | None = None) -> ModelCard:
        """Validate ``data``; a bad card raises ``ModelError`` listing its first problems."""
        problems = validate_card(data)
        if problems:
            subject = source.parent.name if source is not None else (data.get("id") if isinstance(data, dict) else None)
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ModelError(subject or "model card", "invalid model card: " + "; ".join(problems[:3]) + more)
        return cls(copy.deepcopy(data), source)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read and validate a ``card.json``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(path.parent.name or str(path), f"cannot read model card {path.name}: {error}") from None
        return cls.from_dict(data, path)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.data)

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2) + "\n"

    # --- convenient views ---------------------------------------------------------
    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def licence(self) -> str:
        return self.data["licence"]

    @property
    def synthetic(self) -> bool:
        """Whether the weights were trained on synthetic data only."""
        return bool(self.data["training_data"]["synthetic"])

    @property
    def architecture(self) -> tuple[str, dict]:
        """Network class name (in ``clinseg.nets``) and its keyword arguments."""
        arch = self.data["architecture"]
        return arch["class"], dict(arch.get("kwargs", {}))

    @property
    def inputs(self) -> dict:
        return copy.deepcopy(self.data["inputs"])

    def working_spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float] | None:
        """The spacing (i, j, k mm) the network should see for an input of ``spacing``; None: run at native spacing.

        ``inputs.spacing`` is "native", a fixed spacing, or {"min_mm", "max_mm"}: native within that range, axes
        outside it resampled to the nearest bound (a network fails on spacings it never saw in training)."""
        rule = self.data["inputs"]["spacing"]
        if rule == "native":
            return None
        if isinstance(rule, list):
            target = tuple(float(v) for v in rule)
        else:
            low, high = float(rule.get("min_mm", 0.0)), float(rule.get("max_mm", float("inf")))
            target = tuple(min(max(float(s), low), high) for s in spacing)
        return None if all(abs(t - s) <= 1e-3 * s for t, s in zip(target, spacing)) else target

    @property
    def inference(self) -> dict:
        return copy.deepcopy(self.data.get("inference", {}))

    @property
    def postprocessing(self) -> list[dict]:
        return copy.deepcopy(self.data.get("postprocessing", []))

    @property
    def parameter_count(self) -> int:
        return int(self.data["parameter_count"])

    @property
    def figures(self) -> dict:
        return copy.deepcopy(self.data["figures"])

    @property
    def files(self) -> list[FileEntry]:
        return [FileEntry(**entry) for entry in self.data["files"]]

    def segments(self) -> list[Segment]:
        """The output labels as ``terminology.Segment`` (value, name, colour, codes)."""
        out = []
        for label in self.data["labels"]:
            modifier = tuple(label["modifier"]) if label.get("modifier") else None
            out.append(
                Segment(
                    label["value"],
                    label["name"],
                    tuple(float(c) for c in label["color"]),  # type: ignore[arg-type]
                    tuple(label["category"]),  # type: ignore[arg-type]
                    tuple(label["type"]),  # type: ignore[arg-type]
                    modifier,  # type: ignore[arg-type]
                )
            )
        return out
