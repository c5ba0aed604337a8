"""``clinseg batch``: case discovery, failures reported per case, resume by manifest, half-written cases redone,
and a Dask worker killed mid-case (the case finishes elsewhere, nothing lost or duplicated).

The airway cases are tiny phantoms (64x64x48 at 3.2 mm) written as copies of one CT; the 20-case run lives in
``bench/batch.py``.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers_airway import load_bench

from clinseg import __version__
from clinseg.batch import (
    BatchPlan,
    Case,
    CaseInput,
    dask_runner,
    discover_cases,
    finished_manifest,
    run_batch,
    sequential_runner,
)
from clinseg.batch.work import one_line
from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.io import read_segmentation, write_volume
from clinseg.io.dicom_write import write_dicom_series
from clinseg.phantoms import generate_chest
from clinseg.result import Result
from clinseg.tasks import catalog
from clinseg.tasks.airway import AirwayOptions, run_airway
from clinseg.volume import Volume

TINY = {"preset": "small", "spacing": (3.2, 3.2, 3.2), "shape": (64, 64, 48), "with_vessels": False,
        "n_nodules": 0, "n_distractors": 0}
GOOD = 4
BAD = {"garbage": "cannot be read as an image", "truncated": "truncated or corrupt", "mri": "does not look like a CT"}


@pytest.fixture(scope="module")
def phantom():
    return generate_chest(5, **TINY)


@pytest.fixture(scope="module")
def source(phantom, tmp_path_factory) -> Path:
    """``GOOD`` copies of one chest CT, a garbage file, a truncated NIfTI and an MR-like volume (wrong modality)."""
    folder = tmp_path_factory.mktemp("cases")
    first = write_volume(phantom.ct, folder / "case00.nii.gz")
    for i in range(1, GOOD):
        shutil.copy(first, folder / f"case{i:02d}.nii.gz")
    (folder / "garbage.nii.gz").write_bytes(b"not an image at all" * 50)
    data = first.read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    mri = phantom.ct.with_array(((phantom.ct.array.astype(np.float32) + 1024) / 4).astype(np.int16))
    write_volume(mri, folder / "mri.nii.gz")
    (folder / "notes.txt").write_text("not a case")
    return folder


def _report(out: Path) -> dict[str, dict]:
    with open(out / "report.csv", newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def _batch(source: Path, out: Path, *extra: str) -> int:
    return main(["batch", str(source), "-o", str(out), "--scheduler", "none", "--set", "airway.engine=classical",
                 "--progress", "none", *extra])


# --- catalog and discovery ----------------------------------------------------------------------------------------
def test_catalog_entries_and_option_checks():
    entry = catalog.get_task("airway")
    assert entry.inputs == ("ct",)
    assert entry.options({"engine": "classical"})["engine"] == "classical"
    assert entry.options()["target_lps"] is None
    with pytest.raises(InputError, match="unknown option"):
        entry.options({"engnie": "classical"})
    with pytest.raises(InputError, match="unknown task 'lungs'"):
        catalog.get_task("lungs")
    with pytest.raises(InputError, match="named twice"):
        catalog.parse_tasks("airway,airway")


def test_catalog_options_are_the_pipelines_less_per_case_inputs():
    """Batch options are the pipeline's option fields; a per-case input (the OAR's drawn GTV) is not one, and an
    unknown option is refused rather than hashed into the manifest."""
    assert catalog.task_names() == ["airway", "nodule", "oar", "stroke"]
    oar = catalog.get_task("oar")
    assert "gtv" not in oar.defaults and oar.optional_inputs == ("gtv",)
    assert oar.options({"margin_mm": 8.0})["margin_mm"] == 8.0
    assert catalog.get_task("nodule").defaults["min_score"] == 0.5
    with pytest.raises(InputError, match=r"unknown option\(s\) margin"):
        catalog.get_task("stroke").options({"margin": 3})


def test_optional_inputs_from_csv(tmp_path):
    (tmp_path / "cases.csv").write_text("case,dwi,adc,t1\ns1,d.nii,a.nii,\ns2,,,t.nii\ns3,,,\n")
    with pytest.raises(InputError, match="line 4.*names no input"):
        discover_cases(tmp_path / "cases.csv", [], optional_names=("dwi", "adc", "flair", "t1"))
    (tmp_path / "cases.csv").write_text("case,dwi,adc,t1\ns1,d.nii,a.nii,\ns2,,,t.nii\n")
    cases = discover_cases(tmp_path / "cases.csv", [], optional_names=("dwi", "adc", "flair", "t1"))
    assert [sorted(c.inputs) for c in cases] == [["adc", "dwi"], ["t1"]]


def test_folder_and_csv_discovery(tmp_path):
    for name in ("a.nii", "a.nii.gz", "b c.nrrd", ".hidden.nii", "readme.md"):
        (tmp_path / name).write_bytes(b"x")
    cases = discover_cases(tmp_path, ["ct"])
    assert [c.case_id for c in cases] == ["a", "a-2", "b_c"]
    assert Path(cases[2].inputs["ct"].path).name == "b c.nrrd"
    table = tmp_path / "list.csv"
    table.write_text("case,path\np1,a.nii\n,b c.nrrd\n")
    listed = discover_cases(table, ["ct"])
    assert [c.case_id for c in listed] == ["p1", "b_c"]
    assert listed[0].inputs["ct"].path == str(tmp_path / "a.nii")  # relative to the CSV's folder
    two = tmp_path / "two.csv"
    two.write_text("case,dwi,adc\ns1,a.nii,a.nii.gz\n")
    assert set(discover_cases(two, ["dwi", "adc"])[0].inputs) == {"dwi", "adc"}
    with pytest.raises(InputError, match="needs column"):
        discover_cases(two, ["ct", "flair"])
    with pytest.raises(InputError, match="several volumes per case"):
        discover_cases(tmp_path, ["dwi", "adc"], layout="folder")
    (tmp_path / "dup.csv").write_text("case,path\nx,a.nii\nx,a.nii.gz\n")
    with pytest.raises(InputError, match="same case id"):
        discover_cases(tmp_path / "dup.csv", ["ct"])


def _threshold_entry() -> catalog.TaskEntry:
    """A cheap stand-in task: voxels above ``level``; a volume named ``oom*`` runs out of memory."""

    def run(volumes, options, progress, cancel):
        ct = volumes["ct"]
        if (ct.name or "").startswith("oom"):
            raise MemoryError("could not allocate 40 GiB")
        return Result("threshold", labelmap=ct.with_array((ct.array > options["level"]).astype(np.uint8)))

    return catalog.TaskEntry("threshold", ("ct",), {"level": 0}, run)


def test_dicom_tree_one_case_per_series_and_memory_error(tmp_path, monkeypatch):
    monkeypatch.setitem(catalog._BUILDERS, "threshold", _threshold_entry)
    rng = np.random.default_rng(0)
    volume = Volume(rng.integers(-1000, 400, (6, 8, 9)).astype(np.int16), spacing=(1.0, 1.0, 2.0))
    write_dicom_series(volume, tmp_path / "tree" / "p1" / "ct", description="chest")
    write_dicom_series(volume, tmp_path / "tree" / "p2" / "ct", description="oom")
    cases = discover_cases(tmp_path / "tree", ["ct"])
    assert [c.case_id for c in cases] == ["p1_ct", "p2_ct"]
    assert len(cases[0].inputs["ct"].files) == 6 and cases[0].inputs["ct"].series_uid
    plan = BatchPlan(str(tmp_path / "out"), {"threshold": {"level": 0}}, __version__)
    summary = run_batch(cases, plan, sequential_runner())
    ok, oom = summary.outcomes
    assert ok.status == "done" and oom.status == "failed"
    assert oom.reason == "threshold: out of memory (could not allocate 40 GiB)"
    mask, _ = read_segmentation(tmp_path / "out" / "p1_ct" / "threshold" / "threshold.seg.nrrd")
    assert mask.array.sum() == (volume.array > 0).sum()


def test_one_line_reasons():
    assert one_line(InputError("a.nii", "is 2-D")) == "a.nii: is 2-D"
    assert one_line(ValueError("bad\n  value")) == "ValueError: bad value"
    assert len(one_line(RuntimeError("x" * 1000))) == 300


# --- the airway batch: failures, resume, half-written cases -------------------------------------------------------
@pytest.fixture(scope="module")
def first_run(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    return out, _batch(source, out)


def test_failures_are_reported_and_the_rest_finish(first_run, phantom):
    out, code = first_run
    assert code == 1  # some cases failed
    report = _report(out)
    assert len(report) == GOOD + len(BAD)
    assert sorted(c for c, r in report.items() if r["status"] == "done") == [f"case{i:02d}" for i in range(GOOD)]
    for case, words in BAD.items():
        assert report[case]["status"] == "failed"
        assert words in report[case]["reason"] and "\n" not in report[case]["reason"]
        assert json.loads((out / case / "manifest.json").read_text())["status"] == "failed"
    # The batch output is exactly the pipeline's own result on the same CT.
    direct = run_airway(phantom.ct, AirwayOptions(engine="classical"))
    for i in range(GOOD):
        mask, segments = read_segmentation(out / f"case{i:02d}" / "airway" / "airway.seg.nrrd")
        assert [s.name for s in segments] == ["Airway"]
        assert np.array_equal(mask.array > 0, direct.labelmap.array > 0)
    html = (out / "report.html").read_text()
    assert html.count("<img") == GOOD and "cannot be read as an image" in html
    case = out / "case00"
    assert {"log.txt", "montage.png", "manifest.json"} <= {p.name for p in case.iterdir()}
    assert (case / "montage.png").stat().st_size < 200_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_second_run_skips_finished_cases(first_run, source):
    out, _ = first_run
    stamps = {i: (out / f"case{i:02d}" / "manifest.json").stat().st_mtime_ns for i in range(GOOD)}
    assert _batch(source, out) == 1
    report = _report(out)
    assert [report[f"case{i:02d}"]["this_run"] for i in range(GOOD)] == ["skipped"] * GOOD
    assert all(report[c]["this_run"] == "ran" for c in BAD)  # failed cases are tried again
    assert stamps == {i: (out / f"case{i:02d}" / "manifest.json").stat().st_mtime_ns for i in range(GOOD)}


def test_half_written_case_is_redone(first_run, source):
    out, _ = first_run
    (out / "case01" / "airway" / "branches.csv").write_text("cut short")  # size no longer the manifest's
    (out / "case02" / "manifest.json").unlink()
    (out / ".case03.0123456789ab.tmp").mkdir()  # what a killed worker leaves behind
    assert _batch(source, out) == 1
    report = _report(out)
    assert (report["case01"]["this_run"], report["case02"]["this_run"]) == ("ran", "ran")
    assert (report["case00"]["this_run"], report["case03"]["this_run"]) == ("skipped", "skipped")
    assert (out / "case01" / "airway" / "branches.csv").read_text() != "cut short"
    assert not (out / ".case03.0123456789ab.tmp").exists()


def test_changed_input_or_options_rerun(first_run, source):
    out, _ = first_run
    case = Case("case00", {"ct": CaseInput(str(source / "case00.nii.gz"))})
    options = catalog.get_task("airway").options({"engine": "classical"})
    assert finished_manifest(case, out, {"airway": options}, __version__) is not None
    assert finished_manifest(case, out, {"airway": {**options, "scope_diameter_mm": 5.0}}, __version__) is None
    assert finished_manifest(case, out, {"airway": options}, "9.9.9") is None
    other = Case("case00", {"ct": CaseInput(str(source / "mri.nii.gz"))})  # same id, other bytes
    assert finished_manifest(other, out, {"airway": options}, __version__) is None


def test_without_dask_says_how_to_install(source, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    code = main(["batch", str(source), "-o", str(tmp_path / "out"), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "pip install 'clinseg[batch]'" in err and "--scheduler none" in err


# --- Dask: a worker killed mid-case -------------------------------------------------------------------------------
def test_killed_worker_case_is_retried_elsewhere(source, tmp_path):
    pytest.importorskip("distributed")
    cases = discover_cases(source, ["ct"])
    out = tmp_path / "out"
    out.mkdir()
    plan = BatchPlan(str(out), {"airway": catalog.get_task("airway").options({"engine": "classical"})}, __version__)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=load_bench("batch").kill_one_worker, args=(out, stop, killed), daemon=True)
    watcher.start()
    try:
        with dask_runner(workers=2) as runner:
            summary = run_batch(cases, plan, runner)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed"
    case, pid = killed[0]
    assert summary.done == GOOD and len(summary.failed) == len(BAD)
    assert sorted(o.case_id for o in summary.outcomes) == sorted(c.case_id for c in cases)  # each case once
    manifest = json.loads((out / case / "manifest.json").read_text())
    assert manifest["status"] == "done" and not manifest["worker"].endswith(f":{pid}")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the killed worker's half folder is gone
    assert len(_report(out)) == len(cases)


def test_slicer_batch_script_arguments_and_cases(tmp_path):
    """The Slicer script's plain parts (it imports slicer only inside main)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "slicer_batch.py"
    spec = importlib.util.spec_from_file_location("slicer_batch", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse_args(["--module", "AirwaySeg", "--input", str(tmp_path), "--out", str(tmp_path / "o")])
    assert (args.module, args.engine, args.dicom_database) == ("AirwaySeg", "auto", None)
    with pytest.raises(SystemExit):
        script.parse_args(["--input", "a", "--dicom-folder", "b", "--out", "o"])  # one source only
    for name in ("p 1.nii.gz", "p2.nrrd", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [n for n, _ in script.image_cases(tmp_path)] == ["p_1", "p2"]


def test_cancel_stops_before_the_next_case_and_leaves_no_half_folder(tmp_path, monkeypatch):
    from clinseg.errors import Cancelled
    from clinseg.progress import CancelToken

    monkeypatch.setitem(catalog._BUILDERS, "threshold", _threshold_entry)
    volume = Volume(np.zeros((4, 5, 6), np.int16))
    for name in ("a", "b"):
        write_volume(volume, tmp_path / "in" / f"{name}.nii.gz")
    token = CancelToken()
    plan = BatchPlan(str(tmp_path / "out"), {"threshold": {"level": 0}}, __version__)

    def log(text: str) -> None:
        if text.startswith("a: done"):
            token.cancel()  # the user cancels while case a finishes

    with pytest.raises(Cancelled):
        run_batch(discover_cases(tmp_path / "in", ["ct"]), plan, sequential_runner(token), log=log)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]  # no b, no temporaries, no lock
