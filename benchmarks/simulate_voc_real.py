"""Labelling effort on tests/data/voc_real: `deeplab-studio simulate` for each toolset at 85 % and
90 % mIoU with the bundled VOC model, and the README's table from those runs.

    .venv/bin/python benchmarks/simulate_voc_real.py [--out DIR] [--click]

Runs the CLI itself (a subprocess per run, `--json`), saves each report as DIR/<toolset>_<target>.json
(default DIR: a temporary folder) and prints a Markdown table: mean actions per image and per
object to each target (the cap, 20, counted where it is not reached), the start mIoU (the
proposal's; polygon starts from nothing), compute seconds per kept action, and how many images
reached the target. `polygon` also runs without the cap (--max-actions 1000) for its true vertex
count. `--click` adds assist with click to correct (needs `deeplab_studio.ml.click_correct`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOC = ROOT / "tests" / "data" / "voc_real"
MODEL = "deeplabv3_mobilenetv2_voc"


def run(toolset: str, target: float, out: Path, *, cap: int = 20, extra: tuple[str, ...] = (),
        model: bool = True) -> dict:
    name = f"{toolset}{''.join(extra).replace('-', '_')}{'' if model else '_no_model'}_{cap}_{target:g}.json"
    cmd = [sys.executable, "-m", "deeplab_studio", "simulate", str(VOC / "images"), str(VOC / "masks"),
           "--toolset", toolset, "--target", str(target), "--max-actions", str(cap), "--json", *extra]
    if toolset != "polygon" and model:
        cmd += ["--model", MODEL]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    (out / name).write_text(done.stdout, encoding="utf-8")
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the JSON reports here")
    ap.add_argument("--click", action="store_true", help="also assist with click to correct")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="simulate_voc_real_"))
    out.mkdir(parents=True, exist_ok=True)
    rows = [("polygon (no model)", "polygon", 20, (), False), ("polygon, no cap", "polygon", 1000, (), False),
            ("brush, no model", "brush", 20, (), False), ("assist (wand, brush, snap), no model", "assist", 20,
                                                            ("--no-click",), False),
            ("brush", "brush", 20, (), True), ("assist: wand, brush, snap", "assist", 20, ("--no-click",), True)]
    if args.click:
        rows.append(("assist + click to correct", "assist", 20, (), True))
    print("| toolset | actions / image to 85 % | to 90 % | actions / object to 85 % | to 90 % "
          "| start mIoU | s per action (85 / 90 %) | reached (85 / 90 %) | kept actions at 90 % |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_image: dict[str, list[str]] = {}
    for label, toolset, cap, extra, model in rows:
        reports = [run(toolset, t, out, cap=cap, extra=extra, model=model) for t in (0.85, 0.90)]
        for img in reports[1]["images"]:
            per_image.setdefault(img["image"], []).append(f"{img['actions']}{'' if img['reached'] else '*'}")
        tot = [r["total"] for r in reports]
        kept: dict[str, int] = {}
        for img in reports[1]["images"]:
            for k, v in img["used"].items():
                kept[k] = kept.get(k, 0) + v
        print(f"| {label} | {tot[0]['actions_per_image']:.1f} | {tot[1]['actions_per_image']:.1f} "
              f"| {tot[0]['actions_per_object']:.2f} | {tot[1]['actions_per_object']:.2f} "
              f"| {tot[0]['start_miou']:.3f} | {tot[0]['s_per_action']:.3f} / {tot[1]['s_per_action']:.3f} "
              f"| {tot[0]['reached']}/{tot[0]['images']} / {tot[1]['reached']}/{tot[1]['images']} "
              f"| {', '.join(f'{k} {v}' for k, v in sorted(kept.items()))} |", flush=True)
    print(f"\nactions per image to 90 % (* = the cap, not reached); columns as the rows above")
    print("| image | " + " | ".join(r[0] for r in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for name, counts in per_image.items():
        print(f"| {name} | " + " | ".join(counts) + " |")
    print(f"\nreports in {out}; objects counted: {tot[0]['objects']}")


if __name__ == "__main__":
    main()
