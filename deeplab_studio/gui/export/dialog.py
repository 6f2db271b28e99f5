"""File → Export Dataset…: the format, destination, statuses (and for VOC the validation
fraction, seed, layout, objects); runs the export on a
superqt worker of the dialog's own `JobPool` with a progress bar (on a read-only snapshot of the
project, so only plain values cross threads), then shows a summary and offers to open the
folder. Closing the window stops a running export between images and joins its thread: the
staged export is removed and the destination keeps what it had.

The export itself is `storage.voc.export_voc` for VOC and `storage.formats.project_export.
export_dataset` for the other formats (each staged, re-read by its own reader, swapped into place).
With "VOCdevkit layout" the dataset lands in `<destination>/VOCdevkit/VOC2012`, so
`torchvision.datasets.VOCSegmentation(<destination>, year="2012")` loads it unchanged.
The destination is remembered per project (keyed by its folder): the dialog never pre-fills
another project's export folder. A folder holding another project's export is replaced only
after a question; images that fail are listed in the summary and left out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from deeplab_studio.gui.export.job_status import JobStatus, button_row
from deeplab_studio.gui.workers.background_jobs import JobPool, TaskWorker
from deeplab_studio.storage.formats import FORMATS, writer
from deeplab_studio.storage.formats.project_export import DatasetExport, export_dataset
from deeplab_studio.storage.labelmaps import read_label_png
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc import DEFAULT_STATUSES, ExportSummary, export_voc, other_project_export
from deeplab_studio.storage.voc_format import CLASS_DIR, shown, voc_root_for

EXPORTABLE = (Status.REVIEWED, Status.EDITED, Status.AUTO)


def destination_key(folder: str | Path) -> str:
    """The settings key of a project's last export destination (a hash: any folder name fits)."""
    return "export/destination_of/" + hashlib.sha256(os.fsencode(str(folder))).hexdigest()[:20]


def default_destination(folder: Path) -> str:
    """`<parent>/<name>_voc`, or in the home folder when the path is not valid UTF-8 (Qt would drop bytes)."""
    dest = str(folder.parent / f"{folder.name}_voc")
    return dest if shown(dest) == dest else str(Path.home() / f"{shown(folder.name).replace(chr(92), '_')}_voc")


class ExportCancelled(Exception):
    """The export was stopped (the window closed); its staging folder is removed, nothing written."""


def export_job(task: TaskWorker, folder: str, data_dir: str, destination: Path, fmt: str = "voc",
               **options) -> tuple[ExportSummary | DatasetExport, np.ndarray]:
    """Export a read-only snapshot of the project at `folder` (pool thread); returns the summary
    and the pixel counts per class. Reports (done, total, what); stops between images when cancelled."""

    def progress(done: int, total: int, what: str) -> None:
        if task.cancelled():
            raise ExportCancelled("export cancelled")
        task.report((done, total, what))

    with Project.open(folder, data_dir=data_dir, read_only=True) as project:
        if fmt != "voc":  # the other formats: staged, written, re-read by their own reader, swapped in
            summary = export_dataset(project, destination, fmt, progress=progress, statuses=options["statuses"],
                                     replace_other=options["replace_other"])
            counts = np.zeros(256, np.int64)
            for key in summary.keys:
                counts += np.bincount(project.load_labels(project.record(key)).ravel(), minlength=256)
            return summary, counts
        summary = export_voc(project, destination, progress=progress, **options)
    counts = np.zeros(256, np.int64)
    for voc_id in summary.ids:
        counts += np.bincount(read_label_png(summary.out_dir / CLASS_DIR / f"{voc_id}.png").ravel(), minlength=256)
    return summary, counts


class ExportDialog(QDialog):
    """Non-modal export dialog; `exportFinished(summary)` / `exportFailed(message)` for callers and tests."""

    exportFinished = Signal(object)
    exportFailed = Signal(str)

    def __init__(self, project: Project, settings: QSettings, parent=None) -> None:
        """`parent`: the main window, which calls `shutdown()` when it closes (stops and joins a
        running export), or None."""
        super().__init__(parent)
        self.setWindowTitle("Export dataset")
        self.project, self.settings = project, settings
        self.jobs = JobPool(self, max_threads=1)
        self.job: TaskWorker | None = None
        self.summary: ExportSummary | None = None  # the last VOC export
        self.result: DatasetExport | None = None  # the last export in another format
        last = settings.value(destination_key(project.folder))
        self.destination = QLineEdit(str(last) if last else default_destination(Path(project.folder)))
        self.format = QComboBox()
        for name in ("voc", *(f for f in FORMATS if f != "voc")):
            self.format.addItem(writer(name).title, name)
        self.format.setCurrentIndex(max(0, self.format.findData(str(settings.value("export/format", "voc")))))
        self.format.currentIndexChanged.connect(self._format_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        dest_row = QHBoxLayout()
        dest_row.addWidget(self.destination, 1)
        dest_row.addWidget(browse)
        self.devkit = QCheckBox("VOCdevkit/VOC2012 layout (torchvision root = destination)")
        self.devkit.setChecked(str(settings.value("export/devkit", "true")).lower() != "false")
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(float(settings.value("export/val_fraction", 0.2)))
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(int(settings.value("export/seed", 0)))
        counts = {s: 0 for s in Status}
        for rec in project.records:
            counts[rec.status] += 1
        self.statuses: dict[Status, QCheckBox] = {}
        status_row = QHBoxLayout()
        for status in EXPORTABLE:
            box = QCheckBox(f"{status.value} ({counts[status]})")
            box.setChecked(status in DEFAULT_STATUSES)
            self.statuses[status] = box
            status_row.addWidget(box)
        status_row.addStretch(1)
        self.objects = QCheckBox("Also write SegmentationObject/ (connected components)")
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Destination", dest_row)
        form.addRow("", self.devkit)
        form.addRow("Validation fraction", self.val_fraction)
        form.addRow("Split seed", self.seed)
        form.addRow("Images with status", status_row)
        form.addRow("", self.objects)
        self.status = JobStatus()
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.open_button = QPushButton("Open folder")
        self.open_button.setEnabled(False)
        close = QPushButton("Close")
        self.export_button.clicked.connect(self.start_export)
        self.open_button.clicked.connect(self.open_folder)
        close.clicked.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.status, 1)
        lay.addLayout(button_row(self.open_button, self.export_button, close))
        self.resize(640, 380)
        self._format_changed()

    def fmt(self) -> str:
        return str(self.format.currentData())

    def _format_changed(self, *_) -> None:
        """The split, layout and object options exist for VOC only."""
        voc = self.fmt() == "voc"
        for w in (self.devkit, self.val_fraction, self.seed, self.objects):
            w.setEnabled(voc)

    def layout(self) -> str:
        return "devkit" if self.devkit.isChecked() else "flat"

    def out_dir(self) -> Path:
        """The folder the export writes (for VOC with that layout `<destination>/VOCdevkit/VOC2012`)."""
        destination = Path(self.destination.text().strip()).expanduser()
        return voc_root_for(destination, self.layout()) if self.fmt() == "voc" else destination

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export destination", self.destination.text())
        if folder:
            self.destination.setText(folder)

    def start_export(self) -> bool:
        if self.job is not None:
            return False
        if not self.destination.text().strip():
            self._fail("Choose a destination folder.")
            return False
        statuses = [s for s, box in self.statuses.items() if box.isChecked()]
        if not statuses:
            self._fail("Choose at least one status to export.")
            return False
        replace_other = self._confirm_replacing_other()
        if replace_other is None:
            self.status.say("Export cancelled: choose another destination.")
            return False
        self.settings.setValue(destination_key(self.project.folder), self.destination.text().strip())
        for key, value in (("val_fraction", self.val_fraction.value()), ("seed", self.seed.value()),
                           ("devkit", self.devkit.isChecked()), ("format", self.fmt())):
            self.settings.setValue(f"export/{key}", value)
        destination = Path(self.destination.text().strip()).expanduser()
        options = dict(statuses=statuses, replace_other=replace_other)
        if self.fmt() == "voc":
            options.update(val_fraction=self.val_fraction.value(), seed=self.seed.value(),
                           objects=self.objects.isChecked(), layout=self.layout())
        self.job = self.jobs.start(export_job, str(self.project.folder), str(self.project.data_dir), destination,
                                   self.fmt(), **options, on_result=lambda r: self._finished(*r),
                                   on_error=lambda exc: self._fail(str(exc)),
                                   on_progress=lambda p: self.status.step(*p))
        if self.job is None:
            return False
        self.export_button.setEnabled(False)
        self.status.busy("Exporting…")
        return True

    def shutdown(self, *_) -> bool:
        """Stop a running export between images and join its thread (window closing); True when
        it ended in time. The staged files are removed; the destination keeps what it had."""
        return self.jobs.shutdown()

    def _confirm_replacing_other(self) -> bool | None:
        """False when the target holds no other project's export, True when the user agreed to
        replace it, None when they declined."""
        other = other_project_export(self.project, self.out_dir())
        if other is None:
            return False
        answer = QMessageBox.question(
            self, "Replace another project's export?",
            f"{shown(self.out_dir())} holds the export of another project:\n{other}\n\n"
            "Replace it with this project's export? Its files will be deleted.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return True if answer == QMessageBox.StandardButton.Yes else None

    def _finished(self, result: ExportSummary | DatasetExport, counts: np.ndarray) -> None:
        self.job = None
        if isinstance(result, DatasetExport):
            self._finished_format(result, counts)
            return
        self.summary = result
        self._show_done(result, len(result.ids), "", self.summary_text(result, counts))

    def _show_done(self, result: ExportSummary | DatasetExport, n: int, as_what: str, report: str) -> None:
        """The progress bar full, the buttons back, the one-line message and the report shown."""
        self.export_button.setEnabled(True)
        self.open_button.setEnabled(True)
        failed = f" {len(result.failed)} failed (listed below)." if result.failed else ""
        self.status.finished(f"Exported {n} image{'' if n == 1 else 's'}{as_what} to {shown(result.out_dir)} "
                             f"in {result.seconds:.1f} s.{failed}", report)
        self.exportFinished.emit(result)

    def _finished_format(self, result: DatasetExport, counts: np.ndarray) -> None:
        """A non-VOC export ended: the same message and report, in that format's terms."""
        self.result = result
        lines = [f"images: {len(result.keys)}", f"classes: {result.num_classes}"]
        lines += [f"failed, left out: {reason}" for _path, reason in result.failed]
        lines += self._pixel_lines(counts)
        self._show_done(result, len(result.keys), f" as {writer(result.format).title}", "\n".join(lines))

    def _pixel_lines(self, counts: np.ndarray) -> list[str]:
        names, total = self.project.labels.names, max(int(counts.sum()), 1)
        lines = ["pixels per class:"]
        for i, name in enumerate(names):
            if counts[i]:
                lines.append(f"  {i:>3} {name:<16} {int(counts[i]):>12,}  {100 * counts[i] / total:5.1f} %")
        if counts[255]:
            lines.append(f"  255 {'ignore':<16} {int(counts[255]):>12,}  {100 * counts[255] / total:5.1f} %")
        return lines

    def summary_text(self, summary: ExportSummary, counts: np.ndarray) -> str:
        lines = [f"images: {len(summary.ids)} (train {len(summary.train)}, val {len(summary.val)})",
                 f"classes: {summary.num_classes}",
                 f"JPEGs copied unchanged: {summary.jpegs_copied}, converted: {summary.images_converted}"]
        if summary.skipped:
            lines.append("left out: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.skipped.items())))
        if summary.failed:
            lines.append(f"failed, left out: {len(summary.failed)}")
            lines.extend(f"  {reason}" for _path, reason in summary.failed)
        lines += self._pixel_lines(counts)
        if summary.layout == "devkit":
            lines.append(f'\ntorchvision: VOCSegmentation(root={str(summary.destination)!r}, year="2012", '
                         'image_set="train")')
        return "\n".join(lines)

    def _fail(self, message: str) -> None:
        message = shown(message)
        self.job = None
        self.export_button.setEnabled(True)
        self.status.failed(f"Export failed: {message}")
        self.exportFailed.emit(message)

    def open_folder(self) -> None:
        done = self.result if self.result is not None else self.summary
        if done is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(done.out_dir)))
