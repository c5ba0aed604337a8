"""Adapters particular to NoduleSeg (what its results need beyond the shared ClinicalSegLib adapters).

Only NoduleSeg.py imports this package; anything a second module needs moves to ClinicalSegLib.
"""
