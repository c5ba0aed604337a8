"""NoduleSeg on the real LIDC-IDRI-0001 slab (16 slices of 2.5 mm): the nodule that all four readers outlined
is found within its radius with no false positive scoring above it; skipped without ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.datasets.lidc import group_nodules, nodule_mask, read_lidc_case
from clinseg.post.nodules import measure_nodules
from clinseg.tasks.nodule import NoduleOptions, run_nodule


@pytest.fixture(scope="module")
def case_and_result(shared):
    folder = shared / "data" / "lidc" / "LIDC-IDRI-0001"
    if not folder.is_dir():
        pytest.skip("LIDC-IDRI-0001 is absent")
    case = read_lidc_case(folder)
    result = run_nodule(case.ct, NoduleOptions(engine="classical", min_score=0.0))
    groups = [g for g in group_nodules(case.reading.nodules, pixel_mm=case.ct.spacing[0])
              if len({n.reader for n in g}) >= 3]
    assert len(groups) == 1
    readers = [measure_nodules(case.ct.with_array(nodule_mask(n, case.ct).astype(np.uint8)))[0] for n in groups[0]]
    return case, result, readers


def _top(result) -> dict:
    return next(t for t in result.tables if t.name == "nodules").rows()[0]


def test_consensus_nodule_is_the_best_scoring_detection(case_and_result):
    _, result, readers = case_and_result
    centre = np.mean([m.center_lps for m in readers], axis=0)
    radius = np.mean([m.axes.mean_mm for m in readers]) / 2
    top = _top(result)
    found = np.array([top["center_lps_x_mm"], top["center_lps_y_mm"], top["center_lps_z_mm"]])
    assert np.linalg.norm(found - centre) <= radius  # rank 1: no false positive above it (<= 4 FPs/scan)
    assert top["score"] >= 0.5 and top["type"] == "solid"


@pytest.mark.xfail(strict=True, reason="mask under-reads the 30 mm nodule: 23.8 mm vs the readers' 29.7 mm")
def test_consensus_nodule_diameter_within_2_mm_of_readers(case_and_result):
    _, result, readers = case_and_result
    assert abs(_top(result)["mean_diameter_mm"] - np.mean([m.axes.mean_mm for m in readers])) <= 2.0
