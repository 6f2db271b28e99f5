"""Editing for the main window (mixin): undo commits, whole-map proposals, tools, brush,
overlay, and class-list changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.core.patches import union_bbox
from deeplab_studio.gui.navigation import record_status
from deeplab_studio.storage.project import ProjectError, Status


class EditingMixin:
    """Needs the MainWindow attributes: document, project, labelset, toolbox, canvas, panels, undo."""

    # --- editing ----------------------------------------------------------------------------
    def _commit(self, text: str, labels_patch, edit_patch) -> None:
        """A tool finished a change (already written): count it and make it an undo step."""
        if self.document is not None:
            self.document.account(labels_patch)
        self.undo.push(text, labels_patch, edit_patch)

    def apply_proposal(self, labels: np.ndarray, text: str = "Model proposal") -> bool:
        """Replace the label map by `labels` except human-edited pixels, as one undo step.

        For the model-in-the-loop work (model run, CRF). False when nothing changed.
        """
        doc = self.document
        if doc is None:
            return False
        if self.project is not None and self.project.read_only:
            self.show_message(f"Not applied: {self.project.folder} is open read-only.", "warning")
            return False
        patch = doc.proposal_patch(labels)
        if patch is None:
            return False
        doc.apply(patch, None)  # writes, counts and repaints the changed box
        self.undo.push(text, patch, None)
        return True

    def apply_labels(self, new_labels: np.ndarray, *, text: str = "Auto-segment", status=None) -> bool:
        """A whole label map from the model/CRF as one undo step; human-edited pixels are kept.

        `status` (e.g. Status.AUTO) is used at the next save unless the image has human edits.
        """
        changed = self.apply_proposal(new_labels, text=text)
        if status is not None and self.document is not None:
            self.autosave.pending_status = Status(status)
            self.autosave.schedule(force=not changed)
        return changed

    def merge_proposal_into_saved(self, key: str, proposal: np.ndarray) -> bool:
        """A proposal for an image that is not open: merge it into its saved label map (human
        pixels kept) and save. The image's undo history is dropped (it no longer matches)."""
        if self.project is None:
            return False
        rec = self.project.record(key)
        if self.current_record is rec:
            return self.apply_labels(proposal, text="Model proposal")
        try:
            labels, mask = self.project.load_annotation(rec)
            merged = np.where(mask, labels, np.asarray(proposal, dtype=np.uint8))
            self.project.save_annotation(rec, merged, mask)
        except (ProjectError, OSError, ValueError) as exc:
            self.show_message(f"Cannot store the proposal for {key}: {exc}")
            return False
        self.undo.drop(key)
        self.image_panel.set_status(self.project.records.index(rec), record_status(rec))
        return True

    def annotation_saved_elsewhere(self, key: str) -> None:
        """The saved annotation of image `key` was replaced outside the window (e.g. by the model
        worker): drop its undo history and refresh its status in the list. Not for the open image."""
        if self.project is None:
            return
        self.undo.drop(key)
        for i, rec in enumerate(self.project.records):
            if rec.path == key:
                self.image_panel.set_status(i, record_status(rec))

    def set_labelset(self, labelset: LabelSet) -> bool:
        """Replace the class list (same numbering: names/colours/added classes)."""
        return self._apply_labelset(LabelSet(list(labelset.names), list(labelset.colors)))

    def _journal_change(self, labels_patch, edit_patch) -> None:
        """Journal the box a change touched (after it), so it survives a crash before the save."""
        doc, rec = self.document, self.current_record
        box = union_bbox(*(p.bbox for p in (labels_patch, edit_patch) if p is not None))
        if doc is None or rec is None or self.project is None or box is None:
            return
        x0, y0, x1, y1 = box
        try:
            self.project.journal_edit(rec, box, doc.labels[y0:y1, x0:x1], doc.edit_mask[y0:y1, x0:x1])
        except OSError as exc:
            self.show_message(f"Could not journal the change of {rec.path}: {exc.strerror or exc}")

    def set_extra_overlay(self, rgba: np.ndarray | None) -> None:
        self.canvas.set_extra_overlay(rgba)

    def _doc_changed(self, *_args) -> None:
        self._counts_timer.start()

    def _stack_changed(self, _index: int) -> None:
        self.autosave.schedule()
        self._update_title()

    def _refresh_counts(self) -> None:
        if self.document is not None:
            self.class_panel.set_counts(self.document.class_counts())
            if getattr(self, "_cursor_xy", None) is not None:  # the class under a still cursor may have changed
                self._cursor_moved(*self._cursor_xy)

    def _saved(self, rec) -> None:
        if self.project is not None and rec in self.project.records:
            self.image_panel.set_status(self.project.records.index(rec), record_status(rec))
        self._update_title()

    def _save_failed(self, message: str) -> None:
        self.show_message(message)
        self.status.set_save_state("Not saved!", ok=False)

    def _update_title(self) -> None:
        dirty = self.autosave.dirty()
        rec = self.record
        parts = ["DeepLab Studio"]
        if self.project is not None:
            parts.insert(0, Path(self.project.folder).name + (" (read-only)" if self.project.read_only else ""))
        if rec is not None:
            parts.insert(0, rec.path + "[*]")
        else:
            parts[-1] += "[*]"
        self.setWindowTitle(" — ".join(parts))
        self.setWindowModified(dirty)
        if self.document is None:
            self.status.set_save_state("")
        elif dirty:
            self.status.set_save_state("Unsaved changes…")
        else:
            self.status.set_save_state("All changes saved")

    # --- tools, brush, overlay --------------------------------------------------------------
    def set_tool(self, name: str) -> None:
        if name not in self.toolbox.tools:
            name = "brush"
        self.toolbox.select(name)
        self.action_map[f"tool_{name}"].setChecked(True)
        self.canvas.update_brush()
        self.settings.setValue("tool", name)

    def _brush_step(self, direction: int) -> int:
        size = self.toolbox.ctx.brush_size
        step = max(1, round(size * 0.15))
        return max(1, min(500, size + direction * step))

    def set_brush_size(self, size: int) -> None:
        size = max(1, min(500, int(size)))
        self.toolbox.ctx.brush_size = size
        for w in (self.size_slider, self.size_spin):
            if w.value() != size:
                w.blockSignals(True)
                w.setValue(size)
                w.blockSignals(False)
        self.canvas.update_brush()
        self.settings.setValue("brush_size", size)

    def set_opacity(self, value: float) -> None:
        value = max(0.0, min(1.0, float(value)))
        self.canvas.overlay.setOpacity(value)
        if self.opacity_slider.value() != round(value * 100):
            self.opacity_slider.blockSignals(True)
            self.opacity_slider.setValue(round(value * 100))
            self.opacity_slider.blockSignals(False)
        self.settings.setValue("opacity", value)
        self._overlay_notice()

    def set_overlay_visible(self, on: bool) -> None:
        self.canvas.overlay.setVisible(on)
        if self.action_map["toggle_overlay"].isChecked() != on:
            self.action_map["toggle_overlay"].setChecked(on)
        self._overlay_notice()

    def _overlay_notice(self) -> None:
        """Say so on the canvas when the labels cannot be seen (painting would look like it did nothing)."""
        overlay = self.canvas.overlay
        if not overlay.isVisible():
            self.canvas.set_notice("Labels hidden — press T to show them")
        elif overlay.opacity() < 0.05:
            self.canvas.set_notice("Label opacity 0 % — Ctrl+] or the Opacity slider shows them")
        else:
            self.canvas.set_notice("")

    def set_background_only(self, on: bool) -> None:
        self.toolbox.ctx.background_only = bool(on)
        for w in (self.bg_only, self.action_map["background_only"]):
            if w.isChecked() != on:
                w.blockSignals(True)
                w.setChecked(on)
                w.blockSignals(False)

    def set_active_class(self, value: int) -> None:
        if value != IGNORE and not 0 <= value < len(self.labelset):
            self.statusBar().showMessage(f"There is no class {value}", 3000)
            return
        self.toolbox.ctx.active_class = int(value)
        if self.class_panel.active != value:
            self.class_panel.select(value, emit=False)

    def _picked(self, value: int) -> None:
        self.set_active_class(value)
        name = "ignore" if value == IGNORE else self.labelset.names[value] if value < len(self.labelset) else str(value)
        self.statusBar().showMessage(f"Picked class {value} ({name})", 3000)

    def _polygon_preview(self) -> None:
        self.canvas.update_polygon_preview()

    def _hidden_changed(self, hidden: set) -> None:
        self.canvas.overlay.set_colors(self.labelset.palette(), hidden)

    def _cursor_left(self) -> None:
        self._cursor_xy = None
        self.status.set_cursor(None, None)

    def _cursor_moved(self, x: float, y: float) -> None:
        self._cursor_xy = (x, y)
        doc = self.document
        if doc is None or not doc.contains(x, y):
            self.status.set_cursor(None, None)
            return
        v = doc.label_at(x, y)
        name = "ignore" if v == IGNORE else (self.labelset.names[v] if v < len(self.labelset) else "?")
        self.status.set_cursor(int(x), int(y), f"{v} {name}" + (" ✎" if doc.edit_mask[int(y), int(x)] else ""))

    # --- classes ----------------------------------------------------------------------------
    def _apply_labelset(self, labelset: LabelSet, lut: np.ndarray | None = None) -> bool:
        if self.project is None:
            self.labelset = labelset
        else:
            if not self.autosave.flush():
                return False
            try:
                self.project.set_labelset(labelset, lut)
            except (ProjectError, OSError, ValueError) as exc:
                self.show_message(f"Cannot change the classes: {exc}")
                return False
            self.labelset = self.project.labels
        self.class_panel.set_labelset(self.labelset)
        if self.document is not None:
            self.document.labelset = self.labelset
            if lut is not None:
                self.document.remap(lut)
            self.canvas.overlay.set_colors(self.labelset.palette(), self.class_panel.hidden)
            self._refresh_counts()
        return True

    def _edited_labelset(self, change) -> LabelSet | None:
        ls = LabelSet.from_json(self.labelset.to_json())
        try:
            result = change(ls)
        except (ValueError, KeyError) as exc:
            self.show_message(str(exc))
            return None
        return ls, result

    def add_class(self, name: str, color=None) -> bool:
        got = self._edited_labelset(lambda ls: ls.add(name, color))
        return got is not None and self._apply_labelset(got[0])

    def rename_class(self, index: int, name: str) -> bool:
        got = self._edited_labelset(lambda ls: ls.rename(index, name))
        return got is not None and self._apply_labelset(got[0])

    def recolor_class(self, index: int, color) -> bool:
        got = self._edited_labelset(lambda ls: ls.recolor(index, tuple(color)))
        return got is not None and self._apply_labelset(got[0])

    def delete_class(self, index: int, replacement: int = 0) -> bool:
        """Delete a class; its pixels in every image become `replacement`. Clears undo history."""
        got = self._edited_labelset(lambda ls: ls.delete(index, replacement=replacement))
        if got is None:
            return False
        ls, lut = got
        if not self._apply_labelset(ls, lut):
            return False
        self.undo.clear_all()  # recorded patches use the old numbering
        if self.document is not None and self.project is not None:
            self.autosave.stack.setClean()
        return True

