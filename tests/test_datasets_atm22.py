"""ATM'22 / nnU-Net v2 layout: write, read back identically, accept ATM'22's own label naming; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.datasets import read_atm22, write_atm22
from clinseg.errors import InputError
from clinseg.io import read_volume, write_volume
from clinseg.phantoms import generate_chest
from clinseg.volume import Volume


@pytest.fixture(scope="module")
def phantom():
    return generate_chest(5, preset="small", spacing=(2.8, 2.8, 2.8), shape=(80, 80, 64), n_nodules=1)


def test_phantom_round_trips_through_the_layout(tmp_path, phantom):
    written = write_atm22(tmp_path, [("case_001", phantom.ct, phantom.airway)])
    assert (tmp_path / "imagesTr" / "case_001_0000.nii.gz").is_file()
    assert (tmp_path / "labelsTr" / "case_001.nii.gz").is_file()
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and meta["labels"] == {"background": 0, "airway": 1}
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    cases = read_atm22(tmp_path)
    assert [c.id for c in cases] == ["case_001"] and cases == written
    ct, label = read_volume(cases[0].image_path), read_volume(cases[0].label_path)
    for got, want in ((ct, phantom.ct), (label, phantom.airway)):
        assert got.array.dtype == want.array.dtype
        assert np.array_equal(got.array, want.array)
        assert got.same_grid(want, tol=1e-5)


def test_reader_accepts_atm22_release_naming_and_test_images(tmp_path):
    vol = Volume(np.zeros((8, 8, 8), np.int16), (0.7, 0.7, 1.0))
    lab = vol.with_array(np.ones((8, 8, 8), np.uint8))
    write_volume(vol, tmp_path / "imagesTr" / "ATM_001_0000.nii.gz")
    write_volume(lab, tmp_path / "labelsTr" / "ATM_001_0000.nii.gz")  # the release names labels like images
    write_volume(vol, tmp_path / "imagesTs" / "ATM_201_0000.nii.gz")
    cases = read_atm22(tmp_path)
    assert [(c.id, c.split) for c in cases] == [("ATM_001", "Tr"), ("ATM_201", "Ts")]
    assert cases[0].label_path.name == "ATM_001_0000.nii.gz" and cases[1].label_path is None
    assert read_atm22(tmp_path, split="Ts")[0].id == "ATM_201"


def test_layout_errors(tmp_path, phantom):
    with pytest.raises(InputError, match="split"):
        write_atm22(tmp_path, [], split="Val")
    with pytest.raises(InputError, match="case id"):
        write_atm22(tmp_path, [("bad/id", phantom.ct, phantom.airway)])
    other = Volume(phantom.airway.array, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="grid"):
        write_atm22(tmp_path, [("c1", phantom.ct, other)])
    with pytest.raises(InputError, match="no images"):
        read_atm22(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_atm22(tmp_path / "nothing_here")


def test_cli_writes_plain_layout(tmp_path, capsys):
    out = tmp_path / "ph"
    rc = main(["phantom", "chest", "--seed", "2", "--preset", "small", "--spacing", "2.8,2.8,2.8", "--shape",
               "80,80,64", "--nodules", "1", "--out", str(out), "--progress", "none"])
    assert rc == 0
    for name in ("ct", "airway", "lumen", "lungs", "vessels", "nodules"):
        assert (out / f"{name}.nii.gz").is_file()
    branches = json.loads((out / "branches.json").read_text())["branches"]
    assert branches[0]["name"] == "Trachea" and branches[0]["parent"] == -1
    nodules = json.loads((out / "nodules.json").read_text())
    assert len(nodules["nodules"]) == 1 and nodules["info"]["seed"] == 2
    ct = read_volume(out / "ct.nii.gz")
    assert ct.array.dtype == np.int16 and ct.size_ijk == (80, 80, 64)
