"""StrokeSeg: ischaemic stroke lesions in brain MRI (acute DWI + ADC, or chronic T1), with lesion volumes.

The pipeline (and with it PyTorch) is imported on first use, so ``clinseg.tasks.stroke.sequences`` serves the
Slicer module (telling sequences from volume names) before PyTorch is installed.
"""

from .sequences import SequenceInput, assign_sequences

__all__ = ["SequenceInput", "StrokeOptions", "assign_sequences", "run_stroke"]


def __getattr__(name: str):
    if name in ("StrokeOptions", "run_stroke"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
