"""The widget every ClinicalSeg module shares (Slicer application only).

Loads ``Resources/UI/<Name>.ui``, binds it to the parameter node and keeps it in step with the scene;
offers the task's engines and models (install, import), runs the task in the background with Apply <->
Cancel, progress and ETA, asks before replacing a filled output segmentation, and shows the run's
warnings in the status line. A module adds its own widgets through the hooks at the end
(``taskOptions``, ``showResults``, ``resultText``, ``updateExtraButtons``).
"""

from __future__ import annotations

from typing import Any

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from . import choices, dependencies, jobs
from .mrml_result import show_3d
from .runner import SlicerTaskRunner
from .widgets import setWidgetsEnabled, showPipelineUnavailable


class TaskModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    logicClass: type = None  # set by each module (its <Name>Logic)
    runsOnSeries = True  # offer "Run on several series..." (a module whose case is several sequences says False)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._taskRunner = None
        self._choices: list[choices.EngineChoice] = []

    # -- set-up and scene ------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logicClass()
        self.task = self.logic.task

        self.ui.progressBar.visible = False
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        if not self.task.available:
            showPipelineUnavailable(self.task.title, self.ui.statusLabel, self.ui.applyButton)
        else:
            self.ui.statusLabel.text = ""
            setWidgetsEnabled([self.ui.applyButton], True,
                              toolTip="Run in the background (click again to cancel).")
        if hasattr(self.ui, "modelSelector"):
            self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
            self.ui.modelInstallButton.connect("clicked(bool)", self.onInstallModel)
            self.ui.modelImportButton.connect("clicked(bool)", self.onImportModel)
        if hasattr(self.ui, "show3DButton"):
            self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.seriesButton = None
        if self.runsOnSeries and self.task.available:
            import qt

            self.seriesButton = qt.QPushButton("Run on several series...")
            self.seriesButton.toolTip = "Run on each chosen volume in turn, each into a new segmentation."
            self.seriesButton.connect("clicked(bool)", self.onRunOnSeries)
            self.layout.addWidget(self.seriesButton)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        if hasattr(self.ui, "modelSelector"):
            self.refreshModelChoices()

    def cleanup(self) -> None:
        if self.busy:
            self._taskRunner.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    @property
    def busy(self) -> bool:
        return self._taskRunner is not None and self._taskRunner.running

    def updateButtons(self, caller=None, event=None) -> None:
        if not hasattr(self, "ui") or not self.task.available:
            return
        node = self._parameterNode
        segmentation = node.outputSegmentation if node is not None else None
        hasSegments = segmentation is not None and segmentation.GetSegmentation().GetNumberOfSegments() > 0
        self.ui.applyButton.enabled = self.busy or (node is not None and inputsSelected(self.inputVolumes(node)))
        if hasattr(self.ui, "show3DButton"):
            self.ui.show3DButton.enabled = segmentation is not None
        self.updateExtraButtons(node, hasSegments)

    # -- engines and models -----------------------------------------------------------------------
    def refreshModelChoices(self, selectKey: str | None = None) -> None:
        current = self.currentChoice()
        selectKey = selectKey or (current.key if current is not None else "auto")
        try:
            self._choices = choices.engine_choices(self.task)
        except ImportError:  # PyTorch (and with it the model registry) comes with the first run
            self._choices = choices.basic_choices(
                self.task, "PyTorch is not installed yet: the first run offers to install it, then models are listed.")
        except Exception as error:  # a broken card in the cache must not take the panel down
            self._choices = choices.basic_choices(self.task, f"Model list unavailable ({error}).")
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        try:
            self.ui.modelSelector.clear()
            for choice in self._choices:
                self.ui.modelSelector.addItem(choice.label)
            keys = [c.key for c in self._choices]
            self.ui.modelSelector.currentIndex = keys.index(selectKey) if selectKey in keys else 0
        finally:
            self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelChanged(self.ui.modelSelector.currentIndex)

    def currentChoice(self) -> choices.EngineChoice | None:
        if not hasattr(self.ui, "modelSelector"):
            return None
        index = self.ui.modelSelector.currentIndex
        return self._choices[index] if 0 <= index < len(self._choices) else None

    def onModelChanged(self, index: int) -> None:
        choice = self.currentChoice()
        self.ui.modelInfoLabel.text = choice.summary if choice is not None else ""
        installable = choice is not None and choice.model_id is not None and not choice.installed
        installing = self.busy and self._taskRunner.applyButton is self.ui.modelInstallButton
        self.ui.modelInstallButton.enabled = installable or installing

    def onInstallModel(self) -> None:
        if self._cancelIfRunning(self.ui.modelInstallButton):
            return
        choice = self.currentChoice()
        if choice is None or choice.model_id is None:
            return
        if not slicer.util.confirmOkCancelDisplay(
                f"Download the weights of {choice.model_id}?\n\n{choice.summary}", windowTitle="Install model"):
            return
        with slicer.util.tryWithErrorDisplay("Model installation failed.", waitCursor=True):
            dependencies.ensureDependencies()
            job = jobs.CommandJob(choices.install_arguments(choice.model_id), self.logic.runnerFactory)
            self._taskRunner = SlicerTaskRunner(job, self.ui.modelInstallButton, self.ui.progressBar,
                                                self.ui.statusLabel, onFinished=lambda ok, _r: self._afterInstall(
                                                    choice.key))
            self._taskRunner.start()
            self.updateButtons()

    def _afterInstall(self, key: str) -> None:
        self.refreshModelChoices(selectKey=key)
        self.updateButtons()

    def onImportModel(self) -> None:
        import qt

        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), f"Import {self.task.name} model weights", "",
            "Model weights (*.pth *.pt *.safetensors *.zip);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Model import failed.", waitCursor=True):
            dependencies.ensureDependencies()
            card = choices.import_model_file(path)
            self.refreshModelChoices(selectKey=f"model:{card.id}")
            self.ui.statusLabel.text = f"Imported {card.id} {card.version}."

    # -- run --------------------------------------------------------------------------------------
    def _cancelIfRunning(self, button) -> bool:
        """True when a job is running: cancel it if ``button`` started it, else say to wait."""
        if not self.busy:
            return False
        if self._taskRunner.applyButton is button:
            self._taskRunner.cancel()
        else:
            slicer.util.warningDisplay("Another task is running; wait for it or cancel it first.")
        return True

    def onApplyButton(self) -> None:
        if self._cancelIfRunning(self.ui.applyButton):
            return
        with slicer.util.tryWithErrorDisplay(f"{self.task.title} could not start.", waitCursor=True):
            node = self._parameterNode
            output = node.outputSegmentation
            overwrite = False
            count = output.GetSegmentation().GetNumberOfSegments() if output is not None else 0
            if count:
                if not slicer.util.confirmYesNoDisplay(
                        f"'{output.GetName()}' already holds {count} segment(s). Replace them (and the nodes "
                        "derived from them)?", windowTitle=self.task.title):
                    return
                overwrite = True
            dependencies.ensureDependencies()
            choice = self.currentChoice() or choices.basic_choices(self.task)[0]
            show3D = self.ui.show3DButton.checked if hasattr(self.ui, "show3DButton") else False
            job = self.logic.createJob(self.inputVolumes(node), choice.engine, choice.model_id, node.device, output,
                                       overwrite, show3D, **self.taskOptions(node))
            self._taskRunner = SlicerTaskRunner(job, self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel,
                                                onFinished=self.onRunFinished)
            self._taskRunner.start()
            self.updateButtons()

    def onRunOnSeries(self) -> None:
        if self._cancelIfRunning(self.seriesButton):
            return
        current = self._parameterNode.inputVolume if self._parameterNode is not None else None
        volumes = chooseVolumes(f"{self.task.title}: run on several series", current)
        if not volumes:
            return
        with slicer.util.tryWithErrorDisplay(f"{self.task.title} could not start.", waitCursor=True):
            dependencies.ensureDependencies()
            choice = self.currentChoice() or choices.basic_choices(self.task)[0]
            job = self.logic.processSeries(volumes, choice.engine, choice.model_id, self._parameterNode.device,
                                           waitForCompletion=False, **self.taskOptions(self._parameterNode))
            self._taskRunner = SlicerTaskRunner(job, self.seriesButton, self.ui.progressBar, self.ui.statusLabel,
                                                onFinished=self.onSeriesFinished)
            self._taskRunner.start()
            self.updateButtons()

    def onSeriesFinished(self, success: bool, outcome) -> None:
        self.updateButtons()
        if success:
            self.ui.statusLabel.text = outcome.summary()

    def onRunFinished(self, success: bool, nodes: dict | None) -> None:
        self.updateButtons()
        if not success:
            return
        self._parameterNode.outputSegmentation = nodes["segmentation"]
        self.showResults(nodes)
        text = self.resultText(nodes.get("metrics", {}))
        self.ui.statusLabel.text += (" " + text if text else "") + warningText(nodes.get("metrics", {}))

    def onShow3D(self, checked: bool) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode is not None else None
        if segmentation is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not show the segmentation in 3D.", waitCursor=True):
            show_3d(segmentation, checked)

    # -- hooks for a module's own widgets ------------------------------------------------------------
    def inputVolumes(self, parameterNode):
        """The volume node(s) a run reads: the input volume; a multi-sequence module returns its list."""
        return parameterNode.inputVolume

    def taskOptions(self, parameterNode) -> dict[str, Any]:
        """The task's own options for ``logic.process`` from the parameter node (none by default)."""
        return {}

    def showResults(self, nodes: dict) -> None:
        """Show what a run (or an in-process update) produced; the 3D view by default."""
        if nodes.get("segmentation") is not None and getattr(getattr(self.ui, "show3DButton", None), "checked", False):
            show_3d(nodes["segmentation"], True)
        self.updateButtons()

    def resultText(self, metrics: dict) -> str:
        """A sentence about the run's outcome for the status line (nothing by default)."""
        return ""

    def updateExtraButtons(self, parameterNode, hasSegments: bool) -> None:
        """Enable the module's own buttons."""


def inputsSelected(volumes) -> bool:
    """Whether every volume a run needs is selected (``None`` entries mean a missing one)."""
    nodes = volumes if isinstance(volumes, list | tuple) else [volumes]
    return bool(nodes) and all(node is not None for node in nodes)


def chooseVolumes(title: str, checked=None) -> list:
    """A dialog listing the scene's volumes with check boxes (``checked`` ticked); the ticked ones, in order."""
    import qt

    volumes = list(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
    dialog = qt.QDialog(slicer.util.mainWindow())
    dialog.setWindowTitle(title)
    layout = qt.QVBoxLayout(dialog)
    listWidget = qt.QListWidget()
    for volume in volumes:
        item = qt.QListWidgetItem(volume.GetName())
        item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
        item.setCheckState(qt.Qt.Checked if volume is checked else qt.Qt.Unchecked)
        listWidget.addItem(item)
    layout.addWidget(listWidget)
    buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
    buttons.connect("accepted()", dialog.accept)
    buttons.connect("rejected()", dialog.reject)
    layout.addWidget(buttons)
    if not dialog.exec_():
        return []
    return [v for n, v in enumerate(volumes) if listWidget.item(n).checkState() == qt.Qt.Checked]


def warningText(metrics: dict) -> str:
    """What a run kept but could not do (e.g. a tree withheld at a cut carina), so the user sees why."""
    return "".join(f" Warning: {text}" for text in metrics.get("warnings", []))
