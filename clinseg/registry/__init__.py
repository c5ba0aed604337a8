"""Model registry: model cards, the local model cache, install/import/verify and network loading."""

from .card import FileEntry, ModelCard, card_schema, validate_card
from .store import Registry, clinseg_home, get_registry, sha256_file

__all__ = [
    "FileEntry",
    "ModelCard",
    "Registry",
    "card_schema",
    "clinseg_home",
    "get_registry",
    "sha256_file",
    "validate_card",
]
