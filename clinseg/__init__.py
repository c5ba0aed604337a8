"""ClinicalSeg core: volumes, I/O, networks, inference engine, registry, tasks and CLI.

Pure Python and PyTorch; never imports Slicer or Qt.
"""

__version__ = "0.1.0"
