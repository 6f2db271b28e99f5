"""Opening a folder as the user expects: for writing, or read-only when another program has it
open for writing (saying who), and the notes to show about what was found."""

from __future__ import annotations

from pathlib import Path

from deeplab_studio.storage.project import Project, ProjectLockedError
from deeplab_studio.storage.project_lock import describe_holder


def open_project(folder) -> tuple[Project, str]:
    """The project of `folder` for writing, or read-only when another writer has it (then the
    second value says why)."""
    try:
        return Project.open(folder), ""
    except ProjectLockedError:
        project = Project.open(folder, read_only=True)
        return project, f"{describe_holder(project.data_dir)} has this project open for writing."


def opening_notes(project: Project, locked: str = "") -> list[str]:
    """What the user should know about a project just opened: read-only, annotations kept
    elsewhere, damaged or missing files, recovered edits."""
    notes = [p.message for p in project.problems] + list(project.notes)
    if Path(project.data_dir).resolve().parent != Path(project.folder).resolve():
        notes.insert(0, f"The folder is not writable; annotations are kept in {project.data_dir}")
    if locked:
        notes.insert(0, f"Read-only: {locked} Changes made in this window are not saved.")
    return notes
