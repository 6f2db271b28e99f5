"""The "Train on my labels" dialog: a run's settings, its live chart and its outcome.

The settings (start point, architecture, schedule, device, output file) are `TrainSettings`
(gui/training/settings.py); the dialog shows how many `edited`/`reviewed` images train (never
the unreviewed `auto` proposals), a live chart of the loss and the validation mIoU, the ETA and
Cancel. After a cancel the best model so far is kept and can be made active, and Resume continues
the run from the step it stopped at (its resume state, `<out stem>.last.pt`).

The dialog belongs to the window's `TrainingTools` (gui/training/tools.py), which it is given:
the run, the active model and the window link come from there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (QDialog, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QVBoxLayout, QWidget)

from deeplab_studio.gui.training.chart import TrainingChart
from deeplab_studio.gui.training.settings import TrainSettings
from deeplab_studio.gui.training.worker import TrainRequest, format_eta, training_counts
from deeplab_studio.ml.train_config import ProgressKind, TrainProgress, TrainResult

if TYPE_CHECKING:
    from deeplab_studio.gui.training.tools import TrainingTools

def _name(path: str | Path) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


class TrainDialog(QDialog):
    """The settings, the live chart and the outcome of one training run at a time."""

    def __init__(self, tools: TrainingTools, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tools = tools
        self.setWindowTitle("Train on my labels")
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

        self.settings = TrainSettings(self.tools)
        root.addWidget(self.settings)

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
            self.settings.refresh(project.data_dir if project is not None else None)
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

    def _set_running(self, running: bool) -> None:
        self.settings.setEnabled(not running)
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
        return self.settings.request(folder)

    # --- buttons -----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a run with the current settings; False (with the reason shown) if it cannot."""
        link = self.tools.link
        if self.tools.run.running:
            return False
        if link.project() is None:
            self._show_result("Open a folder first.", error=True)
            return False
        out = self.settings.out_edit.text().strip()
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
        if self._resumable is not None:  # the settings box may show a new run's file by now
            self.resume_button.setToolTip(f"Continue {_name(result.out_path)} from step {result.steps}")
        if result.cancelled:
            self.status_label.setText(f"Cancelled at step {result.steps}."
                                      + (" Resume continues this run." if self._resumable is not None else ""))
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
            self.settings.fill_start_combo()

    def _show_result(self, text: str, *, error: bool = False) -> None:
        self.result_label.setStyleSheet("color: #b00020;" if error else "")
        self.result_label.setText(text)


__all__ = ["TrainDialog"]
