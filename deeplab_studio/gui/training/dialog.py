"""The "Train on my labels" dialog: a run's settings, its live chart and its outcome.

Settings: architecture, start point (the active model's checkpoint, the bundled Pascal VOC model
— the first choice when no model of the user's is active; its class layer is resized to the
project's classes, rows of classes with the same name kept — an ImageNet backbone when its
weights can be had, or random init), epochs, batch size, crop, learning rate, output path
(`<data dir>/models/<timestamp>.safetensors`); how many `edited`/`reviewed` images train (never
the unreviewed `auto` proposals); a live chart of the loss and the validation mIoU; ETA; Cancel.
After a cancel the best model so far is kept and can be made active, and Resume continues the
run from the step it stopped at (its resume state, `<out stem>.last.pt`).

The dialog belongs to the window's `TrainingTools` (gui/training/tools.py), which it is given:
the run, the active model and the window link come from there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from deeplab_studio.gui.model.offer import bundled_name, voc_model_available
from deeplab_studio.gui.training.worker import (INIT_IMAGENET, INIT_RANDOM, TrainRequest, default_output_path,
                                            format_eta, training_counts)
from deeplab_studio.gui.training.chart import TrainingChart
from deeplab_studio.ml.arch_names import ARCH_NAMES, DEFAULT_ARCH
from deeplab_studio.ml.train_config import ProgressKind, TrainProgress, TrainResult
from deeplab_studio.models import VOC_MODEL, model_card

if TYPE_CHECKING:
    from deeplab_studio.gui.training.tools import TrainingTools

INIT_ACTIVE = "active"
SCRATCH_LR, FINETUNE_LR = 0.01, 0.001  # as `deeplab-studio train` (commands/train.py: default_lr)


def _name(path: str | Path) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


class TrainDialog(QDialog):
    """The settings, the live chart and the outcome of one training run at a time."""

    def __init__(self, tools: TrainingTools, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tools = tools
        self.setWindowTitle("Train on my labels")
        self._out_edited = False
        self._setting_lr = False
        self._rate: float | None = None  # images/s of the last step event
        self._last_request: TrainRequest | None = None  # the run started last
        self._resumable: TrainRequest | None = None  # a cancelled run whose resume state is on disk
        self._build()
        tools.modelActivated.connect(self._on_activated)
        tools.run.started.connect(lambda _req: self._set_running(True))
        tools.run.stopped.connect(lambda: self._set_running(False))

    # --- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        data_box = QGroupBox("Training data")
        QVBoxLayout(data_box).addWidget(self.data_label)
        root.addWidget(data_box)

        self.settings_box = QGroupBox("Model and schedule")
        form = QFormLayout(self.settings_box)
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
        self._lr_edited = False  # the user chose a rate: switching the start point keeps it
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
        root.addWidget(self.settings_box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("not started")
        self.status_label = QLabel("Not started.")
        self.chart = TrainingChart()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(300)
        self.log.setFixedHeight(self.fontMetrics().height() * 4 + 12)
        root.addWidget(self.progress)
        root.addWidget(self.status_label)
        root.addWidget(self.chart, 1)
        root.addWidget(self.log)

        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        root.addWidget(self.result_label)
        after = QHBoxLayout()
        self.use_button = QPushButton("Make it the active model")
        self.use_button.clicked.connect(self._use_result)
        self.repropose_button = QPushButton("Re-propose unreviewed auto images")
        self.repropose_button.setToolTip("Run the active model again over the images whose labels are "
                                         "unreviewed model proposals; human-painted pixels are kept.")
        self.repropose_button.clicked.connect(self._repropose)
        self.back_button = QPushButton("Switch back to the previous model")
        self.back_button.clicked.connect(self.tools.switch_back)
        for b in (self.use_button, self.repropose_button, self.back_button):
            b.setEnabled(False)
            after.addWidget(b)
        after.addStretch(1)
        root.addLayout(after)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the cancelled run from the step it stopped at")
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self.resume)
        close = QPushButton("Close")
        close.setToolTip("Hide this window; a run goes on in the background")
        close.clicked.connect(self.hide)
        for b in (self.start_button, self.resume_button, self.cancel_button, close):
            buttons.addWidget(b)
        root.addLayout(buttons)
        self.resize(720, 720)

    # --- state -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the project's counts and the active model (called when shown)."""
        project = self.tools.link.project()
        running = self.tools.run.running
        if not running:  # while a run goes on, its settings stay on show
            self._fill_start_combo()
        if project is None:
            self.data_label.setText("Open a folder first: training uses its edited and reviewed images.")
            self.start_button.setEnabled(False)
            return
        c = training_counts(project)
        n = c["trainable"]
        text = (f"<b>{n}</b> image{'s' if n != 1 else ''} will train: {c['edited']} edited, {c['reviewed']} "
                f"reviewed (about 20% held out for validation). Not used: {c['auto']} unreviewed auto "
                f"proposal{'s' if c['auto'] != 1 else ''} and {c['unlabeled']} unlabeled.")
        if n < 2:
            text += ("<br><span style='color:#b00020'>Training needs at least 2 edited or reviewed images: "
                     "correct some proposals with the brush or mark images reviewed first.</span>")
        self.data_label.setText(text)
        self.start_button.setEnabled(n >= 2 and not running)
        if not running and (not self._out_edited or not self.out_edit.text()):
            self.out_edit.setText(str(default_output_path(project.data_dir)))
            self._out_edited = False

    def _fill_start_combo(self) -> None:
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

    def _set_running(self, running: bool) -> None:
        self.settings_box.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setText("Cancel training")
        self.resume_button.setEnabled(not running and self._resumable is not None)
        if running:
            self.start_button.setEnabled(False)
        else:
            self.refresh()

    def request(self) -> TrainRequest:
        """The run the dialog's settings describe (a folder must be open)."""
        folder = self.tools.link.project_folder()
        if folder is None:
            raise RuntimeError("no folder is open: nothing to train on")
        start = self.start_combo.currentData()
        init = self.tools.active_model().path if start == INIT_ACTIVE else start
        model_start = start in (INIT_ACTIVE, VOC_MODEL)
        return TrainRequest(project_folder=folder, out_path=Path(self.out_edit.text()).expanduser(),
                            arch=None if model_start else self.arch_combo.currentText(), init=init,
                            epochs=self.epochs.value(), batch_size=self.batch.value(), crop=self.crop.value(),
                            lr=self.lr.value(), freeze_bn=self.freeze_bn.isChecked(),
                            device=self.device.currentText(), edited_pixels_only=self.painted_only.isChecked())

    # --- buttons -----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a run with the current settings; False (with the reason shown) if it cannot."""
        link = self.tools.link
        if self.tools.run.running:
            return False
        if link.project() is None:
            self._show_result("Open a folder first.", error=True)
            return False
        out = self.out_edit.text().strip()
        if not out or not out.endswith(".safetensors"):
            self._show_result("The output file must end in .safetensors.", error=True)
            return False
        return self._launch(self.request())

    def resume(self) -> bool:
        """Continue the last cancelled run (its settings, its output file) from where it stopped."""
        if self.tools.run.running or self._resumable is None:
            return False
        return self._launch(replace(self._resumable, resume=True))

    def _launch(self, req: TrainRequest) -> bool:
        self.tools.link.flush_saves()  # the image on screen trains with its latest strokes (read from disk)
        self._last_request = req
        self.chart.clear(0, req.epochs)
        self._rate = None
        self.progress.setRange(0, 0)  # busy until the first step
        self.progress.setFormat("starting…")
        self.log.clear()
        self.status_label.setText("Reading the labelled images…")
        self._show_result("")
        self.use_button.setEnabled(False)
        self.repropose_button.setEnabled(False)
        return self.tools.run.start(req)

    def cancel(self) -> None:
        self.tools.run.cancel()
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")
        self.status_label.setText(self.status_label.text() + " · cancelling after this step")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the trained model", self.out_edit.text(),
                                              "DeepLab Studio checkpoint (*.safetensors)")
        if path:
            if not path.endswith(".safetensors"):
                path += ".safetensors"
            self.out_edit.setText(path)
            self._out_edited = True

    def _use_result(self) -> None:
        if self.tools.trained_model:
            self.use_button.setEnabled(False)
            self._show_result(f"Loading {_name(self.tools.trained_model)}…")
            self.tools.activate(self.tools.trained_model)

    def _repropose(self) -> None:
        batch = self.tools.repropose()
        if batch is not None:
            self._show_result("Re-proposing the unreviewed auto images with the active model "
                              "(progress in the status bar).")

    # --- run events ----------------------------------------------------------------------------
    def on_progress(self, ev: TrainProgress) -> None:
        if ev.kind == ProgressKind.MESSAGE:
            self.log.appendPlainText(ev.message)
            return
        if ev.kind == ProgressKind.STEP:
            self.progress.setFormat("step %v / %m")
            self.progress.setRange(0, max(1, ev.total_steps))
            self.progress.setValue(ev.step)
            self.chart.add_loss(ev.step, ev.loss, ev.total_steps)
        elif ev.kind == ProgressKind.EPOCH:
            self.progress.setValue(ev.step)
            self.chart.add_epoch(ev.step, ev.epoch, ev.val_miou)
            miou = f"{ev.val_miou:.3f}" if ev.val_miou is not None else "–"
            self.log.appendPlainText(f"epoch {ev.epoch}/{ev.epochs}: loss {ev.loss:.4f}, val mIoU {miou}"
                                     + (" (new best)" if ev.message == "new best" else ""))
        elif ev.kind == ProgressKind.DONE:
            return
        parts = [f"Epoch {ev.epoch}/{ev.epochs}", f"step {ev.step}/{ev.total_steps}"]
        if ev.loss is not None:
            parts.append(f"loss {ev.loss:.3f}")
        if ev.val_miou is not None:
            parts.append(f"val mIoU {ev.val_miou:.3f}" + (f" (best {ev.best_miou:.3f})" if ev.best_miou else ""))
        self._rate = ev.images_per_s or self._rate
        if self._rate:
            parts.append(f"{self._rate:.1f} img/s")
        parts.append(f"ETA {format_eta(ev.eta_s)}")
        self.status_label.setText(" · ".join(parts))

    def on_finished(self, result: TrainResult | None) -> None:
        self.progress.setFormat("step %v / %m")
        if result is None:
            self.progress.setRange(0, 1)
            self.status_label.setText("Cancelled before training started.")
            return
        best = (f"best val mIoU {result.best_miou:.3f} (epoch {result.best_epoch})"
                if result.best_miou is not None else "no validation score")
        self._resumable = self._last_request if result.cancelled and Path(result.last_path).is_file() else None
        self.resume_button.setEnabled(self._resumable is not None)
        if result.cancelled:
            self.status_label.setText(f"Cancelled at step {result.steps}.")
            if result.saved:
                self._show_result(f"Cancelled. The best model so far is kept: {result.out_path} ({best}).")
                self.use_button.setEnabled(True)
            else:
                self._show_result("Cancelled before the first epoch ended: no model was saved.")
            return
        self.status_label.setText(f"Finished {result.epochs_done} epochs, {result.steps} steps in "
                                  f"{format_eta(result.seconds)}.")
        self._show_result(f"Trained: {result.out_path} ({best}). Loading it as the active model…")

    def on_failed(self, message: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setFormat("not trained")
        self.status_label.setText("Training stopped with an error.")
        self._show_result(f"Training failed: {message}", error=True)

    def _on_activated(self, path: str) -> None:
        prev = self.tools.previous_model
        text = f"Active model: {_name(path)} (newly trained"
        res = self.tools.last_result
        if res is not None and str(res.out_path) == path and res.best_miou is not None:
            text += f"; best val mIoU {res.best_miou:.3f} at epoch {res.best_epoch}"
        text += ")."
        if prev:
            text += (f" The previous model {_name(prev)} stays in Model → Open model… (recent models) "
                     "or one click away below.")
        self._show_result(text)
        self.repropose_button.setEnabled(True)
        self.back_button.setEnabled(bool(prev))

    def on_activation_failed(self, path: str, message: str) -> None:
        self._show_result(f"The trained model {path} could not be loaded: {message}", error=True)
        self.use_button.setEnabled(True)

    def on_model_changed(self) -> None:
        if not self.tools.run.running:
            self._fill_start_combo()

    def _show_result(self, text: str, *, error: bool = False) -> None:
        self.result_label.setStyleSheet("color: #b00020;" if error else "")
        self.result_label.setText(text)


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


__all__ = ["FINETUNE_LR", "INIT_ACTIVE", "SCRATCH_LR", "TrainDialog"]
