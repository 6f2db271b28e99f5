"""Model in the loop: the Model menu's actions, attached to the main window from outside.

`ModelController(window)` owns the `InferenceClient` (the worker thread) and talks to the window
only through `WindowLink` (gui/window_link.py), which names every window method it uses.

- Auto-segment (Ctrl+R): a proposal for the current image fills only pixels no human painted,
  as one undoable command; the status becomes `auto` unless a human edited the image.
- Auto-segment all: every `unlabeled`/`auto` image as a batch (progress, images/s, ETA, Cancel);
  results for images not on screen are merged into their saved label maps the same way.
- Refine proposals with CRF (setting, on by default); Snap to edges (Ctrl+Shift+R) runs the CRF
  on the current label map in the thread pool, human pixels protected.
- Uncertainty: each proposal's confidence is kept; an overlay toggle shows it; "Next most
  uncertain image" orders the images not yet reviewed by mean uncertainty.
- The last model used in a project is remembered per folder and loaded again when it reopens;
  a folder with no model gets the offer of the bundled VOC model (gui/model_offer.py): one click
  loads it, nothing loads by itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from deeplab_studio.core.labels import BACKGROUND
from deeplab_studio.gui import settings as prefs
from deeplab_studio.gui.batch_status import BatchStatus
from deeplab_studio.gui.class_mapping import (ClassMapping, is_default_labelset, map_classes, model_labelset,
                                              unmatched_note)
from deeplab_studio.gui.inference_jobs import model_status_text
from deeplab_studio.gui.inference_worker import BATCH, INTERACTIVE, PREFETCH, InferenceClient, JobFailure, Proposal
from deeplab_studio.gui.model_offer import bundled_weights, install_offer, voc_model_available
from deeplab_studio.gui.pool_tasks import run_async, run_crf_async
from deeplab_studio.gui.uncertainty import UncertaintyStore
from deeplab_studio.gui.uncertainty_view import UncertaintyView
from deeplab_studio.gui.window_link import WindowLink

SETTINGS_CRF = "model/refine_with_crf"
SETTINGS_PRECOMPUTE = "model/precompute_next"
SETTINGS_UNMATCHED = "model/unmatched_to"
MAX_PREFETCHED = 3


class ModelController(QObject):
    """The Model menu and the glue between the window, the worker and the CRF."""

    proposalApplied = Signal(str)  # image key
    snapApplied = Signal(str)
    indexSaved = Signal()  # after a batch (every save is already committed; kept for listeners)
    projectModelChecked = Signal()  # an opened project's model was restored, offered or found gone
    message = Signal(str)

    def __init__(self, window, *, settings: QSettings | None = None) -> None:
        super().__init__(window)
        self.link = WindowLink(window)
        if settings is None:
            settings = getattr(window, "settings", None)
        self.settings = settings if isinstance(settings, QSettings) else QSettings()
        self.client = InferenceClient(self)
        self.uncertainty = UncertaintyStore()
        self.mapping: ClassMapping | None = None
        self.crf_params = None  # ml.crf.CRFParams; None = the module's measured defaults
        self._prefetched: dict[str, Proposal] = {}
        self._batch_id: int | None = None
        self._snap_token = 0
        self._segment_rid: int | None = None  # the current Ctrl+R request (for its tile progress)
        self._loading: tuple[int, str, str] | None = None  # (request id, path, device) of the last load asked
        self._device = "auto"  # the device asked for the loaded model
        self._closed = False
        self._build_actions()
        self.uncertainty_view = UncertaintyView(self.link, self.uncertainty, self.act_uncertainty.isChecked,
                                                self.message.emit)
        self._build_status_widgets()
        self.offer = install_offer(self.link.window)
        self.offer.useRequested.connect(self.use_voc_model)
        self.offer.otherRequested.connect(self.open_model_dialog)
        self.message.connect(self.link.show_message)
        self.client.proposalReady.connect(self._on_proposal)
        self.client.failed.connect(self._on_failed)
        self.client.modelLoaded.connect(self._on_model_loaded)
        self.client.modelFailed.connect(self._on_model_failed)
        self.client.warning.connect(self.link.show_warning)
        self.client.batchProgress.connect(self._on_batch_progress)
        self.client.batchFinished.connect(self._on_batch_finished)
        self.client.tileProgress.connect(self._on_tile_progress)
        for sig in (self.client.proposalReady, self.client.dropped, self.client.failed):
            sig.connect(lambda r: self._segment_ended(r.request_id))
        self.client.requestCancelled.connect(self._segment_ended)
        self.link.on_image_changed(self._on_image_changed)
        self.link.on_project_changed(self._on_project_changed)
        self.link.on_close(self.shutdown)
        self._on_project_changed()
        self._on_image_changed()

    # --- UI ----------------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut: str | None = None, checkable: bool = False,
                checked: bool = False) -> QAction:
        act = QAction(text, self.link.window)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.setCheckable(checkable)
        if checkable:
            act.setChecked(checked)
            act.toggled.connect(slot)
        else:  # drop `checked`: a slot with optional arguments would otherwise receive it
            act.triggered.connect(lambda _checked=False: slot())
        return act

    def _build_actions(self) -> None:
        s = self.settings
        self.act_open = self._action("Open model…", self.open_model_dialog, "Ctrl+M")
        self.act_segment = self._action("Auto-segment image", self.auto_segment, "Ctrl+R")
        self.act_segment_all = self._action("Auto-segment all unlabeled/auto images", self.auto_segment_all)
        self.act_cancel = self._action("Cancel auto-segment", self.cancel)
        self.act_crf = self._action("Refine proposals with CRF", self._on_crf_toggled, checkable=True,
                                    checked=_bool(s.value(SETTINGS_CRF, True)))
        self.act_snap = self._action("Snap to edges", self.snap_to_edges, "Ctrl+Shift+R")
        self.act_crf_panel = self._action("CRF parameters…", self.show_crf_panel)
        self.act_precompute = self._action("Pre-compute next image", self._on_precompute_toggled, checkable=True,
                                           checked=_bool(s.value(SETTINGS_PRECOMPUTE, False)))
        self.act_uncertainty = self._action("Show uncertainty", self._on_uncertainty_toggled, "U", checkable=True)
        self.act_next_uncertain = self._action("Next most uncertain image", self.next_most_uncertain, "Ctrl+U")
        self.act_cancel.setEnabled(False)
        self.actions = [self.act_open, None, self.act_segment, self.act_segment_all, self.act_cancel, None,
                        self.act_crf, self.act_snap, self.act_crf_panel, None, self.act_precompute,
                        self.act_uncertainty, self.act_next_uncertain]
        self.link.add_menu("&Model", self.actions)

    def _build_status_widgets(self) -> None:
        self.batch_status = BatchStatus(self.link, self.cancel, self.message.emit)
        self.link.set_model_status("No model")

    def _on_crf_toggled(self, on: bool) -> None:
        self.settings.setValue(SETTINGS_CRF, bool(on))
        self._prefetched.clear()  # computed with the other setting

    def _on_precompute_toggled(self, on: bool) -> None:
        self.settings.setValue(SETTINGS_PRECOMPUTE, bool(on))
        if on:
            self._precompute_next()

    @property
    def refine_with_crf(self) -> bool:
        return self.act_crf.isChecked()

    # --- model -------------------------------------------------------------------------------
    def load_model(self, path: str, device: str = "auto") -> int:
        """Load a checkpoint in the worker; the status bar shows it once loaded."""
        self.link.set_model_status(f"Loading model… ({device})")
        self.offer.hide()
        rid = self.client.load_model(path, device)
        self._loading = (rid, str(path), device)
        return rid

    def use_bundled_model(self, name: str, device: str = "auto") -> int:
        """Load bundled model `name` (found with `deeplab_studio.models`) in the worker."""
        return self.load_model(bundled_weights(name), device)

    def use_voc_model(self) -> int:
        """The offer's "Use the VOC model": the bundled Pascal VOC model, on the best device."""
        from deeplab_studio.models import VOC_MODEL

        return self.use_bundled_model(VOC_MODEL)

    def offer_voc_model(self) -> bool:
        """Show the offer when a folder is open with no model loaded or loading, the VOC model is
        bundled and the user did not say "not now" for this folder; True when it is shown."""
        show = (not self._closed and not self.offer.dismissed and self.link.project() is not None
                and self.client.model is None and self._loading is None and voc_model_available())
        self.offer.setVisible(show)
        return show

    def open_model_dialog(self) -> None:
        from deeplab_studio.gui.model_dialog import ModelDialog

        dlg = ModelDialog(self, parent=self.link.window)
        dlg.open()

    def _on_model_loaded(self, info: dict) -> None:
        asked = self._loading if self._loading and self._loading[0] == info.get("request_id") else None
        if asked:
            self._loading = None
        self._device = asked[2] if asked else info["device"]
        self.offer.hide()
        self._remember_for_project(info["path"], self._device)
        self._prefetched.clear()
        self.uncertainty.set_model(info["path"])  # rank uncertainty by the active model only
        self.update_mapping(info)
        name = info["path"].replace("\\", "/").rsplit("/", 1)[-1]
        self.link.set_model_status(*model_status_text(info))
        self._remember_recent(info["path"])
        self.message.emit(f"Model loaded: {name}")
        note = unmatched_note(self.mapping) if self.mapping is not None else None
        if note:  # e.g. a model of other classes on a labelled project: its proposals may be empty
            self.link.show_warning(note)
        self._precompute_next()

    def _on_model_failed(self, message: str) -> None:
        self._loading = None
        self.offer_voc_model()  # still no model: the offer stays one click away
        current = self.client.model
        self.link.set_model_status(*(("No model", "") if current is None else model_status_text(current)))
        self.link.show_error("Could not load the model", message)

    def update_mapping(self, info: dict | None = None, *, unmatched: int | None = None) -> ClassMapping | None:
        """Map the loaded model's classes onto the project's (a project with default classes
        and no labels yet takes the model's classes)."""
        info = info or self.client.model
        if info is None:
            return None
        if unmatched is None:
            unmatched = int(self.settings.value(SETTINGS_UNMATCHED, BACKGROUND))
        labelset = self.link.labelset()
        if labelset is None:
            return None
        if is_default_labelset(labelset) and not self.link.project_has_labels():
            own = model_labelset(info["class_names"], info["class_colors"], info["num_classes"])
            if own.names != labelset.names:
                self.link.set_labelset(own)
                labelset = own
        self.mapping = map_classes(info["class_names"], labelset, unmatched=unmatched,
                                   num_classes=info["num_classes"])
        return self.mapping

    def set_mapping(self, mapping: ClassMapping) -> None:
        """Use a mapping edited by the user (pre-computed proposals are dropped)."""
        self.mapping = mapping
        self._prefetched.clear()

    def _lut(self) -> np.ndarray | None:
        if self.mapping is None or self.mapping.is_identity():
            return None
        return self.mapping.lut()

    def _remember_recent(self, path: str) -> None:
        recent = [p for p in _list(self.settings.value("model/recent", [])) if p != path]
        self.settings.setValue("model/recent", [path] + recent[:7])

    def recent_models(self) -> list[str]:
        return _list(self.settings.value("model/recent", []))

    def _remember_for_project(self, path: str, device: str) -> None:
        project = self.link.project()
        if project is not None:
            prefs.set_last_model(self.settings, str(project.folder), path, device)

    def restore_project_model(self) -> int | None:
        """Load the model the open project used last (its request id); a checkpoint that is gone
        is said in one message and forgotten, and the work goes on without it. Emits
        `projectModelChecked` when decided."""
        try:
            return self._restore_project_model()
        finally:
            self.projectModelChecked.emit()

    def _restore_project_model(self) -> int | None:
        project = self.link.project()
        if self._closed or project is None:
            return None
        current = self.client.model
        last = prefs.last_model(self.settings, str(project.folder))
        if last is None:  # a model carried over from the previous project is this one's model now
            if current is not None:
                self._remember_for_project(current["path"], self._device)
            self.offer_voc_model()
            return None
        path, device = last
        if (current is not None and current["path"] == path) or (self._loading and self._loading[1] == path):
            return None
        if not Path(path).exists():
            prefs.forget_last_model(self.settings, str(project.folder))
            rest = "continuing without a model" if current is None else f"keeping {Path(current['path']).name}"
            text = f"The model last used in this project is gone ({path}); {rest}."
            shown = getattr(getattr(self.link.window, "banner", None), "text", lambda: "")()
            self.link.show_warning(f"{shown}\n{text}" if shown else text)  # keep the folder's own note
            self.offer_voc_model()
            return None
        return self.load_model(path, device)

    def _require_model(self) -> bool:
        if self.client.model is None and not self.client.busy:
            offered = "“Use the VOC model” above the image, or " if self.offer.isVisible() else ""
            self.link.show_error("No model", f"Open a model first ({offered}Model → Open model…).")
            return False
        return True

    # --- auto-segment ------------------------------------------------------------------------
    def auto_segment(self) -> int | None:
        """Ctrl+R: propose labels for the current image (uses a pre-computed one when ready)."""
        doc = self.link.document()
        if doc is None or not self._require_model():
            return None
        cached = self._prefetched.pop(doc.key, None)
        if cached is not None:
            self._apply_to_document(cached)
            return cached.request_id
        if self.client.promote(doc.key):
            self.message.emit("Auto-segmenting (pre-compute already running)…")
            return None
        self.message.emit("Auto-segmenting…")
        self._segment_rid = self.client.request(doc.key, image=doc.image, priority=INTERACTIVE,
                                                crf=self.refine_with_crf, crf_params=self.crf_params, lut=self._lut())
        return self._segment_rid

    def _on_tile_progress(self, request_id: int, done: int, total: int) -> None:
        if request_id == self._segment_rid and done < total:  # a large image: show it moves, offer Cancel
            self.message.emit(f"Auto-segmenting… tile {done + 1} of {total}")
            self._sync_cancel(True)

    def _segment_ended(self, request_id: int | None) -> None:
        if request_id is not None and request_id == self._segment_rid:
            self._segment_rid = None
            self._sync_cancel()

    def _sync_cancel(self, long_segment: bool = False) -> None:
        """Cancel (menu and status bar) while a batch or a tiled Ctrl+R runs."""
        on = self._batch_id is not None or long_segment
        self.act_cancel.setEnabled(on)
        self.batch_status.cancel_button.setVisible(on)

    def cancel(self) -> None:
        """Cancel button / menu: stop the batch and a running Ctrl+R (between tiles)."""
        rid = self._segment_rid
        if rid is not None:
            self.client.cancel_request(rid)
            self._segment_ended(rid)
            self.message.emit("Auto-segment cancelled.")
        self.cancel_batch()

    def auto_segment_all(self, statuses: tuple[str, ...] = ("unlabeled", "auto")) -> int | None:
        """Queue every image whose status is in `statuses` as one batch; returns the batch id.
        Only `unlabeled` and `auto` images qualify: human-edited ones are never re-proposed."""
        if not self._require_model():
            return None
        items = self.link.batch_items(statuses)
        if self._batch_id is not None:
            self.cancel_batch()
        self._batch_id = self.client.start_batch(items, crf=self.refine_with_crf, crf_params=self.crf_params,
                                                 lut=self._lut(), project=self.link.project())
        if items:
            self.batch_status.start(len(items))
            self.act_cancel.setEnabled(True)
        else:
            self.message.emit("No unlabeled or auto images to segment.")
        return self._batch_id

    def cancel_batch(self) -> None:
        if self._batch_id is not None:
            self.client.cancel_batch(self._batch_id)

    def _on_batch_progress(self, batch_id: int, finished: int, total: int, rate: float, eta: float) -> None:
        if batch_id != self._batch_id:
            return
        self.batch_status.update(finished, total, rate, eta)

    def _on_batch_finished(self, batch_id: int, done: int, failed: int, cancelled: bool) -> None:
        if batch_id != self._batch_id:
            return
        self._batch_id = None
        self.batch_status.finish()
        self.act_cancel.setEnabled(False)
        self.uncertainty.save()
        project = self.link.project()  # the worker saved label maps without the index: write it
        if project is not None:  # once, off the GUI thread (fsync can take 100 ms on a busy disk)
            run_async(self, None, project.save, self._on_index_saved)
        what = "cancelled" if cancelled else "finished"
        self.message.emit(f"Auto-segment all {what}: {done} images proposed, {failed} failed.")

    def _on_index_saved(self, _token, result) -> None:
        if isinstance(result, Exception):  # the label maps on disk are recovered on the next open
            self.link.show_error("Could not save the project index", str(result))
        self.indexSaved.emit()

    def _on_proposal(self, p: Proposal) -> None:
        self.uncertainty.put(p.key, p.confidence)
        doc = self.link.document()
        if p.saved:  # a batch result the worker already merged into the saved map
            if doc is not None and doc.key == p.key:  # the user opened it meanwhile: one undo step,
                self._apply_to_document(p)  # and the document's autosave rewrites the same pixels
            else:
                self.link.annotation_saved_elsewhere(p.key)
                self.proposalApplied.emit(p.key)
            return
        if p.priority == PREFETCH and (doc is None or doc.key != p.key):
            self._prefetched[p.key] = p
            while len(self._prefetched) > MAX_PREFETCHED:  # bounded memory: oldest first out
                self._prefetched.pop(next(iter(self._prefetched)))
            return
        if doc is not None and doc.key == p.key:
            self._apply_to_document(p)
        elif p.priority == BATCH:
            self._apply_to_storage(p)

    def _apply_to_document(self, p: Proposal) -> None:
        doc = self.link.document()
        if doc is None or doc.key != p.key:
            return
        if p.labels.shape != doc.labels.shape:
            self.link.show_error("Proposal skipped", f"{p.key}: the image size changed while it was predicted.")
            return
        self.link.apply_proposal(p.labels, "Auto-segment", mark_auto=True)
        self.refresh_overlay()
        how = " + CRF" if p.refined else ""
        self.message.emit(f"Proposal{how} in {p.seconds:.2f} s; mean uncertainty {p.mean_uncertainty:.2f}")
        self.proposalApplied.emit(p.key)
        self._precompute_next()

    def _apply_to_storage(self, p: Proposal) -> None:
        try:
            self.link.merge_into_saved(p.key, p.labels)
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop the batch
            self.link.show_error("Could not save a proposal", f"{p.key}: {exc}")
            return
        self.proposalApplied.emit(p.key)

    def _on_failed(self, f: JobFailure) -> None:
        if f.batch_id is not None or f.priority == PREFETCH:  # background work: a note, not a banner
            self.message.emit(f"Skipped {f.key}: {f.message}")
            return
        self.link.show_error("Auto-segment failed", f"{f.key}: {f.message}" if f.key else f.message)

    # --- pre-compute ---------------------------------------------------------------------------
    def _precompute_next(self) -> None:
        if not self.act_precompute.isChecked() or self.client.model is None:
            return
        nxt = self.link.next_key_and_path()
        if nxt is None or nxt[0] in self._prefetched or self.client.pending(nxt[0]):
            return
        key, path = nxt
        if self.link.record_status(key) in ("unlabeled", "auto"):
            self.client.request(key, path=path, priority=PREFETCH, crf=self.refine_with_crf,
                                crf_params=self.crf_params, lut=self._lut())

    # --- CRF snapping --------------------------------------------------------------------------
    def snap_to_edges(self) -> None:
        """Ctrl+Shift+R: refine the current label map with the CRF, human pixels kept."""
        doc = self.link.document()
        if doc is None:
            return
        self._snap_token += 1
        token = (self._snap_token, doc.key, doc.labels.copy())
        self.message.emit("Snapping to edges…")
        run_crf_async(self, token, doc.image, doc.labels, doc.edit_mask, self.crf_params, self._on_snap_done)

    def _on_snap_done(self, token, result) -> None:
        serial, key, before = token
        if serial != self._snap_token:
            return
        doc = self.link.document()
        if doc is None or doc.key != key:
            return
        if isinstance(result, Exception):
            self.link.show_error("Snap to edges failed", str(result))
            return
        # pixels that changed while the CRF ran win over its answer
        changed = doc.labels != before
        merged = np.where(changed, doc.labels, result).astype(np.uint8)
        moved = int(np.count_nonzero(merged != doc.labels))
        self.link.apply_proposal(merged, "Snap to edges")
        self.message.emit(f"Snapped to edges: {moved} pixels changed." if moved else
                          "Snap to edges changed nothing (the labels already follow the edges).")
        self.snapApplied.emit(key)

    def show_crf_panel(self) -> None:
        from deeplab_studio.gui.crf_panel import CRFPanel

        panel = getattr(self, "crf_panel", None)
        if panel is None:
            self.crf_panel = panel = CRFPanel(self)
            self.link.add_dock(panel)
        panel.show()
        panel.raise_()

    # --- uncertainty ---------------------------------------------------------------------------
    def _on_uncertainty_toggled(self, on: bool) -> None:
        self.refresh_overlay()

    def refresh_overlay(self) -> None:
        """Redraw the canvas's extra layer: the uncertainty overlay when it is on, else nothing."""
        self.uncertainty_view.refresh()

    def next_most_uncertain(self) -> str | None:
        """Go to the image not yet reviewed whose proposal the model was least sure about."""
        return self.uncertainty_view.next_most_uncertain()

    # --- window events -------------------------------------------------------------------------
    def _on_image_changed(self, *_) -> None:
        self._segment_ended(self._segment_rid)  # its result is no longer wanted (cancelled below)
        doc = self.link.document()
        self.client.set_current_key(doc.key if doc is not None else None)
        if self.act_uncertainty.isChecked():
            self.refresh_overlay()
        self._precompute_next()

    def _on_project_changed(self, *_) -> None:
        self.offer.hide()  # restore_project_model decides again for this folder
        self.offer.dismissed = False
        self._prefetched.clear()
        if self._batch_id is not None:
            self.cancel_batch()
        self.uncertainty.bind(self.link.data_dir())
        if self.client.model is not None:
            self.uncertainty.set_model(self.client.model["path"])
            self.update_mapping()
        QTimer.singleShot(0, self, self.restore_project_model)  # after the folder's own messages

    def download_finished(self, path: str, error: str) -> None:
        """A weights download started in the (since closed) model dialog ended."""
        if error:
            self.link.show_error("Download failed", error)
        else:
            self.load_model(path, "auto")

    def shutdown(self, *_) -> None:
        """Cancel every job and join the inference thread (window closing)."""
        from deeplab_studio.gui.model_dialog import WeightsDownload

        self._closed = True  # no model is loaded again after this
        self.offer.hide()
        for download in self.findChildren(WeightsDownload):
            download.cancel()
            download.wait(15000)  # stops at its next progress report or network timeout
        self.uncertainty.save()
        self.client.shutdown()
        if self._batch_id is not None:  # closed mid-batch: the worker saved label maps, write the index
            self._batch_id = None  # now (the late batchFinished is ignored; no pool task at exit)
            project = self.link.project()
            try:
                if project is not None:
                    project.save()
            except Exception:  # noqa: BLE001 - the label maps on disk are recovered on the next open
                pass
        QThreadPool.globalInstance().waitForDone(30000)


def attach_model_tools(window) -> ModelController:
    """The window's ModelController (a child QObject), created on first use; the training tools
    (gui/train_dialog.py, when present) attach right after it, below its Model-menu actions."""
    existing = window.findChild(ModelController)
    if existing is not None:
        return existing
    controller = ModelController(window)
    if importlib.util.find_spec("deeplab_studio.gui.train_dialog") is not None:
        from deeplab_studio.gui.train_dialog import attach_training_tools

        attach_training_tools(window, controller)
    return controller


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")


def _list(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


__all__ = ["ModelController", "attach_model_tools"]
