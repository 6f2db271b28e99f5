"""Model in the loop: the Model menu and the active model, attached to the window from outside.

`ModelController` owns the `InferenceClient` (the long-lived worker thread), a `JobPool` for
short jobs (CRF snap and preview, weights download) and the `ProposalFlow` (gui/model/proposal_flow.py:
Ctrl+R, Auto-segment all, pre-compute, Snap to edges). It talks to the window only through the
`WindowLink` it is given (gui/window/link.py); gui/model_tools.py builds and connects it.

- Open model… (Ctrl+M), Refine proposals with CRF (on by default), CRF parameters…, Pre-compute
  next image, Show uncertainty (U) and Next most uncertain image (Ctrl+U) are its own; click to
  correct (Ctrl+click, K: gui/model/click_correct.py) and Find likely label errors / Next
  suspicious image (Ctrl+Shift+N: gui/model/review.py) are attached after them.
- The model's classes are mapped onto the project's by name (gui/model/class_mapping.py); a project
  with default classes and no labels takes the model's.
- The last model used in a project is remembered per folder and loaded again when it reopens;
  a folder with no model gets the offer of the bundled VOC model (gui/model/offer.py): one click
  loads it, nothing loads by itself.
- Closing the window cancels every job and joins every thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer, Signal

from deeplab_studio.core.labels import BACKGROUND
from deeplab_studio.gui.window import settings as prefs
from deeplab_studio.gui.workers.background_jobs import JobPool
from deeplab_studio.gui.model.class_mapping import (ClassMapping, is_default_labelset, map_classes, model_labelset,
                                              unmatched_note)
from deeplab_studio.gui.workers.inference_client import InferenceClient
from deeplab_studio.gui.workers.jobs import ModelInfo
from deeplab_studio.gui.model.actions import make_action, make_toggle
from deeplab_studio.gui.model.click_correct import ClickCorrection
from deeplab_studio.gui.model.offer import ModelOffer, bundled_weights, voc_model_available
from deeplab_studio.gui.model.proposal_flow import AUTO_STATUSES, ProposalFlow, ProposalOptions
from deeplab_studio.gui.model.review import ReviewTool
from deeplab_studio.gui.model.uncertainty import UncertaintyStore
from deeplab_studio.gui.model.uncertainty_view import UncertaintyView
from deeplab_studio.storage.records import Status

SETTINGS_CRF = "model/refine_with_crf"
SETTINGS_PRECOMPUTE = "model/precompute_next"
SETTINGS_UNMATCHED = "model/unmatched_to"
SETTINGS_RECENT = "model/recent"
JOIN_TIMEOUT_MS = 30_000


class ModelController(QObject):
    """The Model menu, the active model and the glue between the window and the worker."""

    proposalApplied = Signal(str)  # image key
    snapApplied = Signal(str)
    indexSaved = Signal()  # a batch ended and the session has saved every proposal it stored
    projectModelChecked = Signal()  # an opened project's model was restored, offered or found gone
    modelChanged = Signal(object)  # ModelInfo of the model now active
    modelFailed = Signal(str)  # a load failed (the previous model, if any, stays)
    message = Signal(str)

    def __init__(self, link, *, settings: QSettings, offer: ModelOffer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.link, self.settings, self.offer = link, settings, offer
        self.client = InferenceClient(self)
        self.jobs = JobPool(self)
        self.uncertainty = UncertaintyStore()
        self.mapping: ClassMapping | None = None
        self.crf_params = None  # ml.crf.CRFParams applied in the CRF panel; None = the model's own
        self.crf_panel = None  # gui.crf_panel.CRFPanel, made on first use
        self._crf_lender = None  # ml.crf.SessionLender, made on first use (see crf_sessions)
        self.model_status: tuple[str, str] = ("", "")  # status-bar text and tooltip of the model
        self._loading: tuple[int, str, str] | None = None  # (request id, path, device) of the last load asked
        self._device = "auto"  # the device asked for the loaded model
        self._closed = False
        self._build_actions()
        self.uncertainty_view = UncertaintyView(link, self.uncertainty, self.act_uncertainty.isChecked,
                                                self.message.emit)
        self.proposals = ProposalFlow(link, self.client, self.uncertainty, self.jobs,
                                      options=self.proposal_options, require_model=self._require_model,
                                      precompute=self.act_precompute.isChecked,
                                      refresh_overlay=self.refresh_overlay, crf_sessions=self.crf_sessions,
                                      parent=self)
        self.batch_status = self.proposals.batch_status
        flow = self.proposals
        for mine, theirs in ((self.proposalApplied, flow.proposalApplied), (self.snapApplied, flow.snapApplied),
                             (self.indexSaved, flow.batchSaved), (self.message, flow.message)):
            theirs.connect(mine.emit)
        self.proposals.cancelAvailable.connect(self.act_cancel.setEnabled)
        lut = lambda: self.proposal_options().lut  # noqa: E731
        self.click_correct = ClickCorrection(link, self.client, lut=lut, require_model=self._require_model,
                                             parent=self)
        self.review = ReviewTool(link, self.client, lut=lut, require_model=self._require_model, parent=self)
        self.click_correct.message.connect(self.message.emit)
        self.review.message.connect(self.message.emit)
        self.link.add_menu("Model", [None, *self.click_correct.actions(), None, *self.review.actions()])
        self._set_model_status("No model")
        offer.useRequested.connect(self.use_voc_model)
        offer.otherRequested.connect(self.open_model_dialog)
        self.message.connect(link.show_message)
        self.client.modelLoaded.connect(self._on_model_loaded)
        self.client.modelFailed.connect(self._on_model_failed)
        self.client.warning.connect(link.show_warning)
        link.on_image_changed(self._on_image_changed)
        link.on_project_changed(self._on_project_changed)
        link.on_close(self.shutdown)
        self._on_project_changed()
        self._on_image_changed()

    # --- UI ----------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        s = self.settings
        self.act_open = make_action(self, "model_open", "Open model…", self.open_model_dialog, shortcut="Ctrl+M")
        self.act_segment = make_action(self, "auto_segment", "Auto-segment image", self.auto_segment,
                                       shortcut="Ctrl+R")
        self.act_segment_all = make_action(self, "auto_segment_all", "Auto-segment all unlabeled/auto images",
                                           self.auto_segment_all)
        self.act_cancel = make_action(self, "auto_segment_cancel", "Cancel auto-segment", self.cancel)
        self.act_cancel.setEnabled(False)
        self.act_crf = make_toggle(self, "refine_with_crf", "Refine proposals with CRF", self._on_options_changed,
                                   settings=s, key=SETTINGS_CRF, default=True)
        self.act_snap = make_action(self, "snap_to_edges", "Snap to edges", self.snap_to_edges,
                                    shortcut="Ctrl+Shift+R")
        self.act_crf_panel = make_action(self, "crf_parameters", "CRF parameters…", self.show_crf_panel)
        self.act_precompute = make_toggle(self, "precompute_next", "Pre-compute next image",
                                          self._on_precompute_toggled, settings=s, key=SETTINGS_PRECOMPUTE)
        self.act_uncertainty = make_toggle(self, "show_uncertainty", "Show uncertainty",
                                           lambda _on: self.refresh_overlay(), shortcut="U")
        self.act_next_uncertain = make_action(self, "next_most_uncertain", "Next most uncertain image",
                                              self.next_most_uncertain, shortcut="Ctrl+U")
        self.link.add_menu("Model", [self.act_open, None, self.act_segment, self.act_segment_all, self.act_cancel,
                                      None, self.act_crf, self.act_snap, self.act_crf_panel, None,
                                      self.act_precompute, self.act_uncertainty, self.act_next_uncertain])

    def _set_model_status(self, text: str, tooltip: str = "") -> None:
        self.model_status = (text, tooltip)
        self.link.set_model_status(text, tooltip)

    def _on_options_changed(self, *_) -> None:
        self.proposals.prefetched.clear()  # computed with the other setting or mapping

    def _on_precompute_toggled(self, on: bool) -> None:
        if on:
            self.proposals.precompute_next()

    def proposal_options(self) -> ProposalOptions:
        """How proposals are made now: CRF on/off, the CRF panel's parameters, the class mapping."""
        lut = None if self.mapping is None or self.mapping.is_identity() else self.mapping.lut()
        return ProposalOptions(self.act_crf.isChecked(), self.crf_params, lut, self.crf_setting())

    def crf_setting(self):
        """The CRF parameters in force: those applied in the CRF panel, else the loaded model's
        (its card's setting, else the defaults); None before any model."""
        if self.crf_params is not None:
            return self.crf_params
        return self.client.model.crf_params if self.client.model is not None else None

    def crf_sessions(self):
        """The `ml.crf.SessionLender` that Snap to edges and the CRF panel's previews share, so
        repeated CRF runs on one image reuse its kernels (made on first use: no CRF import at start)."""
        if self._crf_lender is None:
            from deeplab_studio.ml.crf_session import SessionLender

            self._crf_lender = SessionLender()
        return self._crf_lender

    # --- model -------------------------------------------------------------------------------
    def load_model(self, path: str, device: str = "auto") -> int:
        """Load a checkpoint in the worker; the status bar shows it once loaded."""
        self._set_model_status(f"Loading model… ({device})")
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
        from deeplab_studio.gui.model.dialog import ModelDialog

        ModelDialog(self, parent=self.link.parent_widget()).open()

    def _on_model_loaded(self, info: ModelInfo) -> None:
        asked = self._loading if self._loading and self._loading[0] == info.request_id else None
        if asked:
            self._loading = None
        self._device = asked[2] if asked else info.device
        self.offer.hide()
        self._remember_for_project(info.path, self._device)
        self.proposals.prefetched.clear()
        self.click_correct.clear()  # the clicks adapted the previous model
        self.uncertainty.set_model(info.path)  # rank uncertainty by the active model only
        self.update_mapping(info)
        self._set_model_status(*info.status_text())
        self._remember_recent(info.path)
        self.message.emit(f"Model loaded: {info.file_name}")
        note = unmatched_note(self.mapping) if self.mapping is not None else None
        if note:  # e.g. a model of other classes on a labelled project: its proposals may be empty
            self.link.show_warning(note)
        self.proposals.precompute_next()
        if self.crf_panel is not None:
            self.crf_panel.model_changed()
        self.modelChanged.emit(info)

    def _on_model_failed(self, message: str) -> None:
        self._loading = None
        self.offer_voc_model()  # still no model: the offer stays one click away
        current = self.client.model
        self._set_model_status(*(("No model", "") if current is None else current.status_text()))
        self.link.show_error("Could not load the model", message)
        self.modelFailed.emit(message)

    def update_mapping(self, info: ModelInfo | None = None) -> ClassMapping | None:
        """Map the loaded model's classes onto the project's (a project with default classes
        and no labels yet takes the model's classes)."""
        info = info or self.client.model
        labelset = self.link.labelset()
        if info is None or labelset is None:
            return None
        names = list(info.class_names) if info.class_names is not None else None
        if is_default_labelset(labelset) and all(r.status == Status.UNLABELED for r in self.link.records()):
            own = model_labelset(names, info.class_colors, info.num_classes)
            if own.names != labelset.names:
                self.link.set_labelset(own)
                labelset = own
        self.mapping = map_classes(names, labelset, unmatched=self.unmatched_target(), num_classes=info.num_classes)
        return self.mapping

    def unmatched_target(self) -> int:
        """Where model classes with no project class of their name go: background (0) or ignore (255)."""
        return int(self.settings.value(SETTINGS_UNMATCHED, BACKGROUND))

    def set_unmatched_target(self, value: int) -> ClassMapping | None:
        """Remember `value` (0 or 255) and map the loaded model's classes again (None: no model)."""
        self.settings.setValue(SETTINGS_UNMATCHED, int(value))
        return self.update_mapping() if self.client.model is not None else None

    def set_mapping(self, mapping: ClassMapping) -> None:
        """Use a mapping edited by the user (pre-computed proposals are dropped)."""
        self.mapping = mapping
        self._on_options_changed()

    def _remember_recent(self, path: str) -> None:
        recent = [p for p in self.recent_models() if p != path]
        self.settings.setValue(SETTINGS_RECENT, [path] + recent[:7])

    def recent_models(self) -> list[str]:
        value = self.settings.value(SETTINGS_RECENT, [])
        return [value] if isinstance(value, str) else [str(x) for x in value or []]

    def _remember_for_project(self, path: str, device: str) -> None:
        folder = self.link.project_folder()
        if folder is not None:
            prefs.set_last_model(self.settings, folder, path, device)

    def restore_project_model(self) -> int | None:
        """Load the model the open project used last (its request id); a checkpoint that is gone
        is said in one message and forgotten, and the work goes on without it. Emits
        `projectModelChecked` when decided."""
        try:
            return self._restore_project_model()
        finally:
            self.projectModelChecked.emit()

    def _restore_project_model(self) -> int | None:
        folder = self.link.project_folder()
        if self._closed or folder is None:
            return None
        current = self.client.model
        last = prefs.last_model(self.settings, folder)
        if last is None:  # a model carried over from the previous project is this one's model now
            if current is not None:
                self._remember_for_project(current.path, self._device)
            self.offer_voc_model()
            return None
        path, device = last
        if (current is not None and current.path == path) or (self._loading and self._loading[1] == path):
            return None
        if not Path(path).exists():
            prefs.forget_last_model(self.settings, folder)
            rest = "continuing without a model" if current is None else f"keeping {current.file_name}"
            text = f"The model last used in this project is gone ({path}); {rest}."
            shown = self.link.message_text()
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

    # --- proposals (gui/model/proposal_flow.py) -------------------------------------------------------
    def auto_segment(self) -> int | None:
        """Ctrl+R: propose labels for the current image (uses a pre-computed one when ready)."""
        return self.proposals.auto_segment()

    def auto_segment_all(self, statuses: tuple[str, ...] = AUTO_STATUSES) -> int | None:
        """Propose labels for every image whose status is in `statuses` (unlabeled/auto only)."""
        return self.proposals.auto_segment_all(statuses)

    def cancel(self) -> None:
        """Cancel button / menu: stop the batch and a running Ctrl+R (between tiles)."""
        self.proposals.cancel()

    def snap_to_edges(self) -> None:
        """Ctrl+Shift+R: refine the current label map with the CRF, human pixels kept."""
        self.proposals.snap_to_edges()

    def show_crf_panel(self) -> None:
        from deeplab_studio.gui.model.crf_panel import CRFPanel

        if self.crf_panel is None:
            self.crf_panel = CRFPanel(self)
            self.link.add_dock(self.crf_panel)
        self.crf_panel.show()
        self.crf_panel.raise_()

    # --- uncertainty ---------------------------------------------------------------------------
    def refresh_overlay(self) -> None:
        """Redraw the canvas's extra layer: the uncertainty overlay when it is on, else the label
        disagreement of a reviewed image when shown, else nothing."""
        if self.act_uncertainty.isChecked() or not self.review.refresh():
            self.uncertainty_view.refresh()

    def next_most_uncertain(self) -> str | None:
        """Go to the image not yet reviewed whose proposal the model was least sure about."""
        return self.uncertainty_view.next_most_uncertain()

    # --- window events -------------------------------------------------------------------------
    def _on_image_changed(self, *_) -> None:
        self.proposals.image_changed()
        self.click_correct.image_changed()
        if self.act_uncertainty.isChecked():
            self.refresh_overlay()
        else:
            self.review.refresh()

    def _on_project_changed(self, *_) -> None:
        self.offer.hide()  # restore_project_model decides again for this folder
        self.offer.dismissed = False
        self.proposals.project_changed()
        self.click_correct.clear()
        self.review.project_changed()
        project = self.link.project()
        self.uncertainty.bind(project.data_dir if project is not None else None)
        if self.client.model is not None:
            self.uncertainty.set_model(self.client.model.path)
            self.update_mapping()
        QTimer.singleShot(0, self, self.restore_project_model)  # after the folder's own messages

    def download_finished(self, path: str, error: str) -> None:
        """A weights download started in the (since closed) model dialog ended."""
        if error:
            self.link.show_error("Download failed", error)
        else:
            self.load_model(path, "auto")

    def shutdown(self, *_) -> bool:
        """Cancel every job and join every thread (window closing); True when all ended in time."""
        self._closed = True  # no model is loaded again after this
        self.offer.hide()
        self.proposals.close()
        jobs_ok = self.jobs.shutdown(JOIN_TIMEOUT_MS)
        self.uncertainty.save()
        return self.client.shutdown(JOIN_TIMEOUT_MS) and jobs_ok


__all__ = ["ModelController"]
