"""`predict`'s inputs: the image files of the INPUT arguments, each with its output name under OUT
(sub-folders of folder inputs mirrored, clashes renamed) and the key that decides its shard."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from deeplab_studio.commands import CommandError


class Input(NamedTuple):
    path: Path  # the image file
    stem: Path  # its outputs' name relative to OUT, without suffix
    key: str  # its path relative to its input folder (posix; a file input: its name): decides its shard


def collect_inputs(inputs: list[str], *, exclude: Path | None = None) -> list[Input]:
    """Every input file and image in input folders, with its output stem and shard key.

    Stems mirror sub-folders of folder inputs; clashes (same stem from two inputs, or `a.jpg`
    beside `a.png`) get the extension appended, then a counter, in input order.
    """
    from deeplab_studio.storage.images import is_image_file

    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            files = sorted(
                f for f in root.rglob("*")
                if f.is_file() and is_image_file(f)
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
                and not (exclude is not None and f.resolve().is_relative_to(exclude))
            )
            items = [(f, f.relative_to(root)) for f in files]
        elif root.is_file():
            items = [(root, Path(root.name))]
        else:
            raise CommandError(f"{arg}: no such file or folder")
        for path, rel in items:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append((path, rel))
    taken: set[str] = set()
    named: list[Input] = []
    for path, rel in found:
        stem = rel.with_suffix("")
        candidates = [stem, stem.with_name(f"{stem.name}_{path.suffix.lstrip('.').lower()}")]
        candidates += [stem.with_name(f"{stem.name}_{n}") for n in range(2, len(found) + 2)]
        for cand in candidates:
            if cand.as_posix().lower() not in taken:
                taken.add(cand.as_posix().lower())
                named.append(Input(path, cand, rel.as_posix()))
                break
    return named


def collect_images(inputs: list[str], *, exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output stem relative to OUT) of `collect_inputs`."""
    return [(item.path, item.stem) for item in collect_inputs(inputs, exclude=exclude)]
