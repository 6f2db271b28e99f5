"""Model → "Train on my labels…" and "Re-propose unreviewed auto images": the training tools of
one window and its background `TrainRun` (gui/training/worker.py).

`TrainingTools(link, controller)` appends its two actions to the Model menu through the window
link and shows a status-bar button while a run goes on ("Training 42%", opens the dialog). It
gets from the model controller only what training needs: the active model (`client.model`),
`load_model`, `auto_segment_all` and the `modelChanged`/`modelFailed` signals; it does not know
the window otherwise. Closing the dialog does not stop a run; opening another folder cancels it
(the best model so far is kept); closing the window cancels and joins it.

When a run finishes, its best model becomes the active one through the controller (the previous
one stays in the recent models and one click away).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QToolButton

from deeplab_studio.gui.workers.jobs import ModelInfo
from deeplab_studio.gui.model.actions import make_action
from deeplab_studio.gui.training.dialog import TrainDialog
from deeplab_studio.gui.training.worker import TrainRun, format_eta
from deeplab_studio.ml.train_config import ProgressKind, TrainProgress, TrainResult
from deeplab_studio.storage.records import Status


class TrainingTools(QObject):
    """The training actions of one window and its background run."""

    modelActivated = Signal(str)  # path of the trained model, once the worker has loaded it

    def __init__(self, link, controller, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.link, self.controller = link, controller
        self.run = TrainRun(self)
        self.dialog: TrainDialog | None = None
        self.previous_model: str | None = None  # active before the trained model took over
        self.trained_model: str | None = None
        self.last_result: TrainResult | None = None  # of the last run
        self._pending: str | None = None
        self.act_train = make_action(self, "train_on_labels", "Train on my labels…", self.show_dialog)
        self.act_repropose = make_action(self, "repropose_auto", "Re-propose unreviewed auto images",
                                         self.repropose)
        link.add_menu("Model", [None, self.act_train, self.act_repropose])
        self.status_button = QToolButton()  # "Training 42% · ETA 1:05" while a run goes on; opens the dialog
        self.status_button.setAutoRaise(True)
        self.status_button.setToolTip("Training on your labels: click to show the chart")
        self.status_button.clicked.connect(self.show_dialog)
        self.status_button.hide()
        link.add_status_widget(self.status_button)
        controller.modelChanged.connect(self._on_model_loaded)
        controller.modelFailed.connect(self._on_model_failed)
        self.run.progress.connect(self._on_progress)
        self.run.finished.connect(self._on_finished)
        self.run.failed.connect(self._on_failed)
        self.run.started.connect(lambda _req: self._show_status("Training…"))
        self.run.stopped.connect(self.status_button.hide)
        link.on_close(self.shutdown)
        link.on_project_changed(self._on_project_changed)

    # --- actions -----------------------------------------------------------------------------
    def show_dialog(self) -> TrainDialog:
        if self.dialog is None:
            self.dialog = TrainDialog(self, self.link.parent_widget())
        self.dialog.refresh()
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def active_model(self) -> ModelInfo | None:
        return self.controller.client.model

    def activate(self, path: str | Path) -> None:
        """Make the checkpoint at `path` the active model (loaded by the inference worker)."""
        current = self.active_model()
        if current is not None and current.path != str(path):
            self.previous_model = current.path
        self._pending = str(path)
        self.controller.load_model(str(path), current.device if current else "auto")

    def switch_back(self) -> None:
        if self.previous_model:
            current = self.active_model()
            self.controller.load_model(self.previous_model, current.device if current else "auto")

    def repropose(self) -> int | None:
        """Re-run the active model over the unreviewed auto proposals (human pixels are kept)."""
        return self.controller.auto_segment_all(statuses=(Status.AUTO,))

    def shutdown(self, *_) -> bool:
        """Cancel the run and join its thread (window closing)."""
        return self.run.shutdown()

    # --- events ------------------------------------------------------------------------------
    def _show_status(self, text: str) -> None:
        self.status_button.setText(text)
        self.status_button.show()

    def _on_progress(self, ev: TrainProgress) -> None:
        if ev.kind in (ProgressKind.STEP, ProgressKind.EPOCH) and ev.total_steps:
            self._show_status(f"Training {100 * ev.step // ev.total_steps}%")
            miou = f", val mIoU {ev.val_miou:.3f}" if ev.val_miou is not None else ""
            self.status_button.setToolTip(f"Training on your labels: epoch {ev.epoch}/{ev.epochs}{miou}, "
                                          f"ETA {format_eta(ev.eta_s)}. Click to show the chart.")
        if self.dialog is not None:
            self.dialog.on_progress(ev)

    def _on_finished(self, result: TrainResult | None) -> None:
        self.last_result = result
        if self.dialog is not None:
            self.dialog.on_finished(result)
        if result is not None and result.saved:
            self.trained_model = str(result.out_path)
            if not result.cancelled:
                self.activate(result.out_path)

    def _on_failed(self, message: str) -> None:
        if self.dialog is not None:
            self.dialog.on_failed(message)
        self.link.show_error("Training failed", message)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        if self._pending is not None and info.path == self._pending:
            self._pending = None
            self.modelActivated.emit(info.path)
        if self.dialog is not None:
            self.dialog.on_model_changed()

    def _on_model_failed(self, message: str) -> None:
        if self._pending is not None:
            path, self._pending = self._pending, None
            if self.dialog is not None:
                self.dialog.on_activation_failed(path, message)

    def _on_project_changed(self, *_) -> None:
        if self.run.running:
            self.run.cancel()
            self.link.show_message("Training cancelled: another folder was opened "
                                   "(the best model so far is kept).", 8000)
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.refresh()


__all__ = ["TrainingTools"]
