"""StrokeSeg: ischaemic stroke lesions in brain MRI (acute DWI + ADC, or chronic T1), with lesion volumes."""

from .pipeline import StrokeOptions, run_stroke
from .sequences import SequenceInput, assign_sequences

__all__ = ["SequenceInput", "StrokeOptions", "assign_sequences", "run_stroke"]
