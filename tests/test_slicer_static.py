"""Static checks of the Slicer side (no Slicer needed) and of the Slicer-free helpers it relies on.

- every module's CMakeLists lists exactly the scripts and resources in its folder;
- .ui files define every widget the Python refers to, bind every parameter, connect every node selector;
- module files compile and define the four classes Slicer looks for;
- the core package ``clinseg`` never imports the Slicer side;
- the dependency installer's decisions and the widget helpers (pure Python).
"""

from __future__ import annotations

import ast
import fnmatch
import py_compile
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ClinicalSegLib"))

from ClinicalSegLib.task import device_option  # noqa: E402

from ClinicalSegLib import dependencies as deps  # noqa: E402
from ClinicalSegLib import widgets as widget_helpers  # noqa: E402
from clinseg.errors import InputError  # noqa: E402

MODULES = ["AirwaySeg", "NoduleSeg", "OARSeg", "StrokeSeg"]
LIB = ROOT / "ClinicalSegLib"
TASKMODULE = LIB / "ClinicalSegLib" / "taskmodule.py"
TASKWIDGET = LIB / "ClinicalSegLib" / "taskwidget.py"
AIRWAY_WIDGETS = {
    "inputVolumeSelector", "modelSelector", "modelInfoLabel", "deviceSelector", "applyButton", "progressBar",
    "statusLabel", "outputSegmentationSelector", "show3DButton", "targetPointSelector", "scopeDiameterSpinBox",
    "planRouteButton", "updateFromSegmentationButton", "branchTableView",
}
FORBIDDEN_IN_CORE = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "mrml", "ClinicalSegLib",
                     "PyQt5", "PyQt6", "PySide2", "PySide6", *MODULES}


# -- CMake lists ---------------------------------------------------------------------------------
def cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) pairs of a CMakeLists.txt (comments stripped; enough for these files)."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    return [(name.lower(), args.split()) for name, args in re.findall(r"(\w+)\s*\(([^()]*)\)", text)]


def cmake_file_lists(folder: Path) -> tuple[str, set[str], set[str]]:
    """NAME, SCRIPTS and RESOURCES of a folder's ``clinseg_add_scripted_module`` call, with ${...} and
    file(GLOB) expanded."""
    variables: dict[str, list[str]] = {"CMAKE_CURRENT_SOURCE_DIR": [str(folder)]}

    def expand(items: list[str]) -> list[str]:
        out = []
        for item in items:
            for name, values in variables.items():
                item = item.replace("${" + name + "}", " ".join(values))
            out.extend(item.split())
        return out

    call: dict[str, list[str]] = {}
    for command, args in cmake_commands(folder / "CMakeLists.txt"):
        if command == "set":
            variables[args[0]] = expand(args[1:])
        elif command == "list" and args[0] == "APPEND":
            variables.setdefault(args[1], []).extend(expand(args[2:]))
        elif command == "file" and args[0] == "GLOB":
            patterns = [p for p in expand(args[2:]) if p not in ("RELATIVE", "CONFIGURE_DEPENDS", str(folder))]
            matches = [f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file()
                       and any(fnmatch.fnmatch(str(f), p) for p in patterns)]
            variables[args[1]] = sorted(matches)
        elif command == "clinseg_add_scripted_module":
            call = module_arguments(expand(args))
    return call["NAME"][0], set(call["SCRIPTS"]), set(call.get("RESOURCES", []))


def module_arguments(args: list[str]) -> dict[str, list[str]]:
    """``NAME x PACKAGE SCRIPTS a b`` -> {"NAME": ["x"], "PACKAGE": [], "SCRIPTS": ["a", "b"]}."""
    parsed: dict[str, list[str]] = {}
    for arg in args:
        if arg in ("NAME", "PACKAGE", "SCRIPTS", "RESOURCES"):
            current = parsed.setdefault(arg, [])
        else:
            current.append(arg)
    return parsed


def files_under(folder: Path, pattern: str) -> set[str]:
    return {f.relative_to(folder).as_posix() for f in folder.glob(pattern)
            if f.is_file() and "__pycache__" not in f.parts}


@pytest.mark.parametrize("name", [*MODULES, "ClinicalSegLib"])
def test_cmake_lists_match_the_folder(name):
    folder = ROOT / name
    module_name, scripts, resources = cmake_file_lists(folder)
    assert module_name == name
    assert scripts == files_under(folder, "**/*.py"), "SCRIPTS must list every .py file of the folder, and only those"
    assert resources == files_under(folder, "Resources/**/*"), "RESOURCES must list every file under Resources/"
    for listed in scripts | resources:
        assert (folder / listed).is_file(), f"{name}/CMakeLists.txt lists missing {listed}"
    commands = cmake_commands(folder / "CMakeLists.txt")
    calls = [module_arguments(args) for command, args in commands if command == "clinseg_add_scripted_module"]
    assert len(calls) == 1 and ("PACKAGE" in calls[0]) == (name not in MODULES)  # modules get their tests
    assert not [command for command, _args in commands if command.startswith("slicer")], "call through the macro"


def test_module_macro_builds_and_tests_each_module():
    commands = cmake_commands(ROOT / "cmake" / "ClinicalSegModule.cmake")
    assert ("macro", ["clinseg_add_scripted_module"]) in commands
    build = [args for command, args in commands if command == "slicermacrobuildscriptedmodule"]
    assert len(build) == 1 and build[0][:2] == ["NAME", "${_clinseg_module_NAME}"]
    assert ("slicer_add_python_unittest", ["SCRIPT", "${_clinseg_module_NAME}.py"]) in commands


def test_cmake_lists_parser_sees_a_missing_file(tmp_path):
    """The check above must fail when a file is left out of the lists."""
    folder = tmp_path / "Demo"
    (folder / "Resources" / "UI").mkdir(parents=True)
    for f in ("Demo.py", "Extra.py", "Resources/UI/Demo.ui"):
        (folder / f).write_text("")
    (folder / "CMakeLists.txt").write_text(
        "set(_ui Resources/UI/Demo.ui)\nclinseg_add_scripted_module(NAME Demo\n  SCRIPTS\n    Demo.py # x\n"
        "  RESOURCES ${_ui}\n  )\n")
    name, scripts, resources = cmake_file_lists(folder)
    assert (name, scripts, resources) == ("Demo", {"Demo.py"}, {"Resources/UI/Demo.ui"})
    assert scripts != files_under(folder, "**/*.py")


def test_top_level_cmake_declares_the_extension():
    commands = cmake_commands(ROOT / "CMakeLists.txt")
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    settings = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    assert settings["EXTENSION_HOMEPAGE"] == "https://github.com/clinicalseg/SlicerClinicalSeg"
    assert settings["EXTENSION_CATEGORY"] == "Segmentation"
    assert settings["EXTENSION_CONTRIBUTORS"] == "ClinicalSeg team"
    assert settings["EXTENSION_DEPENDS"] == "PyTorch"
    assert len(settings["EXTENSION_DESCRIPTION"]) > 80
    raw = "https://raw.githubusercontent.com/clinicalseg/SlicerClinicalSeg/main/"
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in settings[key].split():
            assert url.startswith(raw) and (ROOT / url[len(raw):]).is_file(), url
    subdirs = [args[0] for command, args in commands if command == "add_subdirectory"]
    assert subdirs == ["ClinicalSegLib", *MODULES]
    assert ["NAME", "clinseg", "PACKAGE"] == next(a for c, a in commands if c == "clinseg_add_scripted_module")[:3]


STUB_SLICER = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/noop.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/noop.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/noop.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(MY_WITH_GENERIC_TESTS)
    file(APPEND ${CMAKE_BINARY_DIR}/generic_tests.txt "${MY_NAME}\\n")
  endif()
  foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "${MY_NAME}: nonexistent file ${f}")
    endif()
    file(APPEND ${CMAKE_BINARY_DIR}/listing.txt "${MY_NAME}|${f}\\n")
  endforeach()
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "SLICER_ARGS" ${ARGN})
  file(APPEND ${CMAKE_BINARY_DIR}/tests.txt "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}\\n")
endmacro()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_configures_against_a_stub_slicer(tmp_path):
    """Run CMake for real with Slicer's two macros replaced by recorders that check each file exists."""
    stub = tmp_path / "slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER)
    (stub / "noop.cmake").write_text("")
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    listing: dict[str, set[str]] = {}
    for line in (build / "listing.txt").read_text().splitlines():
        target, path = line.split("|")
        listing.setdefault(target, set()).add(path)
    assert {p for p in listing["clinseg"] if p.endswith(".py")} == files_under(ROOT, "clinseg/**/*.py")
    assert listing["ClinicalSegLib"] == files_under(LIB, "**/*.py")
    for name in MODULES:
        assert listing[name] == files_under(ROOT / name, "**/*.py") | files_under(ROOT / name, "Resources/**/*")
    assert sorted((build / "tests.txt").read_text().split()) == sorted(str(ROOT / m / f"{m}.py") for m in MODULES)
    assert sorted((build / "generic_tests.txt").read_text().split()) == sorted(MODULES)
    pins = build / "lib/Slicer-5.8/qt-scripted-modules/ClinicalSegLib/requirements.txt"
    assert pins.read_text() == (ROOT / "requirements.txt").read_text()


# -- .ui files and the Python that uses them -----------------------------------------------------
def ui_tree(name: str) -> ET.Element:
    return ET.parse(ROOT / name / "Resources" / "UI" / f"{name}.ui").getroot()


def ui_widgets(root: ET.Element) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in root.iter("widget") if w.get("name")}


def self_ui_names(path: Path) -> set[str]:
    """Names X in every ``self.ui.X`` of a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def parameter_fields(path: Path) -> dict[str, set[str]]:
    """Fields of each ``@parameterNodeWrapper`` class in a Python file."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            found[node.name] = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return found


@pytest.mark.parametrize("name", MODULES)
def test_ui_defines_what_the_python_uses(name):
    root = ui_tree(name)
    widgets = ui_widgets(root)
    assert root.findtext("class") == name
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", name)
    used = self_ui_names(ROOT / name / f"{name}.py") | self_ui_names(TASKWIDGET)
    optional = {"modelSelector", "modelInfoLabel", "modelInstallButton", "modelImportButton", "show3DButton"}
    assert used, "the widget code should refer to its .ui"
    # the shared widget looks for the model selector and the 3D button before it uses them
    assert not used - optional - set(widgets), f"{name}.py uses widgets missing from {name}.ui"
    if "modelSelector" in widgets:
        assert not optional - set(widgets), "a model selector comes with its info label and buttons"
    if name == "AirwaySeg":
        assert not AIRWAY_WIDGETS - set(widgets)


@pytest.mark.parametrize("name", MODULES)
def test_ui_binds_every_parameter_and_connects_every_node_selector(name):
    root = ui_tree(name)
    widgets = ui_widgets(root)
    bound = {}
    for wname, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = wname
    own = parameter_fields(ROOT / name / f"{name}.py")
    fields = next(iter(own.values())) if own else parameter_fields(TASKMODULE)["TaskParameterNode"]
    assert set(bound) == fields
    combo_items = [i.findtext("property/string") for i in widgets[bound["device"]].findall("item")]
    assert combo_items == list(widget_helpers.DEVICE_CHOICES)

    connections = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in root.iter("connection")]
    for sender, _signal, receiver, _slot in connections:
        assert sender in widgets and receiver in widgets
    scene = ("mrmlSceneChanged(vtkMRMLScene*)", "setMRMLScene(vtkMRMLScene*)")
    scene_receivers = {r for s, sig, r, slot in connections if s == name and (sig, slot) == scene}
    mrml_widgets = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert mrml_widgets and mrml_widgets == scene_receivers, "every MRML widget needs the scene"


# -- module files --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_module_compiles_and_defines_the_four_classes(name, tmp_path):
    path = ROOT / name / f"{name}.py"
    py_compile.compile(str(path), cfile=str(tmp_path / "m.pyc"), doraise=True)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [name, f"{name}Widget", f"{name}Logic", f"{name}Test"]
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert [classes[n] for n in names] == [["ScriptedLoadableModule"], ["taskmodule.TaskModuleWidget"],
                                           ["taskmodule.TaskModuleLogic"], ["taskmodule.TaskModuleTest"]]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("describeModule")]
    # only the module's own TestCase may be visible in its namespace (Slicer's runner collects every one)
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {"TaskModuleTest", "ScriptedLoadableModuleTest"} & imported
    assert len(calls) == 1
    texts = {k.arg: " ".join(ast.literal_eval(k.value).split()) for k in calls[0].keywords
             if k.arg in ("title", "helpText", "acknowledgementText")}
    assert texts["title"] and len(texts["helpText"]) > 100 and len(texts["acknowledgementText"]) > 50


def test_shared_bases_define_the_slicer_classes(tmp_path):
    for path in sorted((LIB / "ClinicalSegLib").glob("*.py")):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)
    tree = ast.parse(TASKMODULE.read_text(encoding="utf-8"))
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    widget_tree = ast.parse(TASKWIDGET.read_text(encoding="utf-8"))
    widget_classes = {n.name: [ast.unparse(b) for b in n.bases] for n in widget_tree.body
                      if isinstance(n, ast.ClassDef)}
    assert widget_classes["TaskModuleWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["TaskModuleLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["TaskModuleTest"] == ["ScriptedLoadableModuleTest"]
    assert parameter_fields(TASKMODULE)["TaskParameterNode"] == {"inputVolume", "device", "outputSegmentation"}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icons_are_128_pixel_pngs_and_distinct():
    icons = [ROOT / m / "Resources" / "Icons" / f"{m}.png" for m in MODULES]
    icons.append(ROOT / "Resources" / "Icons" / "ClinicalSeg.png")
    assert all(png_size(p) == (128, 128) for p in icons)
    assert len({p.read_bytes() for p in icons}) == len(icons)


# -- the core never imports the Slicer side ------------------------------------------------------
def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_core_never_imports_slicer_qt_ctk_or_vtk():
    files = sorted(f for f in (ROOT / "clinseg").rglob("*.py") if "__pycache__" not in f.parts)
    assert files
    offenders = {f.relative_to(ROOT).as_posix(): sorted(imported_roots(ast.parse(f.read_text(encoding="utf-8")))
                                                        & FORBIDDEN_IN_CORE) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}
    # the scan itself sees all three forms of import
    probe = ast.parse("import vtk.util\nfrom slicer import util\nimportlib.import_module('qt')\n")
    assert imported_roots(probe) == {"vtk", "slicer", "qt"}


# -- dependency installer (pure part) ------------------------------------------------------------
def test_read_pins_normalises_names_and_ignores_the_rest(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text("# comment\nFill_Voids==2.1.2  # pinned\nscipy>=1.0\ntorch==2.13.0 ; python_version>'3'\n"
                    "-r other.txt\n\nPyDICOM == 3.0.2\n")
    assert deps.read_pins(path) == {"fill-voids": "2.1.2", "torch": "2.13.0", "pydicom": "3.0.2"}


def test_pins_come_from_requirements_txt():
    assert deps.requirements_file() == ROOT / "requirements.txt"
    text = (ROOT / "requirements.txt").read_text()
    requirements = deps.pinned_requirements(deps.read_pins(deps.requirements_file()))
    assert [r.name for r in requirements] == list(deps.EXTENSION_PACKAGES)
    for r in requirements:
        assert re.search(rf"^{re.escape(r.specifier)}$", text, re.MULTILINE), r.specifier
    assert {r.module for r in requirements} == {"safetensors", "nrrd", "pydicom", "psutil", "scipy", "skimage",
                                                "cc3d", "edt", "fill_voids"}
    # each import name really belongs to its distribution (checked in this environment, where all are installed)
    assert all(deps.is_importable(r.module) for r in requirements)


def test_slicer_packages_are_never_installed():
    pins = {"numpy": "2.4.6", "simpleitk": "2.5.7", "requests": "2.32.0", "scipy": "1.17.1"}
    packages = {"numpy": "numpy", "SimpleITK": "SimpleITK", "requests": "requests", "scipy": "scipy"}
    assert [r.name for r in deps.pinned_requirements(pins, packages)] == ["scipy"]
    smuggled = [deps.Requirement("SimpleITK", "SimpleITK", "2.5.7"), deps.Requirement("NumPy", "numpy", "2.4.6"),
                deps.Requirement("requests", "requests", "2.32.0"), deps.Requirement("edt", "edt", "3.1.2")]
    assert deps.missing_requirements(smuggled, importable=lambda module: False) == [smuggled[3]]
    assert deps.pip_arguments(smuggled) == ["edt==3.1.2"]


def test_only_missing_packages_are_installed():
    requirements = deps.pinned_requirements(deps.read_pins(deps.requirements_file()))
    present = {"scipy", "nrrd", "psutil"}
    missing = deps.missing_requirements(requirements, importable=lambda module: module in present)
    assert [r.name for r in missing] == ["safetensors", "pydicom", "scikit-image", "connected-components-3d",
                                         "edt", "fill-voids"]
    assert deps.pip_arguments(missing)[2] == "scikit-image==0.26.0"
    assert deps.missing_requirements(requirements) == []  # this environment has them all
    assert not deps.is_importable("clinseg_no_such_module") and deps.is_importable("json")


def test_torch_requirement_and_backend_choice():
    # pyproject.toml's dependency range for torch (tomllib is 3.11+, the project supports 3.10)
    ranges = re.findall(r'^\s*"torch([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert ranges == [deps.TORCH_REQUIREMENT]
    assert [deps.torch_backend(c) for c in deps.TORCH_BACKEND_CHOICES] == [None, "cpu"]
    with pytest.raises(ValueError):
        deps.torch_backend("ROCm")


# -- widget helpers ------------------------------------------------------------------------------
def test_device_choices_and_unavailable_message():
    assert [device_option(c) for c in widget_helpers.DEVICE_CHOICES] == ["auto", "cpu", "cuda"]
    with pytest.raises(InputError, match="TPU"):
        device_option("TPU")
    assert widget_helpers.pipeline_unavailable_message("Airway segmentation") == \
        "Airway segmentation pipeline not available yet in this version."
    assert str(widget_helpers.PipelineUnavailableError("Stroke lesion segmentation")) == \
        "Stroke lesion segmentation pipeline not available yet in this version."


def test_show_pipeline_unavailable_disables_and_explains():
    status = SimpleNamespace(text="")
    apply, other = SimpleNamespace(enabled=True, toolTip=""), SimpleNamespace(enabled=True, toolTip="")
    widget_helpers.showPipelineUnavailable("Lung nodule segmentation", status, apply, [other, None])
    message = "Lung nodule segmentation pipeline not available yet in this version."
    assert status.text == message
    assert (apply.enabled, apply.toolTip, other.enabled, other.toolTip) == (False, message, False, message)
    widget_helpers.setWidgetsEnabled([apply], True)
    assert apply.enabled and apply.toolTip == message
