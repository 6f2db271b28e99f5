"""File → Import Dataset…: a dataset in any format the app reads (auto-detected or chosen) into
the open project (or a folder), on a superqt worker with a progress bar. The window's project
is released for the import (the import takes the write lock itself) and reopened after it, so
the imported images and classes appear; a failed import leaves nothing behind (the storage
layer's rule) and the project reopens as it was."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit,
                               QPushButton, QVBoxLayout)

from deeplab_studio.gui.export.job_status import JobStatus, button_row

from deeplab_studio.gui.workers.background_jobs import JobPool, TaskWorker
from deeplab_studio.session.annotation_session import AnnotationSession
from deeplab_studio.storage.formats import FORMATS, detect, reader
from deeplab_studio.storage.formats.project_import import ImportSummary, import_dataset
from deeplab_studio.storage.voc_format import shown


def import_job(task: TaskWorker, source: str, fmt: str, into: str, *, overwrite: bool,
               classes_file: str | None) -> ImportSummary:
    """Read `source` as `fmt` and import it into the project of `into` (pool thread)."""
    dataset = reader(fmt).read(Path(source))
    return import_dataset(dataset, into, classes_file=classes_file or None, overwrite=overwrite,
                          progress=lambda done, total, what: task.report((done, total, what)),
                          cancel=task.cancelled)


def summary_text(s: ImportSummary) -> str:
    lines = [f"format: {reader(s.format).title if s.format in FORMATS else s.format}",
             f"imported: {s.imported} label maps ({s.copied} images copied, {s.identical} already there)",
             f"classes: {len(s.classes)}"]
    lines += [f"note: {n}" for n in s.notes]
    if s.plan is not None:
        lines.append(s.plan.summary())
    lines += [f"kept the project's edited map: {k}" for k in s.conflicts]
    lines += [f"failed: {reason}" for _key, reason in s.failed]
    return "\n".join(lines)


class ImportDialog(QDialog):
    """`importFinished(summary)` / `importFailed(message)` for callers and tests."""

    importFinished = Signal(object)
    importFailed = Signal(str)

    def __init__(self, session: AnnotationSession, settings: QSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import dataset")
        self.session, self.settings = session, settings
        self.jobs = JobPool(self, max_threads=1)
        self.job: TaskWorker | None = None
        self.summary: ImportSummary | None = None
        self._reopen = False  # the window's project was released for this import: reopen it after
        self.source = QLineEdit(str(settings.value("import/source", "")))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(browse)
        self.format = QComboBox()
        self.format.addItem("Detect automatically", "auto")
        for name in FORMATS:
            self.format.addItem(reader(name).title, name)
        folder = str(session.project.folder) if session.project is not None else ""
        self.into = QLineEdit(folder)
        self.into.setReadOnly(bool(folder))  # into the open project; a folder to create otherwise
        self.classes_file = QLineEdit()
        self.classes_file.setPlaceholderText("optional: lines 'dataset name = project name'")
        self.overwrite = QCheckBox("Replace label maps a human already edited")
        form = QFormLayout()
        form.addRow("Dataset", row)
        form.addRow("Format", self.format)
        form.addRow("Into project", self.into)
        form.addRow("Class mapping", self.classes_file)
        form.addRow("", self.overwrite)
        self.status = JobStatus()
        self.import_button = QPushButton("Import")
        self.import_button.setDefault(True)
        self.import_button.clicked.connect(self.start_import)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.status, 1)
        lay.addLayout(button_row(self.import_button, close))
        self.resize(620, 360)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.source.text())
        if folder:
            self.source.setText(folder)

    def start_import(self) -> bool:
        """Detect the format if asked, release the project, start the import; False (with the
        reason shown) when it cannot start."""
        if self.job is not None:
            return False
        source, into = self.source.text().strip(), self.into.text().strip()
        if not source or not into:
            self._fail("Choose the dataset and the project folder.")
            return False
        fmt = str(self.format.currentData())
        try:
            if fmt == "auto":
                fmt = detect(source)
                self.status.say(f"Detected {reader(fmt).title}.")
        except Exception as exc:  # noqa: BLE001 - one line in the dialog
            self._fail(str(exc))
            return False
        self.settings.setValue("import/source", source)
        self._reopen = self.session.project is not None and Path(into).resolve() == Path(self.session.project.folder)
        if self._reopen and not self.session.release_project():
            self._fail(f"{self.session.last_message} — the open image must be saved first.")
            return False
        self.job = self.jobs.start(import_job, source, fmt, into, overwrite=self.overwrite.isChecked(),
                                   classes_file=self.classes_file.text().strip() or None,
                                   on_result=self._finished, on_error=lambda exc: self._fail(str(exc)),
                                   on_progress=lambda p: self.status.step(p[0], p[1], shown(p[2])))
        self.import_button.setEnabled(False)
        self.status.busy()
        return True

    def shutdown(self, *_) -> bool:
        """Stop a running import between items and join its thread (window closing)."""
        return self.jobs.shutdown()

    def _resume(self) -> None:
        if self._reopen:
            self._reopen = False
            self.session.open_folder(self.into.text().strip(), prefer_key=None)

    def _finished(self, summary: ImportSummary) -> None:
        self.job, self.summary = None, summary
        self._resume()
        self.import_button.setEnabled(True)
        failed = f" {len(summary.failed)} failed (listed below)." if summary.failed else ""
        self.status.finished(f"Imported {summary.imported} label maps into {shown(self.into.text())}.{failed}",
                             summary_text(summary))
        self.importFinished.emit(summary)

    def _fail(self, message: str) -> None:
        message = shown(message)
        self.job = None
        self._resume()
        self.import_button.setEnabled(True)
        self.status.failed(f"Import failed: {message}")
        self.importFailed.emit(message)
