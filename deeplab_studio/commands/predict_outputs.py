"""Where `predict` may write: never over an input image or a file it did not create.

Predict's own files are listed in `OUT/.deeplab-studio-predict.jsonl`, one (file, sha256) line
appended *before* each write: a file is replaced only while its bytes are bytes predict wrote under
that name, so a file the user edited or put there is kept; each target is checked again just
before it is written. A crash, a lost list or a concurrent run can only make predict refuse.

A shard (`predict --shard K/N`) appends to its own list, `.deeplab-studio-predict.shard-K-of-N.jsonl`,
so shards running at once into one OUT never write the same file; every list in OUT counts as
predict's record. Each line may carry `run`, a key of the model and the options that change labels
(`predict.run_key`): an image whose files all exist with a listed digest of the current run key is
complete, and a resumed run skips it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from deeplab_studio.commands import CommandError


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


MANIFEST_NAME = ".deeplab-studio-predict.jsonl"
MANIFEST_GLOB = ".deeplab-studio-predict*.jsonl"  # the plain list and every shard's


def manifest_name(shard: tuple[int, int] | None = None) -> str:
    """The list a run appends to: the plain one, or shard K of N's own."""
    return MANIFEST_NAME if shard is None else f".deeplab-studio-predict.shard-{shard[0]}-of-{shard[1]}.jsonl"
RUN_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}  # doom every later write too


def _signature(path: Path) -> tuple[int, ...] | None:
    """None if nothing is at `path`; (size, mtime, inode) of a regular file; (-1,) for anything else."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if stat.S_ISREG(st.st_mode) else (-1,)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class OutputGuard:
    """The files predict may write in OUT (the rule: see the module docstring). `check` before any
    work; `write` per file (re-checks, records in the manifest, writes atomically); `close` at the end."""

    def __init__(self, out: Path, *, manifest: str = MANIFEST_NAME, run: str | None = None) -> None:
        self.out, self.manifest, self.run = out, out / manifest, run
        self.known: dict[str, dict[str, str | None]] = {}  # file (relative, posix) -> {digest predict wrote: run}
        for path in sorted(out.glob(MANIFEST_GLOB)) if out.is_dir() else []:
            for rel, digests in self._read(path).items():
                self.known.setdefault(rel, {}).update(digests)
        self.planned: dict[str, tuple[int, ...] | None] = {}  # file -> its _signature at check time
        self.digests: dict[str, str] = {}  # file -> sha256 of its bytes at check time
        self.written: dict[str, str] = {}
        self._log: Any = None

    @staticmethod
    def _read(manifest: Path) -> dict[str, dict[str, str | None]]:
        known: dict[str, dict[str, str | None]] = {}
        try:
            lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return known
        except OSError as exc:
            raise CommandError(f"{manifest}: cannot read predict's list of its files ({exc.strerror})") from None
        for line in lines:
            try:
                entry = json.loads(line)
                run = entry.get("run")
                known.setdefault(str(entry["file"]), {})[str(entry["sha256"])] = None if run is None else str(run)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # e.g. a torn last line after a crash: its file is simply not ours
        return known

    def check(self, files: list[str], inputs: list[Path]) -> None:
        """CommandError if a target is an input image or an existing file predict did not write."""
        ids = {(st.st_dev, st.st_ino) for st in map(_stat, inputs) if st is not None and st.st_ino}
        names = {os.path.normcase(p.resolve()) for p in inputs}
        clash, foreign = [], []
        for rel in files:
            path = self.out / rel
            sig = self.planned[rel] = _signature(path)
            if sig is None:
                continue
            st = _stat(path)  # follows links: a link to an input is that input
            if (st and st.st_ino and (st.st_dev, st.st_ino) in ids) or os.path.normcase(path.resolve()) in names:
                clash.append(path)
            elif sig == (-1,) or not self._ours(rel, path):  # a folder or link is never ours
                foreign.append(path)
        for found, why in ((clash, "it is an input image (choose another --out)"),
                           (foreign, "predict did not write it, or it was changed since (move it away or choose "
                                     "another --out)")):
            if found:
                more = f" and {plural(len(found) - 1, 'other file')}" if len(found) > 1 else ""
                raise CommandError(f"refusing to write over {found[0]}{more}: {why}")

    def _ours(self, rel: str, path: Path) -> bool:
        try:
            self.digests[rel] = _sha256(path)
        except OSError:
            return False
        return self.digests[rel] in self.known.get(rel, ())

    def complete(self, files: list[str]) -> bool:
        """True if every file (checked by `check`) is there, unchanged, with bytes listed under this
        run's key: the image need not be predicted again."""
        def done(rel: str) -> bool:
            seen = self.planned.get(rel)
            listed = self.known.get(rel, {})
            return seen is not None and _signature(self.out / rel) == seen and rel in self.digests \
                and listed.get(self.digests[rel], "") == self.run
        return self.run is not None and all(done(rel) for rel in files)

    def write(self, rel: str, data: bytes) -> None:
        """Write `data` to OUT/`rel` if it is still as `check` found it (else FileExistsError)."""
        from deeplab_studio.storage.atomic import atomic_write_bytes

        path = self.out / rel
        if _signature(path) != self.planned.get(rel):
            raise FileExistsError(f"{path}: appeared or changed since predict started; not overwritten")
        digest = hashlib.sha256(data).hexdigest()
        try:  # listed before the file exists: a crash in between leaves a listed digest, never an unlisted file
            self._log = self._log or open(self.manifest, "a", encoding="utf-8")
            self._log.write(_line(rel, digest, self.run))
            self._log.flush()
        except OSError as exc:
            raise CommandError(f"{self.manifest}: cannot record predict's files ({exc.strerror})") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        self.written[rel] = digest

    def close(self) -> None:
        """Compact this run's list (atomically): each file this run wrote keeps only its digest on disk."""
        from deeplab_studio.storage.atomic import atomic_write_text

        if self._log is None:
            return
        self._log.close()
        self._log = None
        try:
            known = self._read(self.manifest) | {rel: {d: self.run} for rel, d in self.written.items()}  # other runs
            atomic_write_text(self.manifest, "".join(_line(rel, d, known[rel][d])
                                                     for rel in sorted(known) for d in sorted(known[rel])))
        except (OSError, CommandError):
            pass  # the appended lines are still there and still valid


def _line(rel: str, digest: str, run: str | None) -> str:
    entry = {"file": rel, "sha256": digest} | ({} if run is None else {"run": run})
    return json.dumps(entry) + "\n"


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def output_files(stem: Path, *, probs: bool, overlay: bool) -> list[str]:
    """The files (relative to OUT, posix) predict writes for one image."""
    return [stem.as_posix() + suffix for suffix in [".png"] + [".probs.npy"] * probs + [".overlay.jpg"] * overlay]
