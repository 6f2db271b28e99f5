"""`deeplab-studio simulate IMAGES MASKS --toolset polygon|brush|assist`: labelling effort, measured.

A scripted user labels each image from scratch with the app's own tools (headless) and the
count of actions until the image's mIoU reaches the target is printed, as interactive
segmentation's NoC@85/90 counts clicks. The rules (fixed: they are the yardstick) are in the
help text below and in `session.simulator`, `session.sim_rules`, `session.sim_polygon`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deeplab_studio.commands import CommandError

RULES = """\
rules (fixed; the yardstick of issue 14):
  The user sees the truth. Each step compares the label map with the ground truth (void 255
  ignored), splits the wrong pixels by true class into 4-connected regions, takes the largest,
  and acts at its most interior pixel (maximum of the distance transform, the image border
  counting as outside) with the true class there. One click, one brush stroke or one polygon
  vertex is one action. An image stops when its mIoU over the classes of its ground truth
  reaches --target, or at --max-actions; then the cap is counted (as NoC does).
  polygon: no model. Each object (an 8-connected component of one non-background class, specks
    under 10 px left out) is one polygon along its outer ground-truth contour, largest first;
    the fewest Douglas-Peucker vertices (tolerances 64..0.5 px) that reach the target are
    counted (greedy by mIoU gain per vertex, then trimmed; or one tolerance for all, if fewer).
  brush: the model's proposal (with --model), then per action one brush click at the chosen
    pixel whose disk is the largest that fits the error region there (radius capped at 50 px).
  assist: the proposal, then per action each of the app's assisted tools is tried at the chosen
    pixel, as the app applies it (human pixels protected), and the one that raises the mIoU
    most is kept: the superpixel wand at each scale, the brush stamp as above, the same stamp
    snapped to edges by the CRF, and click to correct the model when this build has it.
  Objects in the per-object figure: 8-connected components of a non-background class with at
  least 100 pixels. Compute seconds: the proposal, the set-up once per image (superpixels, click
  to correct's features) and the kept actions (what the app would run); the simulator's own
  trials are not counted there; seconds per action are the kept actions' own."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = RULES
    parser.add_argument("images", help="an image, or a folder of images (searched recursively)")
    parser.add_argument("masks", help="the ground truth: an index/palette PNG, or a folder of them named like the images")
    parser.add_argument("--toolset", required=True, choices=("polygon", "brush", "assist"))
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help="propose with this model first (a bundled model's name or a checkpoint, as in predict); "
                             "without it brush and assist start from an empty map; polygon never uses one")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    parser.add_argument("--target", type=float, default=0.90, help="the mIoU to reach (default 0.90)")
    parser.add_argument("--max-actions", type=int, default=20, metavar="N", help="the cap per image (default 20)")
    parser.add_argument("--no-click", action="store_true", help="assist without click to correct")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def pairs(images: str, masks: str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem; CommandError when none match."""
    from deeplab_studio.storage.images import IMAGE_EXTENSIONS

    img_root, mask_root = Path(images), Path(masks)
    for p in (img_root, mask_root):
        if not p.exists():
            raise CommandError(f"{p}: no such file or folder")
    found = [img_root] if img_root.is_file() else sorted(
        f for f in img_root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if mask_root.is_file():
        if len(found) != 1:
            raise CommandError("a single MASKS file needs a single image")
        return [(found[0], mask_root)]
    by_stem = {f.stem: f for f in mask_root.rglob("*.png")}
    out = [(f, by_stem[f.stem]) for f in found if f.stem in by_stem]
    if not out:
        raise CommandError(f"no image in {images} has a mask of the same name in {masks}")
    return out


def _tools(args, predictor):
    """The assist toolset: wand scales, brush, snapped brush, click to correct (when built)."""
    from deeplab_studio.ml.crf import refine
    from deeplab_studio.session.simulator import ClickCorrect, default_tools
    from deeplab_studio.session.snap import StrokeSnapper
    from deeplab_studio.session.superpixels import SCALES

    corrector = None
    if predictor is not None and not args.no_click and predictor.loaded is not None:
        try:
            from deeplab_studio.ml.click_correct import ClickCorrector
        except ImportError:  # a build without click to correct
            ClickCorrector = None
        if ClickCorrector is not None:
            cc = ClickCorrector(predictor.loaded, device=args.device if args.device != "auto" else "cpu")
            corrector = ClickCorrect(cc.set_image, lambda clicks, labels, edit: cc.correct(clicks, labels, edit))
    return default_tools(len(SCALES), StrokeSnapper(refine), corrector)


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.session.simulator import simulate_image
    from deeplab_studio.storage.images import ImageReadError, read_image
    from deeplab_studio.storage.labelmaps import read_label_png

    if not 0 < args.target <= 1:
        raise CommandError(f"--target must lie in (0, 1], not {args.target}")
    if args.max_actions < 1:
        raise CommandError(f"--max-actions must be at least 1, not {args.max_actions}")
    work = pairs(args.images, args.masks)
    predictor = None
    if args.model is not None and args.toolset != "polygon":
        from deeplab_studio.commands.predict import load_predictor

        opts = argparse.Namespace(model=args.model, device=args.device, output_stride=None, tta=None,
                                  tile_size=1024, max_side=None)
        predictor = load_predictor(opts, keep_probs=False)
    tools = _tools(args, predictor) if args.toolset == "assist" else None
    results, t_start = [], time.perf_counter()
    if not args.json:
        print(f"{'image':<24}{'actions':>8}{'':<7}{'start':>9}{'end':>9}{'objects':>8}{'compute s':>10}  kept actions")
    for image_path, mask_path in work:
        try:
            image, gt = read_image(image_path), read_label_png(mask_path)
        except (ImageReadError, OSError) as exc:
            print(f"skipped {image_path}: {exc}", file=sys.stderr)
            continue
        if gt.shape != image.shape[:2]:
            print(f"skipped {image_path}: the mask is {gt.shape[1]}×{gt.shape[0]}, the image "
                  f"{image.shape[1]}×{image.shape[0]}", file=sys.stderr)
            continue
        proposal, proposal_s = None, 0.0
        if predictor is not None:
            t0 = time.perf_counter()
            proposal = predictor.predict(image).labels
            proposal_s = time.perf_counter() - t0
        res = simulate_image(image_path.stem, image, gt, args.toolset, target=args.target,
                             max_actions=args.max_actions, proposal=proposal, proposal_s=proposal_s, tools=tools)
        results.append(res)
        if not args.json:
            print(f"{res.name:<24}{res.actions:>8}{'' if res.reached else ' (cap)':<7}{res.proposal_miou:>9.4f}"
                  f"{res.miou:>9.4f}{res.objects:>8}{res.compute_s:>10.2f}  "
                  + " ".join(f"{k}:{v}" for k, v in sorted(res.used.items())), flush=True)
    if not results:
        raise CommandError("no image could be simulated")
    total = summary(results, time.perf_counter() - t_start)
    if args.json:
        print(json.dumps({"toolset": args.toolset, "target": args.target, "max_actions": args.max_actions,
                          "model": args.model, "tools": [t.name for t in tools] if tools else [args.toolset],
                          "images": [_row(r) for r in results], "total": total}, indent=1))
    else:
        print(f"{len(results)} images, target {args.target:g}, cap {args.max_actions}: "
              f"{total['actions_per_image']:.2f} actions per image, {total['actions_per_object']:.2f} per object "
              f"({total['reached']} of {len(results)} reached); start mIoU {total['start_miou']:.4f}, end "
              f"{total['end_miou']:.4f}; compute {total['compute_s']:.1f} s ({total['s_per_action']:.3f} s per action), "
              f"simulation {total['wall_s']:.1f} s")
    return 0


def _row(r) -> dict:
    return {"image": r.name, "actions": r.actions, "reached": r.reached, "start_miou": round(r.proposal_miou, 5),
            "miou": round(r.miou, 5), "objects": r.objects, "proposal_s": round(r.proposal_s, 3),
            "setup_s": round(r.setup_s, 3), "actions_s": round(r.actions_s, 3),
            "compute_s": round(r.compute_s, 3), "sim_s": round(r.sim_s, 3), "used": dict(r.used)}


def summary(results, wall_s: float) -> dict:
    actions = sum(r.actions for r in results)
    kept = sum(sum(r.used.values()) for r in results)
    objects = sum(r.objects for r in results)
    return {"images": len(results), "actions": actions, "actions_per_image": actions / len(results),
            "objects": objects, "actions_per_object": actions / max(objects, 1),
            "reached": sum(r.reached for r in results),
            "start_miou": float(np.mean([r.proposal_miou for r in results])),
            "end_miou": float(np.mean([r.miou for r in results])),
            "compute_s": sum(r.compute_s for r in results),
            "s_per_action": sum(r.actions_s for r in results) / max(kept, 1), "wall_s": wall_s}
