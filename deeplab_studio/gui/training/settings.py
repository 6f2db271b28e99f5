"""The "Model and schedule" box of the training dialog: where a run starts from (the active
model, the bundled Pascal VOC model, an ImageNet backbone or random init), its architecture,
schedule, device and output file; `request(folder)` turns them into a `TrainRequest`.

Fine-tuning a model takes its architecture and a lower learning rate (unless the user chose one);
the VOC model's batch norm is folded into its weights, so it is kept frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QWidget)

from deeplab_studio.gui.model.offer import bundled_name, voc_model_available
from deeplab_studio.gui.training.worker import INIT_IMAGENET, INIT_RANDOM, TrainRequest, default_output_path
from deeplab_studio.ml.arch_names import ARCH_NAMES, DEFAULT_ARCH
from deeplab_studio.models import VOC_MODEL, model_card

if TYPE_CHECKING:
    from deeplab_studio.gui.training.tools import TrainingTools

INIT_ACTIVE = "active"
SCRATCH_LR, FINETUNE_LR = 0.01, 0.001  # as `deeplab-studio train` (commands/train.py: default_lr)


class TrainSettings(QGroupBox):
    """The settings of the next run (disabled while one runs: its settings stay on show)."""

    def __init__(self, tools: TrainingTools, parent: QWidget | None = None) -> None:
        super().__init__("Model and schedule", parent)
        self.tools = tools
        self._out_edited = False  # the user chose the output file: a refresh keeps it
        self._lr_edited = False  # the user chose a rate: switching the start point keeps it
        self._setting_lr = False
        form = QFormLayout(self)
        self.start_combo = QComboBox()
        self.start_combo.currentIndexChanged.connect(self._start_changed)
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(ARCH_NAMES)  # torch-free (ml.zoo registers exactly these)
        self.arch_combo.setCurrentText(DEFAULT_ARCH)
        self.epochs = _spin(1, 1000, 10)
        self.batch = _spin(1, 256, 4)
        self.crop = _spin(32, 2048, 321)
        self.crop.setSuffix(" px")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(0.001)
        self.lr.setValue(SCRATCH_LR)
        self.lr.valueChanged.connect(lambda _v: setattr(self, "_lr_edited", not self._setting_lr))
        self.freeze_bn = QCheckBox("Freeze BatchNorm statistics (fine-tuning with small batches)")
        self.painted_only = QCheckBox("Edited images: learn only the pixels a human painted (reviewed images count whole)")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.out_edit = QLineEdit()
        self.out_edit.textEdited.connect(lambda _t: setattr(self, "_out_edited", True))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        sched = QHBoxLayout()
        for label, w in (("Epochs", self.epochs), ("Batch", self.batch), ("Crop", self.crop), ("LR", self.lr)):
            sched.addWidget(QLabel(label))
            sched.addWidget(w)
        sched.addStretch(1)
        form.addRow("Start from", self.start_combo)
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Schedule", sched)
        form.addRow("", self.freeze_bn)
        form.addRow("", self.painted_only)
        form.addRow("Device", self.device)
        form.addRow("Save to", out_row)

    def refresh(self, data_dir: str | Path | None) -> None:
        """Not running: the start points the user has now, and a fresh output file under
        `data_dir` unless the user chose one."""
        self.fill_start_combo()
        if data_dir is not None and (not self._out_edited or not self.out_edit.text()):
            self.out_edit.setText(str(default_output_path(data_dir)))
            self._out_edited = False

    def fill_start_combo(self) -> None:
        keep = self.start_combo.currentData()
        self.start_combo.blockSignals(True)
        self.start_combo.clear()
        model = self.tools.active_model()
        if model is not None and bundled_name(model.path) != VOC_MODEL:
            self.start_combo.addItem(f"Active model: {model.file_name} ({model.arch})", INIT_ACTIVE)
        if voc_model_available():
            self.start_combo.addItem("Bundled Pascal VOC model (DeepLab v3 MobileNetV2, 21 classes; "
                                     "class layer resized to this project's classes)", VOC_MODEL)
        self.start_combo.addItem("ImageNet backbone (random init when the weights can't be had)", INIT_IMAGENET)
        self.start_combo.addItem("Random initialisation", INIT_RANDOM)
        i = self.start_combo.findData(keep)
        self.start_combo.setCurrentIndex(i if i >= 0 else 0)
        self.start_combo.blockSignals(False)
        self._start_changed()

    def _start_changed(self, *_) -> None:
        start = self.start_combo.currentData()
        active = start in (INIT_ACTIVE, VOC_MODEL)  # fine-tune a model: its architecture
        if active:
            arch = self.tools.active_model().arch if start == INIT_ACTIVE else model_card(VOC_MODEL)["arch"]
            if self.arch_combo.findText(arch) < 0:
                self.arch_combo.addItem(arch)
            self.arch_combo.setCurrentText(arch)
        self.arch_combo.setEnabled(not active and not self.tools.run.running)
        folded = start == VOC_MODEL  # batch norm folded into its weights: training keeps it fixed anyway
        self.freeze_bn.setChecked(folded or (active and self.batch.value() < 8))
        self.freeze_bn.setEnabled(not folded)
        if not self._lr_edited:  # a trained model fine-tunes at a lower rate (it keeps what it knows)
            self._setting_lr = True
            self.lr.setValue(FINETUNE_LR if active else SCRATCH_LR)
            self._setting_lr = False

    def request(self, folder: str) -> TrainRequest:
        """The run these settings describe, on the project in `folder`."""
        start = self.start_combo.currentData()
        init = self.tools.active_model().path if start == INIT_ACTIVE else start
        model_start = start in (INIT_ACTIVE, VOC_MODEL)
        return TrainRequest(project_folder=folder, out_path=Path(self.out_edit.text()).expanduser(),
                            arch=None if model_start else self.arch_combo.currentText(), init=init,
                            epochs=self.epochs.value(), batch_size=self.batch.value(), crop=self.crop.value(),
                            lr=self.lr.value(), freeze_bn=self.freeze_bn.isChecked(),
                            device=self.device.currentText(), edited_pixels_only=self.painted_only.isChecked())

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the trained model", self.out_edit.text(),
                                              "DeepLab Studio checkpoint (*.safetensors)")
        if path:
            if not path.endswith(".safetensors"):
                path += ".safetensors"
            self.out_edit.setText(path)
            self._out_edited = True


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


__all__ = ["FINETUNE_LR", "INIT_ACTIVE", "SCRATCH_LR", "TrainSettings"]
