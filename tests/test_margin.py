"""GTV -> CTV margin through soft tissue only: exact ball where nothing is in the way, no crossing of bone, air or
the skin, invaded bone allowed; on a head & neck phantom the CT-only version matches the phantom's own CTV."""

from __future__ import annotations

import edt
import numpy as np
import pytest

from clinseg.errors import InputError
from clinseg.phantoms import headneck
from clinseg.phantoms.headneck import generate_headneck
from clinseg.post import margin
from clinseg.post.margin import ctv_from_gtv, tissue_maps
from clinseg.volume import Volume

SPACING = (1.0, 1.0, 2.0)  # i, j, k mm


def _scene() -> tuple[Volume, np.ndarray]:
    """Soft tissue (40 HU) block in air; a bone plate (1000 HU) at i = 40..43; an air pocket; a GTV ball."""
    hu = np.full((30, 60, 80), -1000, np.int16)
    hu[2:28, 5:55, 5:75] = 40
    hu[:, :, 40:44][2:28, 5:55] = 1000
    hu[12:18, 25:35, 18:22] = -900  # air pocket left of the tumour
    ct = Volume(hu, SPACING, (0.0, 0.0, 0.0), np.eye(3), "ct")
    k, j, i = np.ogrid[:30, :60, :80]
    gtv = ((i - 30) ** 2 + (j - 30) ** 2 + ((k - 15) * 2.0) ** 2) <= 5.0**2
    return ct, gtv


def test_margin_stops_at_bone_air_and_skin():
    ct, gtv = _scene()
    ctv = ctv_from_gtv(gtv, ct, 10.0).array.astype(bool)
    hu = ct.array
    assert ctv[gtv].all()
    assert not (ctv & (hu >= 1000)).any()  # no bone
    assert not (ctv & (hu <= -900)).any()  # no air: neither the pocket nor outside the body
    assert not ctv[:, :, 44:].any()  # nothing beyond the plate (the plate spans the whole block)
    # Away from barriers the margin is the exact Euclidean one: compare on the open side (j < 24, clear of the
    # pocket, the plate and the skin).
    expected = edt.edt(~gtv, anisotropy=(2.0, 1.0, 1.0)) <= 10.0
    open_side = np.zeros_like(ctv)
    open_side[3:27, 6:24, 24:38] = True
    assert np.array_equal(ctv[open_side], expected[open_side])
    # The pocket shadows tissue behind it: fewer tissue voxels than the straight-line margin reaches.
    assert np.count_nonzero(ctv) < np.count_nonzero(expected & (hu == 40))


def test_invaded_bone_is_allowed():
    ct, _ = _scene()
    k, j, i = np.ogrid[:30, :60, :80]
    gtv = ((i - 40) ** 2 + (j - 30) ** 2 + ((k - 15) * 2.0) ** 2) <= 4.0**2  # sits in the plate
    ctv = ctv_from_gtv(ct.with_array(gtv.astype(np.uint8), "gtv"), ct, 6.0).array.astype(bool)
    assert (ctv & (ct.array >= 1000) & ~gtv).any()  # grows inside the invaded plate
    assert ctv[:, :, 44:].any()  # and through it to the tissue behind


def test_refusals():
    ct, gtv = _scene()
    with pytest.raises(InputError, match="empty"):
        ctv_from_gtv(np.zeros_like(gtv), ct, 5.0)
    with pytest.raises(InputError, match="grid"):
        ctv_from_gtv(gtv[:, :, :-1], ct, 5.0)
    with pytest.raises(InputError, match=">= 0"):
        ctv_from_gtv(gtv, ct, -1.0)


def test_phantom_ctv_from_ct_alone_matches_the_phantom():
    ph = generate_headneck(4, spacing=(1.5, 1.5, 2.5))
    assert headneck.expand_ctv is margin.expand_ctv  # one implementation
    body, air, bone_id = tissue_maps(ph.ct)
    assert np.count_nonzero(body & (ph.body.array > 0)) / np.count_nonzero(ph.body.array) > 0.98
    ctv = ctv_from_gtv(ph.gtv, ph.ct, 8.0).array.astype(bool)
    truth = ph.ctv.array.astype(bool)
    dice = 2 * np.count_nonzero(ctv & truth) / (np.count_nonzero(ctv) + np.count_nonzero(truth))
    assert dice > 0.9, dice
    assert not (ctv & (ph.ct.array > 600) & ~(ph.gtv.array > 0)).any()  # never into dense bone
