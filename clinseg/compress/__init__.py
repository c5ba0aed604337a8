"""Model compression in pure torch, after the OAR thesis's chapter 4: L1 filter pruning with masks and
physical channel removal, magnitude-threshold pruning, uniform multi-level quantisation with STE fine-tuning,
compact packed storage, and size reports.

Order of the thesis: ``prune_filters_l1`` at growing fractions (masked fine-tuning between),
``remove_pruned_channels``, ``prune_weights_threshold``, ``quantise_uniform(fine_tune=True)`` and fine-tuning,
``bake``, ``save_packed`` (``fine_tune`` between the steps). INT8 through ONNX Runtime is ``onnx_int8``
(optional: needs the ``onnx`` extra).
"""

from .finetune import fine_tune
from .masks import bake, plain_state_dict
from .pack import load_packed, save_packed, unpack
from .pipeline import CompressionPlan, Stage, compress, snapshot
from .prune import kernel_sparsity, prune_filters_l1, prune_weights_threshold
from .quantise import FakeQuant, UniformQuantiser, quantise_uniform
from .rebuild import remove_pruned_channels
from .report import SizeReport, model_size_report

__all__ = [
    "CompressionPlan",
    "FakeQuant",
    "SizeReport",
    "Stage",
    "UniformQuantiser",
    "bake",
    "compress",
    "fine_tune",
    "kernel_sparsity",
    "load_packed",
    "model_size_report",
    "plain_state_dict",
    "prune_filters_l1",
    "prune_weights_threshold",
    "quantise_uniform",
    "remove_pruned_channels",
    "save_packed",
    "snapshot",
    "unpack",
]
