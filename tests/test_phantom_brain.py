"""Brain MRI stroke phantoms: determinism, tissue contrasts per sequence, lesion territory and stage signals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clinseg.errors import InputError
from clinseg.phantoms.brain import LABELS, PARENCHYMA, generate_brain

SP = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def mca():
    return generate_brain(11, SP, "small", lesion="mca", stage="acute")


def _mean(ph, contrast, label):
    return float(np.median(ph.images[contrast].array[ph.labels.array == LABELS[label]]))


def _lps_x(ph):
    """LPS x (mm, + = patient's left) of every voxel column."""
    v = ph.labels
    return v.origin[0] + v.spacing[0] * np.arange(v.shape[2])


def test_deterministic_per_seed():
    a = generate_brain(3, (3, 3, 3), "small", contrasts=("T1", "ADC"), lesion="emboli")
    b = generate_brain(3, (3, 3, 3), "small", contrasts=("T1", "ADC"), lesion="emboli")
    c = generate_brain(4, (3, 3, 3), "small", contrasts=("T1", "ADC"), lesion="emboli")
    assert set(a.images) == {"T1", "ADC"}
    assert np.array_equal(a.images["T1"].array, b.images["T1"].array)
    assert np.array_equal(a.lesion.array, b.lesion.array) and a.lesion_volume_ml == b.lesion_volume_ml
    assert not np.array_equal(a.lesion.array, c.lesion.array)


def test_one_grid_and_tissue_labels(mca):
    for image in mca.images.values():
        assert image.same_grid(mca.labels) and image.array.dtype == np.float32
    present = set(np.unique(mca.labels.array))
    for name in ("csf", "ventricles", "cortical_gm", "wm", "putamen", "thalamus", "skull", "marrow", "scalp"):
        assert LABELS[name] in present, name
    wm = np.count_nonzero(mca.labels.array == LABELS["wm"])
    gm = np.count_nonzero(mca.labels.array == LABELS["cortical_gm"])
    assert 0.3 < gm / wm < 1.5


def test_contrast_order_per_sequence(mca):
    t1 = [_mean(mca, "T1", t) for t in ("wm", "cortical_gm", "csf")]
    assert t1[0] > 1.2 * t1[1] > 1.2 * t1[2]
    t2 = [_mean(mca, "T2", t) for t in ("ventricles", "cortical_gm", "wm")]
    assert t2[0] > 1.3 * t2[1] and t2[1] > 1.1 * t2[2]
    flair = [_mean(mca, "FLAIR", t) for t in ("cortical_gm", "wm", "ventricles")]
    assert flair[0] > 1.1 * flair[1] and flair[1] > 4 * flair[2]  # CSF dark on FLAIR
    assert _mean(mca, "ADC", "ventricles") == pytest.approx(3.0, abs=0.35)  # 1e-3 mm^2/s
    assert 0.6 < _mean(mca, "ADC", "wm") < 0.95
    assert _mean(mca, "DWI", "ventricles") < 0.3 * _mean(mca, "DWI", "wm")


def test_mca_lesion_in_territory(mca):
    lesion = mca.lesion.array > 0
    assert mca.side in ("left", "right")
    labels = mca.labels.array[lesion]
    allowed = [LABELS[t] for t in PARENCHYMA if not t.startswith("cerebellum") and t != "brainstem"]
    assert np.isin(labels, allowed).mean() > 0.97  # brain tissue only, no CSF or cerebellum
    x = np.broadcast_to(_lps_x(mca), lesion.shape)[lesion]
    sign = 1 if mca.side == "left" else -1  # LPS: +x is the patient's left
    assert np.all(sign * x > 0) and sign * x.mean() > 25  # one hemisphere, lateral
    assert mca.lesion_volume_ml == pytest.approx(lesion.sum() * 8 / 1000)
    assert 5 < mca.lesion_volume_ml < 250


def test_acute_signal_directions(mca):
    lesion = mca.lesion.array > 0
    core = ndimage.binary_erosion(lesion)
    wm_dwi = _mean(mca, "DWI", "wm")
    assert np.median(mca.images["DWI"].array[core]) > 1.6 * wm_dwi
    assert 0.3 < np.median(mca.images["ADC"].array[core]) < 0.6
    mirror = core[:, :, ::-1]  # the same tissue in the other hemisphere
    flair = mca.images["FLAIR"].array
    assert np.median(flair[core]) > 1.1 * np.median(flair[mirror & ~lesion])


def test_chronic_signal_directions():
    acute = generate_brain(21, SP, "small", lesion="mca", stage="acute")
    chronic = generate_brain(21, SP, "small", lesion="mca", stage="chronic")
    lesion, same = chronic.lesion.array > 0, acute.lesion.array > 0
    assert 2 * np.count_nonzero(lesion & same) / (lesion.sum() + same.sum()) > 0.9  # ex-vacuo takes a little
    dist = ndimage.distance_transform_edt(lesion, sampling=2.0)
    core, rim = dist > 4, (dist > 0) & (dist <= 2)
    assert np.median(chronic.images["ADC"].array[core]) > 1.8
    assert np.median(chronic.images["T1"].array[core]) < 0.5 * np.median(acute.images["T1"].array[core])
    assert np.median(chronic.images["DWI"].array[core]) < 0.5 * np.median(acute.images["DWI"].array[core])
    flair = chronic.images["FLAIR"].array
    assert np.median(flair[rim]) > 1.5 * np.median(flair[core])  # gliotic rim around a dark cavity
    # Ex-vacuo: the ipsilateral lateral ventricle is larger than the contralateral one.
    vent = chronic.labels.array == LABELS["ventricles"]
    x = np.broadcast_to(_lps_x(chronic), vent.shape)
    sign = 1 if chronic.side == "left" else -1
    assert np.count_nonzero(vent & (sign * x > 0)) > 1.15 * np.count_nonzero(vent & (sign * x < 0))


def test_lacunar_and_emboli_shapes():
    lac = generate_brain(5, SP, "small", lesion="lacunar")
    comps, n = ndimage.label(lac.lesion.array)
    assert 1 <= n <= 2
    x = np.broadcast_to(_lps_x(lac), comps.shape)
    for c in range(1, n + 1):
        voxels = comps == c
        diameter = (6 * voxels.sum() * 8 / np.pi) ** (1 / 3)
        assert 2.5 < diameter < 16
        assert np.abs(x[voxels]).mean() < 35  # deep, not cortical
    emb = generate_brain(6, SP, "small", lesion="emboli")
    assert ndimage.label(emb.lesion.array)[1] >= 2
    assert np.isin(emb.labels.array[emb.lesion.array > 0], [LABELS[t] for t in PARENCHYMA]).mean() > 0.97


def test_anisotropic_slices_keep_volume():
    iso = generate_brain(8, (2, 2, 2), "small", contrasts=("DWI",), lesion="mca")
    thick = generate_brain(8, (2, 2, 4), "small", contrasts=("DWI",), lesion="mca")
    assert thick.labels.spacing == (2.0, 2.0, 4.0) and thick.labels.shape[0] * 2 == iso.labels.shape[0]
    assert thick.lesion_volume_ml == pytest.approx(iso.lesion_volume_ml, rel=0.12)
    # Slice partial volume: without noise, a 4 mm slice is (up to blur and bias) the mean of two 2 mm slices.
    iso = generate_brain(8, (2, 2, 2), "small", contrasts=("T2",), lesion=None, noise=False).images["T2"].array
    thick = generate_brain(8, (2, 2, 4), "small", contrasts=("T2",), lesion=None, noise=False).images["T2"].array
    pairs = iso.reshape(thick.shape[0], 2, *thick.shape[1:]).mean(axis=1)
    assert np.corrcoef(pairs.ravel(), thick.ravel())[0, 1] > 0.98
    assert np.corrcoef(iso[::2].ravel(), thick.ravel())[0, 1] < np.corrcoef(pairs.ravel(), thick.ravel())[0, 1]


def test_no_lesion_and_bad_arguments():
    ph = generate_brain(1, (4, 4, 4), "small", contrasts=("T2",), lesion=None)
    assert ph.lesion_volume_ml == 0 and not ph.lesion.array.any()
    with pytest.raises(InputError, match="preset"):
        generate_brain(1, preset="huge")
    with pytest.raises(InputError, match="contrast"):
        generate_brain(1, contrasts=("PD",))
    with pytest.raises(InputError, match="lesion"):
        generate_brain(1, lesion="aca")
    with pytest.raises(InputError, match="spacing"):
        generate_brain(1, spacing=(0.1, 1, 1))
