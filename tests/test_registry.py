"""Model cards, the model cache and its hash checks (install, import, packs, verify, load)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clinseg.errors import InputError, ModelError
from clinseg.nets.atm22_baseline import ATM22BaselineUNet
from clinseg.registry import ModelCard, get_registry, sha256_file, validate_card

ATM_ID = "atm22-baseline"
ATM_SHA = "52df012d4765912976b026a579bd8f1c3f90fb61717173c11ef82e866d38460f"


@pytest.fixture
def atm_weight(shared) -> Path:
    path = shared / "models" / "atm22_baseline" / "weight.pth"
    if not path.is_file():
        pytest.skip("ATM'22 baseline weight.pth is absent")
    return path


def _leftovers(home: Path) -> list[str]:
    """Anything in the cache besides complete model folders (staging folders, partial files)."""
    models = home / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.is_dir() else []


def _small_card(model_id: str, files: list[dict]) -> dict:
    card = get_registry().card(ATM_ID).to_dict()
    card.update(id=model_id, version="0.0.1", files=files, figures={"note": 1.0})
    card["training_data"] = {"description": "random initialisation, for tests", "synthetic": True}
    return card


def _pack(path: Path, card: dict, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pack/card.json", json.dumps(card))
        for name, data in members.items():
            archive.writestr(f"pack/{name}", data)
    return path


def _random_weights(tmp_path: Path, seed: int = 0) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    path = tmp_path / f"random{seed}.safetensors"
    save_file(ATM22BaselineUNet().state_dict(), str(path))
    return path, _entry(path, "net.safetensors")


def _entry(path: Path, name: str, fmt: str = "safetensors") -> dict:
    return {"name": name, "sha256": sha256_file(path), "size": path.stat().st_size, "format": fmt}


def _single_file_pack(zip_path: Path, model_id: str, entry: dict, weights: Path) -> Path:
    return _pack(zip_path, _small_card(model_id, [entry]), {entry["name"]: weights.read_bytes()})


class Pickled:
    """Not a tensor: ``torch.load(weights_only=True)`` must refuse to rebuild it."""


# --- cards ----------------------------------------------------------------------------
def test_builtin_atm_card(clinseg_home):
    registry = get_registry()
    assert registry.home == clinseg_home
    card = registry.card(ATM_ID)
    assert {"airway-unet-phantom", ATM_ID} <= {c.id for c in registry.list()}  # built in, beside the other tasks' cards
    assert (card.task, card.licence, card.synthetic) == ("airway", "MIT", False)
    assert "102957" in card.data["citation"]
    assert card.parameter_count == sum(p.numel() for p in ATM22BaselineUNet().parameters())
    assert card.inputs["intensity"] == {"clip": [-1000, 400], "scale": [0, 1]}
    assert (card.inputs["spacing"], card.inputs["patch_size"], card.inputs["overlap"]) == ("native", [128] * 3, 0.25)
    assert card.inference["gaussian_sigma_scale"] == 0.125
    assert card.postprocessing == [{"op": "largest_component", "connectivity": 26}]
    (entry,) = card.files
    assert (entry.sha256, entry.size, entry.format) == (ATM_SHA, 4115917, "torch-state-dict")
    assert entry.url.startswith("https://github.com/")
    (segment,) = card.segments()
    assert (segment.label, segment.name, segment.type) == (1, "Airway", ("SCT", "89187006", "Airway structure"))


@pytest.mark.parametrize(
    ("rule", "spacing", "expected"),
    [
        ("native", (1.5, 1.5, 3.0), None),
        ([1.0, 1.0, 1.0], (0.7, 0.7, 1.0), (1.0, 1.0, 1.0)),
        ([1.0, 1.0, 1.0], (1.0, 1.0, 1.0), None),
        ({"max_mm": 0.8}, (0.7, 0.7, 1.5), (0.7, 0.7, 0.8)),
        ({"max_mm": 0.8}, (0.5, 0.5, 0.8), None),
        ({"min_mm": 0.6, "max_mm": 1.0}, (0.4, 0.4, 2.5), (0.6, 0.6, 1.0)),
    ],
)
def test_working_spacing_follows_the_card(rule, spacing, expected):
    data = get_registry().card(ATM_ID).to_dict()
    data["inputs"]["spacing"] = rule
    assert validate_card(data) == []
    assert ModelCard.from_dict(data).working_spacing(spacing) == expected


@pytest.mark.parametrize("rule", [{}, {"max_mm": 0}, {"max_mm": 1.0, "mode": "nearest"}, [1.0, 1.0]])
def test_bad_spacing_rules_are_refused(rule):
    data = get_registry().card(ATM_ID).to_dict()
    data["inputs"]["spacing"] = rule
    assert any("inputs.spacing" in problem for problem in validate_card(data))


def test_card_validation_names_each_problem():
    data = get_registry().card(ATM_ID).to_dict()
    assert validate_card(data) == []
    data["task"] = "liver"
    data["labels"][0]["value"] = True  # a bool is not an integer in JSON
    data["inputs"]["spacing"] = [1.0, 1.0]
    data["files"][0]["sha256"] = "abc"
    data["colour"] = "blue"
    del data["licence"]
    problems = validate_card(data)
    assert len(problems) == 6
    joined = "\n".join(problems)
    for fragment in ["task: 'liver'", "labels[0].value: expected integer", "inputs.spacing", "files[0].sha256",
                     "unexpected field 'colour'", "missing 'licence'"]:
        assert fragment in joined
    with pytest.raises(ModelError, match="invalid model card"):
        ModelCard.from_dict(data)


def test_unknown_and_missing_models(clinseg_home):
    registry = get_registry()
    with pytest.raises(ModelError, match="unknown model 'nope'; known: airway-unet-phantom, atm22-baseline, "):
        registry.card("nope")
    (clinseg_home / "card.json").parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry.builtin_dir / ATM_ID / "card.json", clinseg_home / "card.json")
    with pytest.raises(ModelError, match="unknown model '..'"):  # ids never leave <home>/models
        registry.card("..")
    assert not registry.is_installed(ATM_ID)
    assert registry.verify(ATM_ID) == ["not installed"]
    with pytest.raises(ModelError, match="not installed"):
        registry.load_network(ATM_ID)


# --- packs without shared data ------------------------------------------------------------
def test_pack_of_a_new_model_installs_lists_and_loads(clinseg_home, tmp_path):
    weights, entry = _random_weights(tmp_path)
    pack = _pack(tmp_path / "test-net.zip", _small_card("test-net", [entry]), {entry["name"]: weights.read_bytes()})
    registry = get_registry()
    card = registry.import_file(pack)  # import_file hands packs to import_pack
    assert card.id == "test-net" and card.synthetic
    assert [c.id for c in registry.list()][-1] == "test-net" and ATM_ID in {c.id for c in registry.list()}
    assert registry.verify("test-net") == []
    net = registry.load_network("test-net")
    assert not net.training
    torch.manual_seed(0)
    reference = ATM22BaselineUNet().state_dict()
    assert all(torch.equal(net.state_dict()[k], reference[k]) for k in reference)
    assert _leftovers(clinseg_home) == []


def test_verify_and_load_detect_tampering_after_install(clinseg_home, tmp_path):
    weights, entry = _random_weights(tmp_path)
    registry = get_registry()
    registry.import_pack(_single_file_pack(tmp_path / "p.zip", "test-net", entry, weights))
    installed = clinseg_home / "models" / "test-net" / entry["name"]
    data = bytearray(installed.read_bytes())
    data[-1] ^= 0xFF
    installed.write_bytes(bytes(data))
    (problem,) = registry.verify("test-net")
    assert f"expected {entry['sha256']}, got {sha256_file(installed)}" in problem
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        registry.load_network("test-net")


def test_packs_are_refused_when_files_do_not_match(clinseg_home, tmp_path):
    registry = get_registry()
    weights, entry = _random_weights(tmp_path)
    other, _ = _random_weights(tmp_path, seed=1)
    card = _small_card("test-net", [entry])
    with pytest.raises(ModelError, match=f"expected {entry['sha256']}, got {sha256_file(other)}"):
        registry.import_pack(_pack(tmp_path / "swapped.zip", card, {entry["name"]: other.read_bytes()}))
    with pytest.raises(ModelError, match="lacks net.safetensors"):
        registry.import_pack(_pack(tmp_path / "empty.zip", card, {}))
    # a coherent pack may not put other weights under a built-in model's id
    with pytest.raises(ModelError, match="not a file of the built-in model"):
        registry.import_pack(_single_file_pack(tmp_path / "hijack.zip", ATM_ID, entry, weights))
    # tensors that do not fit the card's network
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(3)}, str(bad))
    with pytest.raises(ModelError, match="do not fit the network"):
        registry.import_pack(_single_file_pack(tmp_path / "bad.zip", "test-net", _entry(bad, "net.safetensors"), bad))
    with pytest.raises(InputError, match="not a readable model pack"):
        registry.import_pack(tmp_path / "bad.safetensors")
    assert not registry.is_installed("test-net") and _leftovers(clinseg_home) == []


def test_pickled_objects_are_never_loaded(clinseg_home, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": Pickled()}, path)
    entry = _entry(path, "evil.pth", "torch-state-dict")
    with pytest.raises(ModelError, match="cannot be read as torch-state-dict"):
        get_registry().import_pack(_single_file_pack(tmp_path / "evil.zip", "evil-net", entry, path))
    assert _leftovers(clinseg_home) == [] and not get_registry().is_installed("evil-net")


# --- the real ATM'22 weights ------------------------------------------------------------------
def test_import_file_identifies_converts_and_loads(clinseg_home, atm_weight):
    registry = get_registry()
    card = registry.import_file(atm_weight)
    assert card.id == ATM_ID and registry.is_installed(ATM_ID)
    (entry,) = card.files
    assert (entry.format, entry.converted_from_sha256) == ("safetensors", ATM_SHA)
    folder = clinseg_home / "models" / ATM_ID
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "weight.safetensors"]
    assert sha256_file(folder / "weight.safetensors") == entry.sha256
    assert registry.verify(ATM_ID) == []
    net = registry.load_network(ATM_ID)
    reference = ATM22BaselineUNet()
    reference.load_state_dict(torch.load(atm_weight, map_location="cpu", weights_only=True))
    x = torch.rand(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), reference.eval()(x))
    # conversion is reproducible: a second import gives the same safetensors file
    assert registry.import_file(atm_weight, model_id=ATM_ID).files[0].sha256 == entry.sha256
    assert _leftovers(clinseg_home) == []


def test_corrupted_weight_is_refused(clinseg_home, atm_weight, tmp_path):
    corrupt = tmp_path / "weight.pth"
    data = bytearray(atm_weight.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))
    registry = get_registry()
    with pytest.raises(ModelError, match="is not a weight file of any known model"):
        registry.import_file(corrupt)
    with pytest.raises(ModelError, match="is not a weight file of model 'atm22-baseline'"):
        registry.import_file(corrupt, model_id=ATM_ID)
    assert not registry.is_installed(ATM_ID)


def test_install_from_url_checks_hash_and_is_atomic(clinseg_home, atm_weight, tmp_path):
    registry = get_registry()
    events = []
    card = registry.install(ATM_ID, url=atm_weight.as_uri(), progress=events.append)
    assert registry.verify(ATM_ID) == [] and card.data["installed"]["source"] == atm_weight.as_uri()
    assert events[-1].done == events[-1].total == 4115917 and events[-1].stage == "download weight.pth"
    good = sha256_file(clinseg_home / "models" / ATM_ID / "weight.safetensors")

    wrong = tmp_path / "other.pth"
    shutil.copyfile(atm_weight, wrong)
    with open(wrong, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match=f"expected {ATM_SHA}, got {sha256_file(wrong)}"):
        registry.install(ATM_ID, url=wrong.as_uri())
    # the failed reinstall left the earlier installation untouched and nothing else behind
    assert registry.verify(ATM_ID) == []
    assert sha256_file(clinseg_home / "models" / ATM_ID / "weight.safetensors") == good
    assert _leftovers(clinseg_home) == []
    with pytest.raises(ModelError, match="download of weight.pth .* failed"):
        registry.install(ATM_ID, url=(tmp_path / "missing.pth").as_uri())
    with pytest.raises(ModelError, match="unsupported URL"):
        registry.install(ATM_ID, url="ftp://example.org/weight.pth")


def test_model_pack_roundtrip(clinseg_home, atm_weight, tmp_path):
    registry = get_registry()
    registry.import_file(atm_weight)
    pack = registry.export_pack(ATM_ID, tmp_path / "atm.zip")
    assert registry.remove(ATM_ID) and not registry.is_installed(ATM_ID)
    card = registry.import_pack(pack)
    assert card.files[0].converted_from_sha256 == ATM_SHA
    assert registry.verify(ATM_ID) == []
    assert sum(p.numel() for p in registry.load_network(ATM_ID).parameters()) == 1_022_106
