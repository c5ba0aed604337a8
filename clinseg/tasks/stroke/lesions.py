"""The per-lesion table and summary figures of a stroke lesion mask."""

from __future__ import annotations

import cc3d
import numpy as np

from ...result import Table
from ...volume import Volume

TABLE_NAME = "lesions"
COLUMNS = ("label", "volume_ml", "center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm", "mean_adc_1e-6_mm2_s")


def lesion_table(mask: Volume, adc_micro: np.ndarray | None = None) -> tuple[Table, np.ndarray]:
    """One row per 26-connected lesion, largest first (centres in LPS mm), and the lesions' label map
    (1, 2, ... in the table's order). ``mean_adc`` is left empty without an ADC."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    labels = np.zeros(mask.shape, np.uint16)
    binary = np.ascontiguousarray(mask.array > 0)
    if binary.any():
        components, n = cc3d.connected_components(binary.astype(np.uint8), connectivity=26, return_N=True)
        counts = np.bincount(components.ravel(), minlength=n + 1)[1:]
        stats = cc3d.statistics(components)
        centroids = mask.index_to_physical(np.asarray(stats["centroids"])[1:, ::-1])
        voxel_ml = float(np.prod(mask.spacing)) / 1000.0
        for row, index in enumerate(np.argsort(-counts, kind="stable"), start=1):
            inside = components == index + 1
            labels[inside] = row
            columns["label"].append(row)
            columns["volume_ml"].append(round(float(counts[index]) * voxel_ml, 4))
            for axis, name in enumerate(("center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm")):
                columns[name].append(round(float(centroids[index][axis]), 2))
            mean_adc = "" if adc_micro is None else round(float(adc_micro[inside].mean()), 1)
            columns["mean_adc_1e-6_mm2_s"].append(mean_adc)
    return Table(TABLE_NAME, columns), labels
