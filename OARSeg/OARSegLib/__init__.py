"""Adapters particular to OARSeg (what its results need beyond the shared ClinicalSegLib adapters).

Only OARSeg.py imports this package; anything a second module needs moves to ClinicalSegLib.
"""
