"""A task option that is a node (e.g. a GTV the user drew) reaches the child as a file in the job's work folder."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.jobs import TaskJob  # noqa: E402
from ClinicalSegLib.mrml import segmentation_node_from_labelmap, volume_node_from_volume  # noqa: E402
from ClinicalSegLib.task import TaskSpec  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.io import read_volume  # noqa: E402
from clinseg.terminology import NODULE  # noqa: E402
from clinseg.volume import Volume  # noqa: E402


def gtv_arguments(options: dict) -> list[str]:
    if set(options) - {"gtv"}:
        raise InputError("options", "only gtv")
    return ["--gtv", str(options["gtv"])] if options.get("gtv") is not None else []


TASK = TaskSpec("oar", "OAR", engines=("auto",), arguments=gtv_arguments)


def test_a_segmentation_option_is_written_on_the_inputs_grid(scene, tmp_path):
    ct = Volume(np.zeros((10, 12, 14), np.int16), (1.0, 1.0, 2.0), (5.0, 0.0, 0.0), np.eye(3), "ct")
    ct_node = volume_node_from_volume(scene, ct)
    drawn = np.zeros((10, 12, 14), np.uint8)
    drawn[3:6, 4:8, 5:9] = 1
    gtv = segmentation_node_from_labelmap(scene, ct.with_array(drawn), [NODULE], reference_volume_node=ct_node)
    job = TaskJob(scene, TASK, [ct_node], options={"gtv": gtv}, work_dir=tmp_path)
    args = job.prepare()
    path = args[args.index("--gtv") + 1]
    assert path == str(tmp_path / "gtv.nrrd")
    written = read_volume(path)
    assert written.shape == ct.shape and written.spacing == pytest.approx(ct.spacing)
    np.testing.assert_array_equal(written.array > 0, drawn > 0)
    with pytest.raises(InputError, match="only gtv"):
        TaskJob(scene, TASK, [ct_node], options={"margin": 5})
