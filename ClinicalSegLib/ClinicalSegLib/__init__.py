"""Shared Slicer-side package of the ClinicalSeg extension.

- ``runner``: run ``python -m clinseg ...`` in the background with progress, cancel and result import;
- ``dependencies``: install torch (via the PyTorch extension) and the pinned packages on first use;
- ``widgets``: device choices, availability messages and small widget helpers;
- ``mrml``: Volume <-> volume node and Result -> segmentation/markups/table nodes.

Submodules are imported explicitly (``from ClinicalSegLib import runner``) so that importing the
package itself stays cheap and Qt-free.
"""
