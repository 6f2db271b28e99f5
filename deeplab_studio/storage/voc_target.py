"""Where an export (VOC or any other format) may write: the export marker, the checks on the
target folder, staging and swap.

An export only replaces a folder that is new, empty, or marked (`.deeplab-studio-export.json`) as
an export of the same project and holding nothing but the files that export wrote. The marker
records its source project (absolute folder and data folder); a folder exported by another project
is replaced only when the caller says so (`replace_other=True`: the CLI's `--overwrite-other`, a
question in the window). Exports of other formats list every file they wrote in the marker
(`files`); a VOC export's files are known from its layout and ids. Export writes into a hidden
staging folder beside the target and swaps it in by renames; staging folders of killed exports
are removed by the next export to that folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deeplab_studio.storage.atomic import pid_alive
from deeplab_studio.storage.project import Project
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, CLASS_NAMES_FILE, DEVKIT_SUBDIR, JPEG_DIR, LABELMAP_FILE, OBJECT_DIR, SPLIT_DIR, SPLITS, VOCError, shown)

MARKER_FILE = ".deeplab-studio-export.json"
MARKER_VERSION = 2  # 2: "project": {"folder", "data_dir"}; 1 had only "source" (the folder)
_TOP_ENTRIES = {JPEG_DIR, CLASS_DIR, OBJECT_DIR, "ImageSets", CLASS_NAMES_FILE, LABELMAP_FILE, MARKER_FILE}
_OS_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}  # written by file browsers, not by users
_STAGE_RE = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


class ForeignExportError(VOCError):
    """The target folder holds another project's export (`other`: that project's folder)."""

    def __init__(self, message: str, other: str | None) -> None:
        super().__init__(message)
        self.other = other


def project_identity(project: Project) -> dict[str, str]:
    """What the marker records about its source project."""
    return {"folder": str(project.folder), "data_dir": str(project.data_dir)}


def export_marker(out_dir: str | Path) -> dict | None:
    """The export's metadata (source project, statuses, seed, id → source path), or None."""
    try:
        doc = json.loads((Path(out_dir) / MARKER_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def marker_text(project: Project, sources: dict[str, str], **options) -> str:
    """The marker's JSON (ASCII: file names that are not UTF-8 survive as `\\udcNN` escapes)."""
    ident = project_identity(project)
    return json.dumps({"format_version": MARKER_VERSION, "project": ident, "source": ident["folder"],
                       **options, "sources": sources}, indent=1)


def marker_owner(marker: dict) -> str | None:
    """The source project folder a marker names (either marker version), or None."""
    proj = marker.get("project")
    folder = proj.get("folder") if isinstance(proj, dict) else None
    folder = folder if isinstance(folder, str) else marker.get("source")
    return folder if isinstance(folder, str) and folder else None


def is_own_export(project: Project, marker: dict) -> bool:
    """True when the marker names this project (same folder, or the same data folder)."""
    ident, proj = project_identity(project), marker.get("project")
    if isinstance(proj, dict) and proj.get("data_dir") == ident["data_dir"]:
        return True
    return marker_owner(marker) == ident["folder"]


def other_project_export(project: Project, voc_root: str | Path) -> str | None:
    """The folder of the other project whose export `voc_root` holds (shown form), else None
    (new, empty, unmarked or this project's own export: `prepare_target` judges those)."""
    root = Path(voc_root).expanduser().resolve()
    marker = export_marker(root) if (root / MARKER_FILE).is_file() else None
    if marker is None or is_own_export(project, marker):
        return None
    return shown(marker_owner(marker) or "an unknown project")


def _expected_file(rel: Path, ids: set[str] | None) -> bool:
    """True for a file path (relative to the VOC root) an export with these ids writes."""
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in _TOP_ENTRIES or parts[0] in _OS_LITTER
    if parts[-1] in _OS_LITTER:
        return True
    if rel.parent == SPLIT_DIR:
        return rel.suffix == ".txt" and rel.stem in SPLITS
    if len(parts) == 2 and parts[0] in (JPEG_DIR, CLASS_DIR, OBJECT_DIR):
        ext = ".jpg" if parts[0] == JPEG_DIR else ".png"
        return rel.suffix == ext and (ids is None or rel.stem in ids)
    return False


def _foreign_files(root: Path, marker: dict) -> list[str]:
    """Files under a marked export that its export did not write (relative, sorted)."""
    sources = marker.get("sources")
    ids = set(sources) if isinstance(sources, dict) else None
    listed = marker.get("files")
    written = {f for f in listed if isinstance(f, str)} | {MARKER_FILE} if isinstance(listed, list) else None
    extra = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).relative_to(root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = here / name
            ok = (rel.as_posix() in written or name in _OS_LITTER) if written is not None else _expected_file(rel, ids)
            if not ok:
                extra.append(rel.as_posix())
    return sorted(extra)


def written_files(stage: Path) -> list[str]:
    """Every file under a staging folder (relative posix paths, sorted): the marker's `files`."""
    return sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file() or p.is_symlink())


def check_target(project: Project, out_dir: Path, *, replace_other: bool = False) -> None:
    """Refuse an export folder inside the image folder or above it, or one holding anything but
    an export of this project (of another project only with `replace_other`) and its own files."""
    inside = out_dir.is_relative_to(project.folder)
    if inside and not any(part.startswith(".") for part in out_dir.relative_to(project.folder).parts) or (
            project.folder.is_relative_to(out_dir)):
        raise VOCError(f"{out_dir}: the export folder must be outside the image folder {project.folder} "
                       "(its images would become project images)" if inside else
                       f"{out_dir}: the export folder cannot contain the image folder {project.folder}")
    if not os.path.lexists(out_dir):
        return
    if not out_dir.is_dir():
        raise VOCError(f"{out_dir}: exists and is not a folder")
    entries = {p.name for p in out_dir.iterdir()}
    if not entries - _OS_LITTER:
        return
    if MARKER_FILE not in entries:
        hint = (f" (it holds {DEVKIT_SUBDIR.parts[0]}/: a VOCdevkit-layout export goes to this folder with the "
                "VOCdevkit layout)" if DEVKIT_SUBDIR.parts[0] in entries else "")
        raise VOCError(f"{out_dir}: folder is not empty and not a previous DeepLab Studio export; "
                       f"choose an empty or new folder{hint}")
    marker = export_marker(out_dir)
    if marker is None:
        raise VOCError(f"{out_dir / MARKER_FILE}: unreadable export marker, so it is unknown which project "
                       "wrote this folder; choose another folder or move this one away")
    if not is_own_export(project, marker) and not replace_other:
        other = marker_owner(marker)
        raise ForeignExportError(f"{out_dir}: holds the export of another project ({other or 'unknown'}); "
                                 "choose another folder, or replace that export explicitly", other)
    extra = _foreign_files(out_dir, marker)
    if extra:
        listed = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise VOCError(f"{out_dir}: a previous export, but it also holds {listed}; move those away or choose "
                       "another folder (the export replaces the folder)")


def check_destination(destination: Path, layout: str) -> None:
    """For the devkit layout: the destination itself must not be a flat export (it would end
    holding both, and the next flat export there would be refused)."""
    if layout == "devkit" and (destination / MARKER_FILE).is_file():
        raise VOCError(f"{destination}: holds a flat-layout export; export with the flat layout to update it, "
                       "or choose another folder for the VOCdevkit layout")


def make_stage(out_dir: Path) -> tuple[Path, list[Path]]:
    """Create the hidden staging folder beside `out_dir`; returns it and the parent folders this
    call created (removed again by `remove_stage` when the export fails)."""
    created = []
    for parent in reversed([out_dir.parent, *out_dir.parent.parents]):
        if not os.path.lexists(parent):
            created.append(parent)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        remove_stage(None, created)
        raise VOCError(f"{out_dir}: cannot write the export there ({exc.strerror or exc})") from None
    remove_dead_stages(out_dir)
    return stage, created


def remove_stage(stage: Path | None, created: list[Path]) -> None:
    """Delete a failed export's staging folder and the (still empty) parents it created."""
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass


def remove_dead_stages(out_dir: Path) -> None:
    """Delete staging/old folders of earlier exports to `out_dir` whose process was killed."""
    try:
        entries = list(out_dir.parent.iterdir())
    except OSError:
        return
    for p in entries:
        m = _STAGE_RE.match(p.name)
        if m and m["name"] == out_dir.name and p.is_dir() and not pid_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def staging(out_dir: Path, write_errors: type[BaseException], error: type[Exception]) -> Iterator[Path]:
    """A new staging folder beside `out_dir` (`make_stage`) for the body to fill and swap into
    place (`export_voc` and every other format's export). When the body fails the stage is
    removed: a `write_errors` failure is raised as one `error` line naming the file that could
    not be written (relative to the stage), anything else as it is."""
    stage, created = make_stage(out_dir)
    try:
        yield stage
    except write_errors as exc:
        remove_stage(stage, created)
        what = shown(exc).replace(f"{shown(stage)}{os.sep}", "")
        raise error(f"{out_dir}: cannot write the export ({what}); nothing was written") from None
    except BaseException:
        remove_stage(stage, created)
        raise


def swap_into_place(stage: Path, out_dir: Path) -> None:
    """Rename the checked staging folder to `out_dir`, moving a previous export out of the way first."""
    old = None
    if os.path.lexists(out_dir):
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
