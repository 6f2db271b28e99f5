"""Model dialog: choose and load a checkpoint, pick the device, map its classes onto the project's.

- Open a checkpoint file (own format, VainF, torchvision: `load_checkpoint` detects which), a
  recent model, a bundled model (its card from `deeplab_studio.models`), or download torchvision's pretrained
  DeepLabV3 weights (progress and hash check by `ml.hub`; offline gives a clear message).
- The device list (auto / CPU / each CUDA GPU with name and memory) is probed in the worker
  thread, so the dialog never imports torch in the GUI thread.
- After loading: arch, classes, output stride and device; a table maps each model class to a
  project class (matched by name), unmatched classes go to background or ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QTableWidget, QVBoxLayout, QWidget)

from deeplab_studio.core.labels import BACKGROUND, IGNORE
from deeplab_studio.gui.workers.background_jobs import JobPool, TaskWorker
from deeplab_studio.gui.workers.jobs import ModelInfo

CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.pth *.pt *.bin);;All files (*)"

#: torchvision's pretrained DeepLabV3 weights (COCO subset with the 20 VOC categories)
TORCHVISION_MODELS = ("deeplabv3_resnet50", "deeplabv3_resnet101")


def model_cards(folder: Path | None = None) -> list[dict]:
    """Model cards with `weights_path` resolved: the bundled models' (VOC model first), or every
    readable `*.json` card in `folder`."""
    if folder is None:
        return bundled_cards()
    cards = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(card, dict) or "arch" not in card:
            continue
        weights = card.get("file") or card.get("weights")
        card["weights_path"] = str(folder / weights) if weights else None
        card["card_path"] = str(path)
        cards.append(card)
    return cards


def bundled_cards() -> list[dict]:
    """The cards of the bundled models (`deeplab_studio.models`), the VOC model first."""
    from deeplab_studio.gui.model.offer import bundled_weights
    from deeplab_studio.models import VOC_MODEL, bundled_models, model_card

    cards = []
    for name in sorted(bundled_models(), key=lambda n: n != VOC_MODEL):
        try:
            card = dict(model_card(name))
        except (LookupError, OSError, ValueError):
            continue
        if "arch" in card:
            card.update(weights_path=bundled_weights(name), card_path=f"{name}.json", bundled=name)
            cards.append(card)
    return cards


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


class DownloadCancelled(Exception):
    pass


def fetch_job(task: TaskWorker, name: str) -> str:
    """Download torchvision weights `name` (pool thread); reports (bytes done, bytes in all)."""
    from deeplab_studio.ml.checkpoints import fetch_torchvision_weights

    def progress(done: int, total: int | None) -> None:
        if task.cancelled():  # the hub aborts and keeps no partial file
            raise DownloadCancelled(f"download of {name} cancelled")
        task.report((int(done), int(total or 0)))

    return str(fetch_torchvision_weights(name, progress=progress))


class WeightsDownload(QObject):
    """Fetch torchvision weights on the controller's job pool (joined when the window closes);
    reports bytes and the final path or the error. A child of the controller, so closing the
    dialog does not stop it; `cancel()` makes the next progress report abort the download."""

    progress = Signal(int, int)
    done = Signal(str, str)  # path, error message ("" when fine)

    def __init__(self, name: str, jobs: JobPool, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.worker = jobs.start(fetch_job, name, on_result=lambda path: self.done.emit(path, ""),
                                 on_error=self._failed, on_progress=lambda p: self.progress.emit(*p))
        if self.worker is None:
            raise RuntimeError("the window is closing: no download starts")

    def cancel(self) -> None:
        self.worker.cancel()

    def _failed(self, exc: BaseException) -> None:  # offline, hash mismatch, unknown name, cancelled
        self.done.emit("", str(exc) or type(exc).__name__)


class ModelDialog(QDialog):
    def __init__(self, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model")
        self.controller = controller
        self.client = controller.client
        self._download: WeightsDownload | None = None
        self._build()
        self.client.devicesProbed.connect(self._on_devices)
        self.client.modelLoaded.connect(self._on_loaded)
        self.client.modelFailed.connect(self._on_failed)
        self.client.probe_devices()
        self._show_model(self.client.model)

    # --- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.models = QListWidget()
        self.models.itemDoubleClicked.connect(lambda *_: self.load_selected())
        self.refresh_models()
        self.load_button = QPushButton("Load selected")
        self.load_button.clicked.connect(self.load_selected)
        self.open_button = QPushButton("Open checkpoint file…")
        self.open_button.clicked.connect(self.open_file)
        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addWidget(self.open_button)

        self.tv_combo = QComboBox()
        self.tv_combo.addItems(TORCHVISION_MODELS)
        self.tv_button = QPushButton("Download")
        self.tv_button.clicked.connect(self.download_torchvision)
        self.tv_progress = QProgressBar()
        self.tv_progress.hide()
        tv_row = QHBoxLayout()
        tv_row.addWidget(self.tv_combo, 1)
        tv_row.addWidget(self.tv_button)
        tv_box = QGroupBox("torchvision pretrained DeepLabV3 (download)")
        tv_layout = QVBoxLayout(tv_box)
        tv_layout.addLayout(tv_row)
        tv_layout.addWidget(self.tv_progress)

        self.device = QComboBox()
        self.device.addItem("Auto", "auto")
        self.device.addItem("CPU", "cpu")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.info = QLabel("No model loaded.")
        self.info.setWordWrap(True)
        self.unmatched = QComboBox()
        self.unmatched.addItem("background", BACKGROUND)
        self.unmatched.addItem("ignore (255)", IGNORE)
        current = self.controller.unmatched_target()
        self.unmatched.setCurrentIndex(0 if current == BACKGROUND else 1)
        self.unmatched.currentIndexChanged.connect(self._on_unmatched_changed)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Model class", "Project class"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()  # row numbers from 1 would contradict model class indices from 0

        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Unmatched model classes →", self.unmatched)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        self.apply_button = buttons.addButton("Apply mapping", QDialogButtonBox.ButtonRole.ApplyRole)
        self.apply_button.clicked.connect(self.apply_mapping)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Models (bundled with DeepLab Studio, then recent files):"))
        layout.addWidget(self.models)
        self.models.setMaximumHeight(150)  # the class table below needs the room
        layout.addLayout(row)
        layout.addWidget(tv_box)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.info)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
        self.resize(560, 640)

    def refresh_models(self) -> None:
        """List the model cards, then recent files not already listed; the active model is marked."""
        self.models.clear()
        active = self.client.model.path if self.client.model is not None else None
        listed: set[str] = set()

        def add(text: str, path: str | None, tip: str) -> None:
            if path and active and _same(path, active):
                text = "(active)  " + text  # first, so a narrow list still shows it
            item = QListWidgetItem(text)
            item.setData(256, path)
            item.setToolTip(tip)
            self.models.addItem(item)
            if path:
                listed.add(str(Path(path).resolve()))

        for card in model_cards():
            path = card.get("weights_path")
            missing = "" if path and Path(path).is_file() else "  (weights missing)"
            bundled = "Bundled: " if card.get("bundled") else ""
            add(f"{bundled}{card.get('name', card['card_path'])}  ·  {card['arch']}{missing}", path,
                card.get("description", ""))
        for path in self.controller.recent_models():
            if str(Path(path).resolve()) not in listed:
                add(f"Recent: {Path(path).name}", path, path)

    # --- loading -----------------------------------------------------------------------------
    def selected_device(self) -> str:
        return str(self.device.currentData())

    def load_path(self, path: str) -> None:
        self.status.setText(f"Loading {Path(path).name} on {self.device.currentText()}…")
        self.controller.load_model(path, self.selected_device())

    def load_selected(self) -> None:
        item = self.models.currentItem()
        path = item.data(256) if item is not None else None
        if not path or not Path(path).is_file():
            self.status.setText("Choose a model whose weights file exists, or open a checkpoint file.")
            return
        self.load_path(path)

    def open_file(self) -> None:
        recent = self.controller.recent_models()
        start = str(Path(recent[0]).parent) if recent else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open checkpoint", start, CHECKPOINT_FILTER)
        if path:
            self.load_path(path)

    def download_torchvision(self) -> None:
        if self._download is not None:
            return
        name = self.tv_combo.currentText()
        self.tv_progress.setRange(0, 0)
        self.tv_progress.show()
        self.tv_button.setEnabled(False)
        self.status.setText(f"Downloading {name}…")
        self._download = WeightsDownload(name, self.controller.jobs, self.controller)  # outlives the dialog
        self._download.progress.connect(self._on_download_progress)
        self._download.done.connect(self._on_download_done)

    def _on_download_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.tv_progress.setRange(0, total)
            self.tv_progress.setValue(done)

    def downloading(self) -> bool:
        """Whether a download this dialog started is still running."""
        return self._download is not None

    def _on_download_done(self, path: str, error: str) -> None:
        if self._download is not None:
            self._download.deleteLater()
        self._download = None
        self.tv_progress.hide()
        self.tv_button.setEnabled(True)
        if error:
            self.status.setText(f"Download failed: {error}")
            return
        self.load_path(path)

    def _on_devices(self, devices: list) -> None:
        current = self.selected_device()
        self.device.clear()
        for name, label in devices:
            self.device.addItem(label, name)
        i = self.device.findData(current)
        self.device.setCurrentIndex(max(i, 0))

    def _on_loaded(self, info: ModelInfo) -> None:
        self.status.setText(f"Loaded {info.file_name}.")
        self.refresh_models()
        self._show_model(info)

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"Could not load the model: {message}")

    # --- info and class mapping --------------------------------------------------------------
    def _show_model(self, info: ModelInfo | None) -> None:
        if info is None:
            return
        names = info.class_names or [f"class {i}" for i in range(info.num_classes)]
        self.info.setText(
            f"<b>{info.file_name}</b><br>arch {info.arch}, output stride {info.output_stride}, "
            f"{info.num_classes} classes, device {info.device_label}<br>classes: {', '.join(names)}")
        self._fill_table()

    def _fill_table(self) -> None:
        mapping = self.controller.mapping
        labelset = self.controller.link.labelset()
        self.table.setRowCount(0)
        if mapping is None or labelset is None:
            return
        self.table.setRowCount(len(mapping.model_names))
        for i, (name, target) in enumerate(zip(mapping.model_names, mapping.targets)):
            self.table.setCellWidget(i, 0, QLabel(name))
            combo = QComboBox()
            for j, pname in enumerate(labelset.names):
                combo.addItem(pname, j)
            combo.addItem("ignore (255)", IGNORE)
            combo.setCurrentIndex(max(combo.findData(target), 0))
            self.table.setCellWidget(i, 1, combo)

    def table_targets(self) -> list[int]:
        return [int(self.table.cellWidget(i, 1).currentData()) for i in range(self.table.rowCount())]

    def apply_mapping(self) -> None:
        """Use the table's choices for the model's classes."""
        mapping = self.controller.mapping
        if mapping is None:
            return
        mapping.targets = self.table_targets()
        self.controller.set_mapping(mapping)
        self.status.setText("Class mapping applied.")

    def _on_unmatched_changed(self) -> None:
        if self.controller.set_unmatched_target(int(self.unmatched.currentData())) is not None:
            self._fill_table()

    def done(self, r: int) -> None:  # noqa: D401 - QDialog API
        if self._download is not None:  # keeps going; the controller loads the model when it lands
            self._download.progress.disconnect(self._on_download_progress)
            self._download.done.disconnect(self._on_download_done)
            self._download.done.connect(self.controller.download_finished)
            self._download.done.connect(self._download.deleteLater)
            self._download = None
        for sig, slot in ((self.client.devicesProbed, self._on_devices), (self.client.modelLoaded, self._on_loaded),
                          (self.client.modelFailed, self._on_failed)):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(r)
