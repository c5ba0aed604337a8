"""Adapters particular to StrokeSeg (what its results need beyond the shared ClinicalSegLib adapters).

Only StrokeSeg.py imports this package; anything a second module needs moves to ClinicalSegLib.
"""
