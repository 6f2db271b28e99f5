"""Export a project in any format: the VOC export's safety for every writer.

`voc` is `storage.voc.export_voc` (its own options: layout, split, object maps). Every other
format goes the same way: the target is checked (`voc_target.check_target`: new, empty, or an
export of this project holding only what it wrote; another project's only with `replace_other`),
the writer writes into a hidden staging folder beside it, the marker lists every file written,
the format's own reader re-reads the stage and each label map is compared with the project's
(classes matched by name; within the writer's declared `tolerance`, void ignored when the
writer does not keep it), and only then is the stage swapped into place. An image that fails is
listed and left out; a whole-run failure (refused target, nothing exportable, disk full, a
failed check, the cancel hook) writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.storage.formats import reader, writer
from deeplab_studio.storage.formats.base import (
    Cancel, Cancelled, ExportItem, FormatError, Progress, export_stems, is_cancelled)
from deeplab_studio.storage.formats.class_names import plan_classes
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc import DEFAULT_STATUSES, ExportSummary, export_voc, parse_statuses
from deeplab_studio.storage.voc_format import shown
from deeplab_studio.storage.voc_target import (
    MARKER_FILE, check_target, export_marker, marker_text, staging, swap_into_place, written_files)


@dataclass
class DatasetExport:
    out_dir: Path  # where the dataset is (for VOC: its root, `destination/VOCdevkit/VOC2012` or flat)
    format: str
    keys: list[str]  # the project's images exported (relative paths)
    num_classes: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason): left out
    skipped: dict[str, int] = field(default_factory=dict)  # status -> images left out
    seconds: float = 0.0
    voc: ExportSummary | None = None  # the VOC export's own summary (format "voc")


def _project_labels(project: Project, rec) -> np.ndarray:
    return project.load_labels(rec)


def export_items(project: Project, statuses: Iterable[Status | str] = DEFAULT_STATUSES
                 ) -> tuple[list[ExportItem], dict[str, int]]:
    """The project's images with the chosen statuses as ExportItems, and the counts left out."""
    wanted = parse_statuses(statuses)
    items, skipped = [], {}
    for rec in project.records:
        if rec.status in wanted and project.has_annotation(rec):
            items.append(ExportItem(rec.path, project.image_path(rec), partial(_project_labels, project, rec),
                                    rec.size))
        else:
            skipped[rec.status.value] = skipped.get(rec.status.value, 0) + 1
    return items, skipped


def _checking(progress: Progress | None, cancel: Cancel) -> Progress:
    """`progress`, stopping the run (Cancelled) when `cancel` asks: writers report every item."""
    def report(done: int, total: int, what: str) -> None:
        if is_cancelled(cancel):
            raise Cancelled("export cancelled; nothing was written")
        if progress:
            progress(done, total, what)
    return report


def export_dataset(project: Project, out_dir: str | Path, fmt: str = "voc", *,
                   statuses: Iterable[Status | str] = DEFAULT_STATUSES, replace_other: bool = False,
                   progress: Progress | None = None, cancel: Cancel = None, **voc_options) -> DatasetExport:
    """Export the project's label maps with `statuses` as a `fmt` dataset at `out_dir`.
    `voc_options` (val_fraction, seed, objects, layout) are for `fmt="voc"` only."""
    t0 = time.perf_counter()
    report = _checking(progress, cancel)
    if fmt == "voc":
        s = export_voc(project, out_dir, statuses=statuses, replace_other=replace_other, progress=report,
                       **voc_options)
        keys = sorted((export_marker(s.out_dir) or {}).get("sources", {}).values())
        return DatasetExport(s.out_dir, fmt, keys, s.num_classes, s.failed, s.skipped, s.seconds, voc=s)
    if voc_options:
        raise ValueError(f"{', '.join(voc_options)}: options of the voc format only")
    wr = writer(fmt)
    reader(fmt)  # a format without a reader cannot be checked: refused before anything is written
    out = Path(out_dir).expanduser().resolve()
    check_target(project, out, replace_other=replace_other)
    items, skipped = export_items(project, statuses)
    if not items:
        wanted = ", ".join(s.value for s in parse_statuses(statuses))
        raise FormatError(f"{project.folder}: no images with status {wanted} to export")
    stems = export_stems(it.key for it in items)
    with staging(out, OSError, FormatError) as stage:
        failed = wr.write(stage, items, project.labels, progress=report)
        if is_cancelled(cancel):  # also when a writer took the progress hook's Cancelled for an item's failure
            raise Cancelled("export cancelled; nothing was written")
        bad = {k for k, _ in failed}
        done = [it for it in items if it.key not in bad]
        if not done:
            raise FormatError(f"{out}: none of the {len(items)} images could be exported, nothing was written "
                              f"(first: {failed[0][1] if failed else 'no reason given'})")
        (stage / MARKER_FILE).write_text(marker_text(
            project, {stems[it.key]: it.key for it in done}, format=fmt,
            statuses=[s.value for s in parse_statuses(statuses)], files=written_files(stage)), "utf-8")
        report(len(items), len(items), "checking the export")
        check_round_trip(stage, fmt, done, project, stems)
        swap_into_place(stage, out)
    failed_paths = [(shown(project.folder / k), why) for k, why in failed]
    return DatasetExport(out, fmt, sorted(it.key for it in done), len(project.labels), failed_paths, skipped,
                         time.perf_counter() - t0)


def check_round_trip(stage: Path, fmt: str, done: list[ExportItem], project: Project, stems: dict[str, str]) -> None:
    """Re-read the stage with the format's reader: every exported label map must come back (in
    the project's numbering) within the writer's tolerance; FormatError naming the first that
    does not."""
    wr = writer(fmt)
    tolerance = float(getattr(wr, "tolerance", 0.0))
    keeps_void = bool(getattr(wr, "keeps_void", True))

    def fail(why: str) -> None:
        raise FormatError(f"the {fmt} export failed its check and was not written: {why}")

    try:
        source = reader(fmt).read(stage)
    except FormatError as exc:
        fail(shown(exc).replace(f"{shown(stage)}{os.sep}", ""))
    if source.problems:
        fail(f"{shown(source.problems[0][0])}: {shown(source.problems[0][1])}")
    plan = plan_classes(source.class_names, source.colors, project.labels, adopt=False)
    unknown = [m.source for m in plan.matches if m.how == "added"]
    if unknown:
        fail(f"classes {', '.join(unknown)} are not the project's")
    back = {item.key: item for item in source.items}
    if len(back) != len(done):
        fail(f"{len(back)} items read back, {len(done)} written")
    for item in done:
        stem = stems[item.key]
        got = back.get(stem)
        if got is None:
            fail(f"{shown(stem)}: not read back")
        labels = plan.lut[np.asarray(got.read_labels())]
        want = item.labels()
        if labels.shape != want.shape:
            fail(f"{shown(stem)}: read back as {labels.shape[1]}×{labels.shape[0]}, is {want.shape[1]}×{want.shape[0]}")
        differ = labels != want
        if not keeps_void:
            differ &= want != IGNORE
        share = float(differ.mean()) if differ.size else 0.0
        if share > tolerance:
            fail(f"{shown(stem)}: {int(differ.sum())} pixels read back differ from the project's label map")
