"""Shared Slicer-side package of the ClinicalSeg extension: everything a module needs but its task's data.

- ``task``: ``TaskSpec``, a task as data (CLI subcommand and options, engines, node layout, import hook);
- ``jobs``: one background run (volume nodes -> temp files -> ``clinseg <task>`` child -> nodes);
- ``runner``: the child process with JSON-lines progress and cancel, and its Qt shell for widgets;
- ``choices``: engine and model choices of a task's model selector, from the registry's cards;
- ``taskmodule``, ``taskwidget``: the module, logic, self-test and widget bases (Slicer application);
- ``mrml``: Volume <-> volume node and Result -> segmentation/markups/table nodes (``mrml_result``: layouts);
- ``dependencies``: install torch (via the PyTorch extension) and the pinned packages on first use;
- ``widgets``: device choices, availability messages and small widget helpers.

Submodules are imported explicitly (``from ClinicalSegLib import runner``) so that importing the
package itself stays cheap and Qt-free.
"""
