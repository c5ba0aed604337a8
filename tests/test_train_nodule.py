"""``clinseg train nodule``: tiny end-to-end runs from phantom and LUNA16-layout folders, layout errors, LIDC
reader consensus, and the trained pack installed through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_cli import cli_result
from safetensors.torch import load_file

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.nets.nodule_fpr import NoduleFPR
from clinseg.registry import get_registry
from clinseg.registry.store import sha256_file
from clinseg.tasks.nodule.fpr import load_fpr
from clinseg.train.nodule_data import case_names, iter_cases
from clinseg.train.nodule_fpr import NoduleTrainConfig, case_samples, sample_sets

CHEST = ["--preset", "small", "--shape", "112,112,80", "--nodules", "4"]
TINY = ["--max-steps", "4", "--log-every", "2", "--batch", "8", "--threads", "1", "--progress", "jsonl"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    """Seeds 1 and 2 written twice: as plain phantom folders and into one LUNA16 folder."""
    root = tmp_path_factory.mktemp("nodule-data")
    for seed in (1, 2):
        assert main(["phantom", "chest", "--seed", str(seed), *CHEST, "--out", str(root / "plain" / f"p{seed}"),
                     "--progress", "none"]) == 0
        assert main(["phantom", "chest", "--seed", str(seed), *CHEST, "--layout", "luna16", "--subset", str(seed),
                     "--out", str(root / "luna"), "--progress", "none"]) == 0
    return {"plain": root / "plain", "luna16": root / "luna"}


def _check_run(out: Path, result: dict, model_id: str) -> None:
    assert result["steps"] == 4
    assert result["samples"]["train_on_nodule"] >= 1 and result["samples"]["val"] > 0
    assert 0.0 <= result["validation"]["auc"] <= 1.0
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and [row.split(",")[0] for row in log[1:]] == ["2", "4"]
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["id"] == model_id and card["files"][0]["sha256"] == sha256_file(out / "model.safetensors")
    assert card["parameter_count"] == sum(p.numel() for p in NoduleFPR().parameters())
    assert set(load_file(str(out / "model.safetensors"))) == set(NoduleFPR().state_dict())


def test_phantom_folders_end_to_end_and_pack_installs(phantoms, tmp_path, capsys, clinseg_home):
    out = tmp_path / "run"
    result = cli_result(capsys, "train", "nodule", "--layout", "phantom", "--data", str(phantoms["plain"]),
                     "--val-cases", "1", "--out", str(out), *TINY)
    _check_run(out, result, "nodule-fpr-phantom-trained")
    card = get_registry().import_file(result["pack"])
    assert card.id == "nodule-fpr-phantom-trained" and card.data["training_data"]["synthetic"] is True
    network = get_registry().load_network(card.id)
    assert sum(p.numel() for p in network.parameters()) == card.data["parameter_count"]
    # The installed reducer is what `clinseg nodule --engine model --model ID` scores with, at its card's prior.
    run = cli_result(capsys, "nodule", str(phantoms["plain"] / "p1" / "ct.nii.gz"), "-o", str(tmp_path / "seg"),
                  "--engine", "model", "--model", card.id, "--min-score", "0", "--no-preview", "--progress", "jsonl")
    assert run["metrics"]["engine"] == "model" and run["metrics"]["model"] == card.id
    assert run["metrics"]["candidates"] > 0
    assert load_fpr(card.id).prior_shift == card.data["figures"]["prior_shift"]


def test_luna16_folder_end_to_end(phantoms, tmp_path, capsys):
    out = tmp_path / "run"
    result = cli_result(capsys, "train", "nodule", "--layout", "luna16", "--data", str(phantoms["luna16"]),
                     "--val-cases", "1", "--model-id", "fpr-luna", "--out", str(out), *TINY)
    _check_run(out, result, "fpr-luna")
    # the same scans and nodules as the plain folders: the same candidates and labels
    plain = sample_sets(phantoms["plain"], NoduleTrainConfig(layout="phantom", val_cases=1), tmp_path / "c")[0]
    luna = sample_sets(phantoms["luna16"], NoduleTrainConfig(layout="luna16", val_cases=1), tmp_path / "c")[0]
    assert int(luna["label"][~luna["jittered"]].sum()) == result["samples"]["train_on_nodule"]
    assert np.array_equal(plain["label"], luna["label"])


@pytest.mark.parametrize("layout", ["luna16", "lidc", "phantom"])
def test_folder_in_another_layout_is_a_one_line_error(phantoms, layout, tmp_path):
    wrong = phantoms["plain"] if layout != "phantom" else phantoms["luna16"]
    with pytest.raises(InputError) as error:
        case_names(wrong, layout)
    assert "\n" not in str(error.value) and f"is not a{'n' if layout == 'lidc' else ''} " in str(error.value)
    assert main(["train", "nodule", "--layout", layout, "--data", str(wrong), "--out", str(tmp_path / "r"),
                 "--progress", "none"]) != 0


def test_seed_phantoms_need_no_folder_and_stay_below_the_benchmark(tmp_path):
    config = NoduleTrainConfig(seeds=[3], val_seeds=[4], shape=(112, 112, 80))
    train, val, info = sample_sets(None, config)
    assert info["train_cases"] == 1 and val is not None and train["label"].sum() > 0
    with pytest.raises(InputError, match="held-out"):
        sample_sets(None, NoduleTrainConfig(seeds=[199, 200]))
    with pytest.raises(InputError, match="folder is needed"):
        sample_sets(None, NoduleTrainConfig(layout="luna16", seeds=[3]))


def test_denser_training_phantoms_carry_more_positives_validation_keeps_eight(tmp_path):
    """--nodules-per-phantom packs more nodules into the training phantoms only, and is part of the cache key."""
    base = NoduleTrainConfig(seeds=[3], val_seeds=[4], shape=(112, 112, 80))
    dense = NoduleTrainConfig(seeds=[3], val_seeds=[4], shape=(112, 112, 80), nodules_per_phantom=16)
    train8, val8, _ = sample_sets(None, base, cache=tmp_path)
    train16, val16, info = sample_sets(None, dense, cache=tmp_path)
    positives = lambda s: int(s["label"][~s["jittered"]].sum())  # noqa: E731
    assert positives(train16) > positives(train8)
    assert info["nodules_per_phantom"] == 16 and len(list(tmp_path.glob("samples-*.npz"))) == 3
    np.testing.assert_array_equal(val16["patch"], val8["patch"])


def test_lidc_consensus_sets_the_positives(shared):
    from clinseg.datasets.lidc import read_lidc_case, read_nodules

    root = shared / "data" / "lidc"
    if not root.is_dir():
        pytest.skip("shared/data/lidc is absent")
    names = case_names(root, "lidc")
    assert [Path(n).name for n in names] == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    readers = {Path(n).name: [r.readers for r in read_nodules(read_lidc_case(n))] for n in names}
    assert readers == {"LIDC-IDRI-0001": [4], "LIDC-IDRI-0002": [2]}  # what the XML says
    for level, expected in ((2, 2), (3, 1), (4, 1), (5, 0)):
        cases = list(iter_cases(root, "lidc", names, consensus=level))
        assert sum(len(c.nodules) for c in cases) == expected
        assert sum(len(c.ignore) for c in cases) == 2 - expected
    case = next(iter_cases(root, "lidc", names[:1], consensus=3))
    assert 25 < case.nodules[0][1] < 35  # the readers' mean diameter of 0001's nodule (29.7 mm)
    samples = case_samples(case.ct, case.nodules, np.random.default_rng(0), case.ignore)
    assert samples["label"][~samples["jittered"]].sum() >= 1


def test_seed_lists_and_the_training_schedule():
    from clinseg.train.loop import cosine_lr
    from clinseg.train.nodule_fpr import draw_negatives, seed_range

    assert seed_range("100-102,150-151") == [100, 101, 102, 150, 151] and seed_range("7") == [7]
    with pytest.raises(InputError, match="comma list"):
        seed_range("100-x")
    assert cosine_lr(1e-3, 0.0) == pytest.approx(1e-3) and cosine_lr(1e-3, 1.0) == pytest.approx(5e-5)
    assert cosine_lr(1e-3, 0.5) == pytest.approx(1e-3 * (0.05 + 0.95 / 2))
    assert cosine_lr(1e-3, 2.0) == cosine_lr(1e-3, 1.0)
    # one negative still misclassified among 999 learnt ones: the hard draws are nearly all of it
    loss = np.full(1000, 1e-3)
    loss[17] = 5.0
    which = draw_negatives(np.random.default_rng(0), loss, 8, 200)
    assert len(which) == 208 and np.mean(which[8:] == 17) > 0.75 and np.mean(which[:8] == 17) < 0.5


def test_training_starts_from_given_weights(tmp_path):
    from clinseg.train.nodule_fpr import train

    rng = np.random.default_rng(0)
    data = {"patch": rng.integers(0, 255, (12, 32, 32, 32), dtype=np.uint8),
            "scalar": rng.normal(size=(12, 4)).astype(np.float32), "half": np.full(12, 8.0, np.float32),
            "label": np.array([1.0] * 3 + [0.0] * 9, np.float32), "jittered": np.zeros(12, bool)}
    start = NoduleFPR()
    for p in start.parameters():
        p.data.normal_(0, 0.05)
    # lr 0: the weights stay the init's, whatever the schedule or the hard-negative share
    net, record = train(data, None, 1.0, batch=8, lr=0.0, max_steps=3, log=lambda _: None,
                        init=start.state_dict(), hard_share=0.5, cosine=True)
    assert record["steps"] == 3
    for name, value in start.state_dict().items():
        if "running" not in name and "num_batches" not in name:  # BatchNorm statistics move in train mode
            assert np.array_equal(net.state_dict()[name].numpy(), value.numpy()), name
    fresh, _ = train(data, None, 1.0, batch=8, lr=0.0, max_steps=1, log=lambda _: None)
    assert not np.array_equal(fresh.state_dict()["fc.0.weight"].numpy(), start.state_dict()["fc.0.weight"].numpy())


def test_phantom_spacing_keeps_the_field_of_view_and_the_default_cache(tmp_path, capsys):
    """--spacing I,J,K generates the seeds on another grid over the preset's field of view; the preset's own
    1.4 mm is the default (same cache entry as without the option); bad values are one-line InputErrors."""
    from clinseg.phantoms.chest import PRESETS
    from clinseg.train.nodule_fpr import phantom_spacing

    assert phantom_spacing("0.8,0.8,1.25") == (0.8, 0.8, 1.25) and phantom_spacing("1.4,1.4,1.4") is None
    for bad in ("0.8,0.8", "0.8,x,1", "0.1,0.8,1.25", "0.8,0.8,9"):
        with pytest.raises(InputError, match="--spacing") as error:
            phantom_spacing(bad)
        assert "\n" not in str(error.value)
    assert main(["train", "nodule", "--seeds", "3", "--spacing", "0.8,0.8", "--out", str(tmp_path / "r"),
                 "--progress", "none"]) != 0
    assert "--spacing" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

    seen = []
    import clinseg.phantoms.chest as chest

    generate = chest.generate_chest

    def spy(*args, **kwargs):
        ph = generate(*args, **kwargs)
        seen.append((ph.ct.shape, ph.ct.spacing))
        return ph

    chest.generate_chest = spy
    try:
        coarse = NoduleTrainConfig(seeds=[3], spacing=(2.0, 2.0, 2.4))
        train, _, info = sample_sets(None, coarse, cache=tmp_path)
        sample_sets(None, NoduleTrainConfig(seeds=[3], spacing=phantom_spacing("2,2,2.4")), cache=tmp_path)
    finally:
        chest.generate_chest = generate
    assert len(seen) == 1  # the second call read the cache
    (k, j, i), spacing = seen[0]
    fov = np.multiply(PRESETS["small"][0], PRESETS["small"][1])
    assert spacing == (2.0, 2.0, 2.4) and np.allclose(np.multiply((i, j, k), spacing), fov, atol=1.2)
    assert info["spacing_mm"] == [2.0, 2.0, 2.4] and train["label"][~train["jittered"]].sum() >= 1
    # the default grid keeps the cache name it had before the option: another entry than the 2 mm one
    default = NoduleTrainConfig(seeds=[3], shape=(112, 112, 80))
    sample_sets(None, default, cache=tmp_path)
    sample_sets(None, NoduleTrainConfig(seeds=[3], shape=(112, 112, 80), spacing=phantom_spacing("1.4,1.4,1.4")),
                cache=tmp_path)
    assert len(list(tmp_path.glob("samples-*.npz"))) == 2
