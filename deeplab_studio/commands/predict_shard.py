"""`predict --shard K/N` (one of N independent processes) and `predict --merge-report OUT`.

An image belongs to shard `sha256(its path relative to its input folder) mod N`: the split needs no
coordination, does not depend on the order or the number of files, and adding files never moves an
image that was already assigned. K counts from 0, as `$SLURM_ARRAY_TASK_ID` with `--array=0-(N-1)`
and Kubernetes' `$JOB_COMPLETION_INDEX` do.

Each shard writes `OUT/.deeplab-studio-predict.shard-K-of-N.summary.json` when it starts (status
"running": a killed shard leaves it so) and when it ends ("finished", or "stopped" with the reason):
the inputs it was given, its images by output name with their input path, which it wrote, which
were already complete, which failed and why, and its seconds. `merge_report` totals them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict_inputs import collect_inputs
from deeplab_studio.commands.predict_outputs import plural

SUMMARY_RE = re.compile(r"\.deeplab-studio-predict\.shard-(\d+)-of-(\d+)\.summary\.json")
SHOWN = 20  # names listed per kind of problem in the report


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` as (K, N) with 0 <= K < N; anything else is a CommandError."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise CommandError(f"--shard {text}: expected K/N, e.g. 0/4 (K counts from 0)")
    k, n = int(match[1]), int(match[2])
    if n < 1 or k >= n:
        raise CommandError(f"--shard {text}: K must be 0 to N-1 (K counts from 0: use "
                           f"--array=0-{max(n - 1, 0)} with $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return k, n


def shard_of(key: str, n: int) -> int:
    """The shard (0..n-1) of an input, from its path relative to its input folder (posix)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def summary_path(out: Path, shard: tuple[int, int]) -> Path:
    return out / f".deeplab-studio-predict.shard-{shard[0]}-of-{shard[1]}.summary.json"


def listing_digest(names: list[str]) -> str:
    """A digest of the whole input listing (output names), equal in every shard that saw the same inputs."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()


class ShardSummary:
    """One shard's summary file, rewritten atomically at the start and at the end of its run."""

    def __init__(self, out: Path, shard: tuple[int, int], listing: list[Any], mine: list[Any], *, run: str,
                 model: str, engine: str) -> None:
        """`listing`: every input (`predict.Input`: path, stem, key); `mine`: this shard's."""
        self.path = summary_path(out, shard)
        self.names = {item.path: item.stem.as_posix() for item in mine}  # images are named by output stem
        self.data: dict[str, Any] = {
            "shard": shard[0], "of": shard[1], "status": "running", "inputs": len(listing),
            "inputs_sha256": listing_digest([item.stem.as_posix() for item in listing]), "run": run,
            "model": model, "engine": engine, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.time(), "ended_at": None, "seconds": None,
            "assigned": {item.stem.as_posix(): item.key for item in mine}, "skipped": [], "written": [], "failed": {},
        }

    def start(self, skipped: list[Any]) -> None:
        self.data["skipped"] = sorted(self.names[item.path] for item in skipped)
        self._save()

    def finish(self, written: list[Path], failed: dict[Path, str], *, error: str | None = None) -> None:
        ended = time.time()
        self.data.update(status="stopped" if error else "finished", ended_at=ended,
                         seconds=round(ended - self.data["started_at"], 3),
                         written=sorted(self.names[p] for p in written),
                         failed={self.names[p]: why for p, why in sorted(failed.items())})
        if error:
            self.data["error"] = error
        self._save()

    def _save(self) -> None:
        from deeplab_studio.storage.atomic import atomic_write_json

        try:
            atomic_write_json(self.path, self.data, indent=None)
        except OSError as exc:
            print(f"warning: {self.path}: cannot write the shard's summary ({exc.strerror})", file=sys.stderr)


# --- the merged report -------------------------------------------------------------------------------
def _load(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(out.iterdir()) if out.is_dir() else []:
        if not SUMMARY_RE.fullmatch(path.name):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            int(data["shard"]), int(data["of"]), dict(data["assigned"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"warning: {path}: not a readable shard summary ({exc}); ignored", file=sys.stderr)
            continue
        found.append(data)
    return found


def _names(items: list[str] | dict[str, Any]) -> str:
    shown = list(items)[:SHOWN]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def report(args: Any) -> int:
    """`predict --merge-report OUT [INPUT...]`."""
    if args.out or args.shard or args.engine != "plain":
        raise CommandError("--merge-report OUT reads the shards' summaries: it takes no --out, --shard or --engine")
    out = Path(args.merge_report)
    listing = collect_inputs(args.inputs, exclude=out.resolve()) if args.inputs else None
    return merge_report(out, None if listing is None else {item.stem.as_posix(): item.key for item in listing})


def merge_report(out: Path, expected: dict[str, str] | None = None) -> int:
    """Print the totals of the shard summaries in `out`; 0 if every input is done exactly once.

    `expected` (output name -> input path), when given, is the listing to check against (e.g.
    after files were added); otherwise the shards' own listings are."""
    summaries = _load(out)
    if not summaries:
        raise CommandError(f"{out}: no shard summaries found (run 'deeplab-studio predict --shard K/N "
                           f"--out {out} ...' first)")
    newest = max(summaries, key=lambda s: s.get("ended_at") or s.get("started_at") or 0)
    n = int(newest["of"])
    ignored = [s for s in summaries if int(s["of"]) != n]
    by_shard = {int(s["shard"]): s for s in summaries if int(s["of"]) == n}
    lines = [f"predict shards in {out}: {len(by_shard)} of {n} reported, "
             f"{sum(s.get('status') == 'finished' for s in by_shard.values())} finished"]
    if ignored:
        lines.append(f"note: ignored {plural(len(ignored), 'summary')} of a split into other numbers of shards "
                     f"({', '.join(sorted({str(s['of']) for s in ignored}))})")
    done: Counter[str] = Counter()
    failed: dict[str, str] = {}
    assigned: dict[str, str] = {}
    written = skipped = 0
    for k in range(n):
        s = by_shard.get(k)
        if s is None:
            lines.append(f"shard {k}/{n}: no summary (not started yet, or its OUT is elsewhere)")
            continue
        ok = list(s.get("written", [])) + list(s.get("skipped", []))
        done.update(ok)
        failed.update(s.get("failed", {}))
        assigned.update(s["assigned"])
        written, skipped = written + len(s.get("written", [])), skipped + len(s.get("skipped", []))
        state = s.get("status", "?")
        if state == "running":
            state = "running, or killed (no end recorded)"
        elif state == "stopped":
            state = f"stopped: {s.get('error', '')}"
        secs = s.get("seconds")
        timing = f" in {secs:.1f} s ({len(s.get('written', [])) / secs:.2f} images/s)" if secs else ""
        lines.append(f"shard {k}/{n}: {plural(len(s['assigned']), 'image')}: {len(s.get('written', []))} written, "
                     f"{len(s.get('skipped', []))} already done, {len(s.get('failed', {}))} failed{timing} "
                     f"on {s.get('host', '?')} [{state}]")
    digests = {s.get("inputs_sha256") for s in by_shard.values()}
    if len(digests) > 1:
        lines.append("note: the shards listed different inputs (files added or removed between their runs?)")
    if expected is None:
        expected = dict(assigned)
        total = max((int(s.get("inputs", 0)) for s in by_shard.values()), default=0)
    else:
        total = len(expected)
    twice = sorted(name for name, count in done.items() if count > 1)
    extra = sorted(set(done) - set(expected))
    failed = {name: why for name, why in failed.items() if name not in done and name in expected}
    missing = sorted(set(expected) - set(done) - set(failed))
    unknown = total - len(expected)  # inputs of shards without a summary: their names are not known here
    ends = [s["ended_at"] for s in by_shard.values() if s.get("ended_at")]
    wall = max(ends) - min(s["started_at"] for s in by_shard.values()) if ends else 0.0
    work = sum(s.get("seconds") or 0.0 for s in by_shard.values())
    rate = f" ({written / wall:.2f} images/s)" if wall > 0 else ""
    lines.append(f"total: {plural(total, 'input')}: {len(set(done) & set(expected))} done ({written} written, "
                 f"{skipped} already done), {len(failed)} failed, {len(missing) + max(unknown, 0)} missing; "
                 f"{work:.1f} s of shard time, {wall:.1f} s from the first start to the last end{rate}")
    for what, names in (("missing (no output)", missing), ("done more than once", twice),
                        ("done but not an input now", extra)):
        if names:
            lines.append(f"{what}: {_names([expected.get(x, x) for x in names])}")
    if unknown > 0:
        lines.append(f"missing: {unknown} inputs of the shards without a summary (give the INPUTs to "
                     "--merge-report to name them)")
    if failed:
        lines.append(f"failed ({len(failed)}; run their shards again once fixed):")
        lines += [f"  {why}" for why in list(failed.values())[:SHOWN]]
        lines += [f"  and {len(failed) - SHOWN} more"] if len(failed) > SHOWN else []
    print("\n".join(lines))
    complete = len(by_shard) == n and all(s.get("status") == "finished" for s in by_shard.values())
    return 0 if complete and not (failed or missing or twice or unknown > 0) else 1
