"""``clinseg --version``, ``info`` and ``models`` through ``clinseg.cli.main``, and the progress reporter."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import clinseg
from clinseg.cli import main
from clinseg.cli.info import guess_modality, orientation_code
from clinseg.cli.reporting import Reporter
from clinseg.progress import Progress

ATM_ID = "atm22-baseline"


def _write_nrrd(path: Path, array: np.ndarray, direction: np.ndarray) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.5))
    image.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def ct_nrrd(tmp_path) -> Path:
    """12 slices of 16 x 20: air (-1000) around a soft-tissue block (40), RAS-oriented."""
    array = np.full((12, 16, 20), -1000, dtype=np.int16)
    array[2:10, 4:12, 5:15] = 40
    return _write_nrrd(tmp_path / "ct.nrrd", array, np.diag([-1.0, -1.0, 1.0]))


def test_version_subprocess():
    done = subprocess.run([sys.executable, "-m", "clinseg", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"clinseg {clinseg.__version__}"


def test_info_json_reports_geometry_and_intensities(ct_nrrd, capsys):
    assert main(["info", str(ct_nrrd), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == [20, 16, 12]
    assert info["spacing"] == pytest.approx([0.7, 0.8, 2.5])
    assert info["origin"] == pytest.approx([10.0, -20.0, 30.5])
    assert info["orientation"] == "RAS" and info["oblique"] is False
    assert info["extent_mm"] == pytest.approx([14.0, 12.8, 30.0])
    assert info["dtype"] == "int16"
    n_tissue = 8 * 8 * 10
    expected_mean = (n_tissue * 40 + (12 * 16 * 20 - n_tissue) * -1000) / (12 * 16 * 20)
    assert info["intensity"]["min"] == -1000 and info["intensity"]["max"] == 40
    assert info["intensity"]["mean"] == pytest.approx(expected_mean, abs=1e-3)
    assert info["modality_guess"] == "CT"


def test_info_human_output(tmp_path, capsys):
    array = np.random.default_rng(0).uniform(0, 800, (10, 12, 14)).astype(np.float32)
    path = _write_nrrd(tmp_path / "mr.nrrd", array, np.eye(3))
    assert main(["info", str(path)]) == 0
    # "key<padding>  value": keys are padded to one width, then two spaces
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["orientation"] == "LPS"
    assert lines["size (i x j x k)"] == "14 x 12 x 10"
    assert lines["spacing (mm)"] == "0.7 x 0.8 x 2.5"
    assert lines["modality (guess)"].startswith("MR")


def test_info_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.nrrd")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clinseg: error: missing.nrrd:") and "\n" not in err


def test_orientation_and_modality_helpers():
    assert orientation_code(np.eye(3)) == ("LPS", False)
    assert orientation_code(np.diag([-1.0, 1.0, -1.0])) == ("RPI", False)
    # axial slices stored sagittally: i along -y (anterior), j along -z (inferior), k along +x (left)
    assert orientation_code(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)) == ("AIL", False)
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    assert orientation_code(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])) == ("LPS", True)
    assert guess_modality(np.linspace(0, 1, 1000))[0] == "unknown"
    assert guess_modality(np.linspace(-1024, 1500, 1000))[0] == "CT"


def test_models_list_show_and_unknown(clinseg_home, capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}  # sorted by id
    shipped, row = rows["airway-unet-phantom"], rows[ATM_ID]
    assert (row["id"], row["task"], row["installed"], row["parameter_count"]) == (ATM_ID, "airway", False, 1022106)
    assert (shipped["id"], shipped["installed"]) == ("airway-unet-phantom", True)  # weights ship in the package
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "TASK", "VERSION"]
    assert [ATM_ID, "airway", "1.0.0", "no"] in [line.split()[:4] for line in table[2:]]
    assert main(["models", "show", ATM_ID, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["card"]["licence"] == "MIT" and shown["installed_dir"] is None
    assert main(["models", "show", ATM_ID]) == 0
    assert "89187006" in capsys.readouterr().out
    assert main(["models", "show", "nope"]) == 2
    known = "known: airway-unet-phantom, atm22-baseline, "  # then the other tasks' shipped models
    assert capsys.readouterr().err.strip().startswith(f"clinseg: error: models: unknown model 'nope'; {known}")
    assert main(["models", "verify"]) == 0  # only the shipped model is installed, and it is sound
    assert "model: airway-unet-phantom\nok: true" in capsys.readouterr().out


def _weight(shared) -> Path:
    path = shared / "models" / "atm22_baseline" / "weight.pth"
    if not path.is_file():
        pytest.skip("ATM'22 baseline weight.pth is absent")
    return path


def test_models_import_verify_and_tamper(clinseg_home, shared, capsys):
    assert main(["models", "import", str(_weight(shared))]) == 0
    out = capsys.readouterr().out
    assert "model: atm22-baseline" in out and "converted_from_sha256" in out
    assert main(["models", "verify", "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"event": "result", "model": ATM_ID, "ok": True, "problems": []} in events
    assert all(e["ok"] for e in events) and "airway-unet-phantom" in {e["model"] for e in events}  # and the shipped
    weights = clinseg_home / "models" / ATM_ID / "weight.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert main(["models", "verify", ATM_ID, "--progress", "jsonl"]) == 1
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not event["ok"] and "SHA-256 mismatch" in event["problems"][0]


def test_models_install_from_file_url_streams_jsonl(clinseg_home, shared, capsys):
    url = _weight(shared).as_uri()
    assert main(["models", "install", ATM_ID, "--url", url, "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) == 4  # 1 MiB chunks of a 4,115,917-byte file
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress) and progress[-1]["fraction"] == 1.0
    assert events[-1]["event"] == "result" and events[-1]["model"] == ATM_ID
    assert main(["models", "install", ATM_ID, "--url", (clinseg_home / "nothing.pth").as_uri(),
                 "--progress", "jsonl"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["event"] == "error" and "failed" in captured.err


def test_reporter_modes():
    event = Progress("infer", 3, 4, 1.5, 0.5)
    out = io.StringIO()
    reporter = Reporter("jsonl", out)
    reporter.progress(event)
    reporter.log("hello")
    reporter.result({"n": 1})
    reporter.error("bad")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["progress", "log", "result", "error"]
    assert lines[0]["fraction"] == 0.75 and lines[0]["eta_s"] == 0.5

    out, err = io.StringIO(), io.StringIO()
    human = Reporter("human", out, err, min_interval_s=0.0)
    human.progress(event)
    human.progress(Progress("infer", 4, 4, 2.0, 0.0))
    human.result({"n": 1})
    bars = err.getvalue()
    assert bars.startswith("\rinfer") and "75.0%" in bars and "ETA 00:00" in bars and bars.endswith("done\n")
    assert out.getvalue() == "n: 1\n"

    out, err = io.StringIO(), io.StringIO()
    Reporter("none", out, err).progress(event)
    assert out.getvalue() == err.getvalue() == ""
    with pytest.raises(ValueError):
        Reporter("xml")
