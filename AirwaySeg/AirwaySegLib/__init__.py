"""Adapters particular to AirwaySeg (what its results need beyond the shared ClinicalSegLib adapters).

Only AirwaySeg.py imports this package; anything a second module needs moves to ClinicalSegLib.
"""
