"""`predict` on one machine: a plain run vs `--shard` ×2 processes vs `--engine ray --workers 2`.

    .venv/bin/python benchmarks/bench_predict_scale.py [--images 100] [--model NAME] [--rounds 1]

The same `--images` files (the ten real VOC photographs of tests/data/voc_real, copied under
distinct names; 500×375 to 513×513) go through the command line each way, each in fresh processes,
so every figure includes what a user waits for: interpreter and torch start-up, the model load
(once per process or actor), Ray's start and shutdown:

- plain: one process, torch's default threads (all cores);
- plain, 1 thread: one process, OMP_NUM_THREADS=1 (what each shard or Ray worker gets);
- shards ×2: `--shard 0/2` and `--shard 1/2` started together, one thread each (wall: until both end);
- ray ×2: `--engine ray --workers 2 --cpus-per-worker 1` with a local Ray started for the run.

Printed: wall seconds, images/s, the ratio to the plain run measured in the same round, and whether
every mode wrote the same label PNGs as the plain run (byte for byte). With `--rounds R` the modes
are interleaved R times and the median is shown. On a machine with two cores (and other work on
it) a parallel run cannot beat a plain run that already uses both cores: the figures show the
overhead of sharding and of Ray, not a speed-up; on N cores or N machines the shards scale out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "voc_real" / "images"
MODES = {"plain": "plain", "plain1": "plain, 1 thread", "shards": "shards ×2", "ray": "ray ×2"}


def make_inputs(folder: Path, n: int) -> None:
    sources = sorted(SOURCE.iterdir())
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"{i:04d}_{src.name}")


def predict(inputs: Path, out: Path, extra: list[str], threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "deeplab_studio", "predict", str(inputs), "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(procs: list[subprocess.Popen], start: float) -> float:
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"predict failed ({proc.returncode}):\n{err}")
    return time.perf_counter() - start


def run_mode(mode: str, inputs: Path, out: Path, model: list[str]) -> float:
    start = time.perf_counter()
    if mode == "plain":
        return timed([predict(inputs, out, model, None)], start)
    if mode == "plain1":
        return timed([predict(inputs, out, model, 1)], start)
    if mode == "shards":
        return timed([predict(inputs, out, [*model, "--shard", f"{k}/2"], 1) for k in range(2)], start)
    if mode == "ray":
        return timed([predict(inputs, out, [*model, "--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"],
                              None)], start)
    raise ValueError(mode)


def labels(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default=None, help="a model for predict --model (default: the bundled VOC model)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    model = ["--model", args.model] if args.model else []
    times: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    same: dict[str, bool] = {m: True for m in modes}
    print(f"{args.images} images, {os.cpu_count()} CPUs, torch threads by default: all; {args.rounds} round(s)",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_predict_scale_") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        make_inputs(inputs, args.images)
        reference: dict[str, bytes] | None = None
        for r in range(args.rounds):
            measured: dict[str, float] = {}
            for mode in modes:
                out = Path(tmp) / f"out_{r}_{modes.index(mode)}"
                measured[mode] = run_mode(mode, inputs, out, model)
                got = labels(out)
                reference = reference or got
                same[mode] &= got == reference and len(got) == args.images
                print(f"  round {r + 1}: {MODES[mode]:<16} {measured[mode]:7.1f} s", flush=True)
                shutil.rmtree(out)
            for mode in modes:
                times[mode].append(measured[mode])
                if "plain" in measured:
                    ratios[mode].append(measured["plain"] / measured[mode])
    print(f"\n{'mode':<16} {'wall s':>8} {'images/s':>9} {'× plain':>8}  labels = plain run")
    for mode in modes:
        wall = statistics.median(times[mode])
        ratio = f"{statistics.median(ratios[mode]):8.2f}" if ratios[mode] else f"{'-':>8}"
        print(f"{MODES[mode]:<16} {wall:8.1f} {args.images / wall:9.2f} {ratio}  {'yes' if same[mode] else 'NO'}")


if __name__ == "__main__":
    main()
