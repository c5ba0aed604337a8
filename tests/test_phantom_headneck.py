"""Head & neck phantom: determinism, organ volumes and sides, HU, GTV/CTV rules, label noise."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.errors import InputError
from clinseg.phantoms import hn_anatomy as hn
from clinseg.phantoms.headneck import (
    ctv_allowed_region,
    expand_ctv,
    generate_headneck,
)
from clinseg.phantoms.label_noise import NOISE_LEVELS, noisy_labels, perturb_mask


@pytest.fixture(scope="module")
def full():
    return generate_headneck(7, (1.5, 1.5, 2.5), "full")


def _ml(phantom, mask) -> float:
    return float(mask.sum() * np.prod(phantom.ct.spacing) / 1000.0)


def test_deterministic_per_seed():
    a = generate_headneck(1, (2.0, 2.0, 3.0), "small")
    b = generate_headneck(1, (2.0, 2.0, 3.0), "small")
    c = generate_headneck(2, (2.0, 2.0, 3.0), "small")
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.ctv.array, b.ctv.array)
    assert not np.array_equal(a.labels.array, c.labels.array)
    assert a.ct.array.dtype == np.int16 and a.labels.array.dtype == np.uint8
    assert a.ct.spacing == (2.0, 2.0, 3.0)


@pytest.mark.parametrize("spacing", [(0.4, 1, 1), (1, 1, 3.5), (1, 1)])
def test_bad_spacing_refused(spacing):
    with pytest.raises(InputError):
        generate_headneck(0, spacing)


def test_every_organ_present_with_plausible_volume(full):
    expected = {  # ml, around the spread of the real H&N contours
        "Brain": (1100, 1650), "Brainstem": (20, 35), "Mandible": (40, 85), "Parotid L": (15, 40),
        "Parotid R": (15, 40), "Submandibular L": (3, 13), "Submandibular R": (3, 13), "Eye L": (5, 11),
        "Eye R": (5, 11), "Lens L": (0.08, 0.4), "Lens R": (0.08, 0.4), "Optic nerve L": (0.3, 1.3),
        "Optic nerve R": (0.3, 1.3), "Optic chiasm": (0.1, 0.8), "Cochlea L": (0.01, 0.15),
        "Cochlea R": (0.01, 0.15), "Lacrimal L": (0.2, 1.2), "Lacrimal R": (0.2, 1.2), "Spinal cord": (8, 30),
        "Spinal canal": (30, 110),
    }
    names = {s.name for s in full.organs}
    assert names == set(expected)
    for name, (lo, hi) in expected.items():
        assert lo <= _ml(full, full.mask(name)) <= hi, name


def test_left_organs_on_patient_left(full):
    for base in ("Eye", "Lens", "Optic nerve", "Parotid", "Submandibular", "Cochlea", "Lacrimal"):
        xs = {}
        for tag in ("L", "R"):
            idx = np.argwhere(full.mask(f"{base} {tag}")).mean(0)
            xs[tag] = full.ct.index_to_physical(idx[::-1])[0]
        assert xs["L"] > 10 and xs["R"] < -10, base  # LPS: +x is the patient's left


def test_tissue_hu(full):
    ct = full.ct.array.astype(float)
    for name in ("Brain", "Brainstem", "Parotid L", "Parotid R", "Submandibular L", "Submandibular R", "Eye L",
                 "Eye R"):
        inner = full.mask(name) & ~hn.near(full.mask(name), full.ct.spacing, 3.0, inside=True)
        assert inner.sum() > 50, name
        assert abs(ct[inner].mean() - full.hu_targets[name]) < 8, name
    assert ct[full.mask("Mandible")].mean() > 500
    assert ct[full.bone.array == hn.SKULL].mean() > 600
    inside_air = full.air.array.astype(bool) & ~hn.near(full.air.array.astype(bool), full.ct.spacing, 2.0,
                                                        inside=True)
    assert ct[inside_air].mean() < -800
    assert ct[full.body.array == 0].mean() < -950


def test_submandibular_glands_lie_in_fat(full):
    """Most of the 2 mm around each gland reads as fat (without the plane: 12-20 % below -30 HU, the parotid 17 %)."""
    ct = full.ct.array
    soft = (full.body.array > 0) & (full.bone.array == 0)
    for tag in ("L", "R"):
        shell = hn.near(full.mask(f"Submandibular {tag}"), full.ct.spacing, 2.0) & soft
        assert (ct[shell] < -30).mean() > 0.4, tag


def test_ctv_contains_gtv_stays_in_tissue(full):
    gtv, ctv = full.gtv.array.astype(bool), full.ctv.array.astype(bool)
    assert gtv.sum() > 0 and (ctv & gtv).sum() == gtv.sum()
    assert ctv.sum() > 1.5 * gtv.sum()
    assert not (ctv & ~gtv & (full.bone.array > 0)).any()  # oropharynx: no bone invaded
    assert not (ctv & full.air.array.astype(bool)).any()
    assert not (ctv & (full.body.array == 0)).any()
    # Nowhere farther than the margin (8 mm) from the GTV.
    far = ~(hn.near(gtv, full.ct.spacing, 8.0 + 1e-3) | gtv)
    assert not (ctv & far).any()


def test_geodesic_margin_does_not_cross_a_barrier():
    spacing = (1.0, 1.0, 2.0)
    shape = (20, 40, 60)
    gtv = np.zeros(shape, bool)
    gtv[8:12, 18:22, 20:24] = True
    bone = np.zeros(shape, np.int16)
    bone[:, 5:35, 26:28] = 5  # a plate 2 mm thick, 2 mm from the tumour
    body = np.ones(shape, bool)
    air = np.zeros(shape, bool)
    allowed = ctv_allowed_region(body, air, bone, gtv)
    ctv = expand_ctv(gtv, 10.0, allowed, spacing)
    assert not ctv[:, 18:22, 28:34].any()  # straight across the plate is within 10 mm but blocked
    assert ctv[10, 20, 13]  # 7 mm the other way, free
    assert not ctv[10, 20, 9]  # 11 mm: beyond the margin
    assert ctv[10, 20:22, 24:26].all() and not (ctv & (bone > 0)).any()
    # Invaded: the tumour reaches the plate, the CTV may enter it.
    gtv2 = gtv.copy()
    gtv2[8:12, 18:22, 24:27] = True
    ctv2 = expand_ctv(gtv2, 10.0, ctv_allowed_region(body, air, bone, gtv2), spacing)
    assert (ctv2 & (bone > 0)).any()


def test_mandible_site_invades_bone():
    ph = generate_headneck(5, (2.0, 2.0, 2.5), "small", tumour_site="mandible")
    ctv = ph.ctv.array.astype(bool)
    assert (ctv & ph.mask("Mandible")).any()
    assert not (ctv & (ph.bone.array == hn.SKULL)).any()


def test_label_noise_fraction_and_direction():
    zz, yy, xx = np.mgrid[:32, :32, :32]
    sphere = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 8**2
    masks = [sphere] * 20
    noisy, record = noisy_labels(masks, 0.25, "high", seed=3)
    changed = [r for r in record if r.op != "none"]
    assert len(changed) == 5
    for r in record:
        out = noisy[r.index]
        if r.op == "none":
            assert np.array_equal(out, sphere)
        elif r.op == "dilate":
            assert out.sum() > sphere.sum() and (out | sphere).sum() == out.sum()
        else:
            assert out.sum() < sphere.sum() and (out & sphere).sum() == out.sum()
        assert r.op == "none" or NOISE_LEVELS["high"][0] <= r.requested <= NOISE_LEVELS["high"][1]
    assert noisy_labels(masks, 0.25, "high", seed=3)[1] == record


def test_perturb_moves_boundary_by_n():
    zz, yy, xx = np.mgrid[:40, :40, :40]
    r = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    sphere = r <= 10

    def radius(mask):  # radius of the sphere of the same volume
        return (3 * mask.sum() / (4 * np.pi)) ** (1 / 3)

    for n in (1, 3, 5):
        grown, shrunk = perturb_mask(sphere, n, "dilate"), perturb_mask(sphere, n, "erode")
        assert abs(radius(grown) - radius(sphere) - n) < 0.5
        assert abs(radius(sphere) - radius(shrunk) - n) < 0.5
    thick = perturb_mask(sphere, 3, "dilate", in_plane=True)
    assert np.array_equal(thick.any(axis=(1, 2)), sphere.any(axis=(1, 2)))  # no growth across slices
    small = r <= 2
    out, rec = noisy_labels([small], 1.0, (8, 8), seed=0)
    if rec[0].op == "erode":
        assert out[0].any() and rec[0].n < 8
    with pytest.raises(InputError):
        noisy_labels([small], 1.5, 2, seed=0)
