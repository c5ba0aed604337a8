"""Adapters for real dataset layouts (read and write), so phantoms and real cases share one pipeline."""

from .atm22 import Case, read_atm22, write_atm22

__all__ = ["Case", "read_atm22", "write_atm22"]
