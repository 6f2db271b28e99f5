"""Dense CRF refinement: quality on real VOC samples, protection, void, speed paths, validation."""

from __future__ import annotations

from dataclasses import replace

import threading

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.core.scenes import generate_scene
from deeplab_studio.ml import crf, crf_engine, crf_reference
from deeplab_studio.ml.crf import CRFParams, refine, refine_labels

IDS = (1, 23, 114)


def _indices(rgb: np.ndarray) -> np.ndarray:
    """VOC colours -> indices ((224,224,192) -> 255); an unknown colour fails the test."""
    cmap = voc_colormap(256).astype(np.int64)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    table = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    table[int(keys[IGNORE])] = IGNORE
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    return np.array([table[int(k)] for k in uniq], dtype=np.uint8)[inv].reshape(packed.shape)


@pytest.fixture(scope="module")
def samples(data_dir) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """id -> (image, DeepLab v3+ prediction, ground truth with 255 = void)."""
    out = {}
    for n in IDS:
        def rgb(kind: str) -> np.ndarray:
            return np.asarray(Image.open(data_dir / "voc_samples" / f"{n}_{kind}.png").convert("RGB"))
        out[n] = (rgb("image"), _indices(rgb("pred")), _indices(rgb("target")))
    return out


def miou(gt: np.ndarray, pred: np.ndarray) -> float:
    cm = ConfusionMatrix(21)
    cm.update(gt, pred)
    return cm.miou()


def _two_tone(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """A dark left half and a bright right half, with a little noise."""
    img = np.full((h, w, 3), 40, np.int32)
    img[:, w // 2:] = 200
    img += np.random.default_rng(seed).integers(-10, 11, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# --- quality on real data ------------------------------------------------------------------------
def test_samples_load_as_documented(samples):
    for n, (image, pred, gt) in samples.items():
        assert image.shape == (513, 513, 3) and pred.shape == gt.shape == (513, 513)
        assert set(np.unique(pred)) <= {0, 1, 3, 17}
        assert IGNORE in gt
    # the README's figures: the prediction's mIoU (background + object, void ignored)
    assert miou(samples[1][2], samples[1][1]) == pytest.approx(0.9692, abs=1e-4)


def test_defaults_raise_miou_on_every_real_sample(samples):
    gains = []
    for n, (image, pred, gt) in samples.items():
        out = refine_labels(image, pred)
        gains.append(miou(gt, out) - miou(gt, pred))
        assert gains[-1] > 0, f"sample {n}: CRF lowered mIoU by {-gains[-1] * 100:.2f} points"
    assert np.mean(gains) >= 0.01, f"mean gain {np.mean(gains) * 100:.2f} points < 1"


def test_strong_bilateral_weight_on_hard_labels_is_clearly_worse(samples):
    """pydensecrf's README kernels (w=10, θα=80, θβ=13) on hard labels: worse than the prediction.

    How much worse depends on how far a hard label may travel: with the default `margin` (a
    label is possible only within 16 px of where it occurs) the damage is capped at 3-5 points
    (whole-image runs with the same energy lose the same); letting labels reach 64 px, the same
    kernels cost the aeroplane ~11 and the bird ~23 points, the issue's "10+ points".
    """
    strong = CRFParams(gaussian_sxy=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10)
    deltas, wide, good = [], [], []
    for image, pred, gt in samples.values():
        base = miou(gt, pred)
        deltas.append(miou(gt, refine_labels(image, pred, params=strong)) - base)
        wide.append(miou(gt, refine_labels(image, pred, params=replace(strong, margin=64))) - base)
        good.append(miou(gt, refine_labels(image, pred)) - base)
    assert sum(d < -0.025 for d in deltas) >= 2, deltas  # aeroplane and bird lose 3-5 points
    assert np.mean(good) - np.mean(deltas) > 0.03, (good, deltas)
    assert sum(d < -0.10 for d in wide) >= 2, wide  # uncapped: 10+ points on two of the three


def _coarse_softmax(gt: np.ndarray, factor: int) -> np.ndarray:
    """21×H×W: one-hot ground truth box-averaged `factor`× down (void left out), bilinear back up."""
    h, w = gt.shape
    small = (w // factor, h // factor)
    valid = np.asarray(Image.fromarray((gt != IGNORE).astype(np.float32), "F").resize(small, Image.BOX))
    probs = np.zeros((21, h, w), np.float32)
    for c in np.unique(gt[gt != IGNORE]):
        frac = np.asarray(Image.fromarray((gt == c).astype(np.float32), "F").resize(small, Image.BOX))
        frac = np.where(valid > 0, frac / np.maximum(valid, 1e-6), 1 / 21).astype(np.float32)
        probs[c] = np.asarray(Image.fromarray(frac, "F").resize((w, h), Image.BILINEAR))
    return probs / np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)


def test_good_proposals_cost_less_than_with_deeplab_settings(samples):
    """Where the proposal is already good (the ground truth itself; the ground truth 8× down and up
    as a softmax) the defaults cost little, and no more than DeepLab v2's usual settings (VOC:
    w=4, θα=121, θβ=5, θγ=3; its ResNet-101 release: w=4, θα=67, θβ=3, θγ=1).

    Measured (points): perfect input −0.05..−1.19 vs −0.10..−3.66; GT↓8 −0.02..−0.09 vs
    −0.02..−0.60. One near-tie: on the sheep's GT↓8 the R101 settings cost 0.003 points less
    (a few pixels), hence "no more than" per sample within 0.01 points, and less on the mean.
    """
    margin = CRFParams().margin
    deeplab = [replace(crf.DEEPLAB_V2_PARAMS, margin=margin),
               CRFParams(gaussian_sxy=1, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4, margin=margin)]
    ours, theirs = [], [[] for _ in deeplab]
    for n, (image, _, gt) in samples.items():
        coarse = _coarse_softmax(gt, 8)
        base = miou(gt, coarse.argmax(0))
        assert base > 0.99  # a good proposal
        ours += [miou(gt, refine(image, coarse)) - base, miou(gt, refine_labels(image, gt)) - 1]
        assert ours[-2] > -0.002, (n, ours)
        for k, p in enumerate(deeplab):
            theirs[k] += [miou(gt, refine(image, coarse, params=p)) - base,
                          miou(gt, refine_labels(image, gt, params=p)) - 1]
    for k, cost in enumerate(theirs):
        assert all(t <= o + 1e-4 for o, t in zip(ours, cost)), (k, ours, cost)
        assert np.mean(cost[0::2]) < np.mean(ours[0::2]) and np.mean(cost[1::2]) < np.mean(ours[1::2])


# --- the restricted computation gives the plain computation's answer ----------------------------------
def test_label_subset_equals_all_labels(samples):
    """21 labels on the whole image vs only the labels that occur: the same labelling."""
    image, pred, _ = samples[114]
    image, pred = image[100:356, 100:356], pred[100:356, 100:356]  # the bird's head and beak
    assert len(np.unique(pred)) == 2
    none = np.zeros(pred.shape, bool)
    p = CRFParams()
    all_labels = crf_engine.refine_free_pixels(image, pred, none, None, p, restrict=False, labels=list(range(21)))
    subset = crf_engine.refine_free_pixels(image, pred, none, None, p, restrict=False)
    assert (all_labels != subset).mean() < 1e-4


def test_band_restricted_refine_nearly_equals_whole_image(samples):
    for n, (image, pred, gt) in samples.items():
        none = np.zeros(pred.shape, bool)
        whole = crf_engine.refine_free_pixels(image, pred, none, None, CRFParams(), restrict=False)
        fast = refine_labels(image, pred)
        assert (whole != fast).mean() < 0.005, f"sample {n}: {(whole != fast).sum()} pixels differ"
        assert abs(miou(gt, whole) - miou(gt, fast)) < 0.002
        # pixels far from any label boundary are settled: never changed
        far = ~crf_engine.dilate(crf_engine.boundaries(pred), CRFParams().margin)
        assert (fast[far] == pred[far]).all()


def test_soft_refine_restricted_nearly_equals_plain_21_labels(samples):
    image, _, gt = samples[23]
    image, gt = image[128:384, 128:384], gt[128:384, 128:384]
    onehot = np.zeros((21,) + gt.shape, np.float32)
    lab = np.where(gt == IGNORE, 0, gt)
    onehot[lab, np.arange(gt.shape[0])[:, None], np.arange(gt.shape[1])[None, :]] = 1
    small = onehot[:, ::8, ::8]  # a coarse proposal: nearest 8× down, blocky up, then blurred by mixing
    coarse = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, : gt.shape[0], : gt.shape[1]]
    probs = 0.8 * coarse + 0.2 * np.roll(coarse, 5, axis=2)
    fast = refine(image, probs)
    plain = crf_engine.refine_free_pixels(image, probs.argmax(0).astype(np.uint8), np.zeros(gt.shape, bool), probs,
                                          CRFParams(), restrict=False, labels=list(range(21)))
    assert (fast != plain).mean() < 0.005
    assert miou(gt, fast) >= miou(gt, probs.argmax(0)) - 0.001


def test_tiled_nearly_equals_one_tile(samples):
    image, pred, _ = samples[1]
    one = refine_labels(image, pred, params=CRFParams(tile_size=1024))
    tiled = refine_labels(image, pred, params=CRFParams(tile_size=128))
    assert (one != tiled).mean() < 0.005


def test_reference_engine_equals_a_plain_pydensecrf_call(samples):
    """One crop, every pixel selected: the stepped reference engine gives pydensecrf's DenseCRF2D answer."""
    import pydensecrf.densecrf as dcrf

    image, pred, _ = samples[1]
    image, pred = np.ascontiguousarray(image[200:328, 150:278]), pred[200:328, 150:278]
    p = CRFParams(iterations=7)
    unary = crf_engine.unary_energy(pred, np.zeros(pred.shape, bool), pred == IGNORE, None, [0, 1], p)
    ours = crf_reference.crf_labels(image, unary, np.ones(pred.shape, bool), p)
    d = dcrf.DenseCRF2D(128, 128, 2)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(2, -1)))
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=image, compat=p.bilateral_compat)
    plain = np.asarray(d.inference(7)).argmax(axis=0)
    assert (ours == plain).all() and (plain != (pred.ravel() == 1)).any()


# --- protection and void ----------------------------------------------------------------------------
def test_protected_pixels_keep_their_label_exactly(samples):
    image, pred, _ = samples[1]
    labels = pred.copy()
    protect = np.zeros(pred.shape, bool)
    protect[200:330, 150:400] = True  # across the aeroplane's border
    labels[240:250, 200:300] = 7  # a label the model never proposed
    labels[260:265, 200:300] = IGNORE
    out = refine_labels(image, labels, protect=protect)
    assert (out[protect] == labels[protect]).all()
    assert (out[~protect] != IGNORE).all()
    assert (out != labels).any()  # the rest was refined


def test_protected_pixels_are_evidence_for_their_neighbours():
    image = _two_tone()
    probs = np.full((2, 64, 64), 0.5, np.float32)  # the model cannot decide anywhere
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 48:52] = 1  # a human painted 1 on the bright half ...
    protect = np.zeros((64, 64), bool)
    protect[:, 48:52] = True
    protect[:, 10:14] = True  # ... and 0 on the dark half
    out = refine(image, probs, protect=protect, labels=labels)
    assert (out[:, 32:] == 1).all() and (out[:, :32] == 0).all()
    assert (refine(image, probs) == 0).all()  # without the human pixels: the tie goes to label 0


def test_void_is_restored_and_never_produced(samples):
    image, _, gt = samples[23]  # the ground truth has a void band around the sheep
    labels = gt.copy()
    labels[100:110, :] = 0  # disturb it so the CRF has work to do
    out = refine_labels(image, labels)
    assert ((out == IGNORE) == (labels == IGNORE)).all()
    protect = np.zeros(gt.shape, bool)
    protect[:, :200] = True
    out = refine_labels(image, labels, protect=protect)
    assert ((out == IGNORE) == (labels == IGNORE)).all()


def test_soft_refine_never_outputs_void_except_protected():
    image = _two_tone()
    probs = np.zeros((3, 64, 64), np.float32)
    probs[0, :, :30], probs[1, :, 30:] = 1.0, 1.0
    probs = 0.6 * probs + 0.2 * np.roll(probs, 6, axis=2) + 0.2 / 3
    labels = np.full((64, 64), IGNORE, np.uint8)
    protect = np.zeros((64, 64), bool)
    protect[5:9, 5:9] = True
    out = refine(image, probs, protect=protect, labels=labels)
    assert ((out == IGNORE) == protect).all()
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert (out[:, 34:] == 1).all() and (out[10:, :26] == 0).all()


# --- fast paths ---------------------------------------------------------------------------------------
def test_single_label_returns_at_once_without_a_crf(monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("the CRF ran")
    monkeypatch.setattr(crf_engine, "_solve_crop", boom)
    image = _two_tone()
    labels = np.full((64, 64), 3, np.uint8)
    out = refine_labels(image, labels)
    assert (out == 3).all() and out is not labels
    probs = np.zeros((4, 64, 64), np.float32)
    probs[2] = 1.0
    assert (refine(image, probs) == 2).all()
    assert (refine_labels(image, np.full((64, 64), IGNORE, np.uint8)) == IGNORE).all()
    one_and_void = np.full((64, 64), 3, np.uint8)
    one_and_void[10:20, 10:20] = IGNORE
    assert (refine_labels(image, one_and_void) == one_and_void).all()


def test_only_labels_that_occur_enter_the_crf(monkeypatch):
    seen = []
    real = crf_engine._solve_crop

    def spy(image, unary, *args):
        seen.append(unary.shape[0])
        return real(image, unary, *args)
    monkeypatch.setattr(crf_engine, "_solve_crop", spy)
    image = _two_tone()
    probs = np.full((21, 64, 64), 1e-4, np.float32)
    probs[5, :, :32], probs[9, :, 32:] = 0.998, 0.998
    out = refine(image, probs)
    assert seen and max(seen) == 2
    assert set(np.unique(out)) == {5, 9}


def test_large_image_is_tiled_and_completes(monkeypatch):
    image, truth = generate_scene(900, 1300, seed=3)
    coarse = np.asarray(Image.fromarray(truth).resize((1300 // 16, 900 // 16), Image.NEAREST)
                        .resize((1300, 900), Image.NEAREST))
    crops = []
    real = crf_engine._solve_crop

    def spy(img, unary, select, *args):
        crops.append(int(select.sum()))
        return real(img, unary, select, *args)
    p = CRFParams(tile_size=256)
    monkeypatch.setattr(crf_engine, "_solve_crop", spy)
    out = refine_labels(image, coarse, params=p)
    assert out.shape == coarse.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(coarse))
    assert len(crops) > 1 and max(crops) <= (256 + 2 * p.margin) ** 2
    assert sum(crops) < out.size  # only the band around borders was computed


def test_cancel_stops_between_tiles_and_iterations(samples):
    image, pred, _ = samples[1]
    p = CRFParams(tile_size=128)
    calls = []

    def never() -> bool:
        calls.append(1)
        return False
    assert (refine_labels(image, pred, params=p, cancel=never) == refine_labels(image, pred, params=p)).all()
    total = len(calls)
    assert total > p.iterations  # checked per tile and per iteration

    def third() -> bool:
        calls.append(1)
        return len(calls) > total + 2
    with pytest.raises(crf.CRFCancelled):
        refine_labels(image, pred, params=p, cancel=third)
    assert len(calls) == total + 3  # stopped at once
    stop = threading.Event()
    stop.set()
    probs = np.stack([pred == 0, pred == 1]).astype(np.float32) * 0.8 + 0.1
    with pytest.raises(crf.CRFCancelled):
        refine(image, probs, cancel=stop)


# --- validation ----------------------------------------------------------------------------------------
def test_grayscale_rgba_noncontiguous_readonly_inputs_are_converted(samples):
    image, pred, _ = samples[114]
    image, pred = image[150:278, 150:278], pred[150:278, 150:278]
    want = refine_labels(np.ascontiguousarray(image), np.ascontiguousarray(pred))
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    assert (refine_labels(rgba, pred) == want).all()
    strided = np.zeros((128, 256, 3), np.uint8)
    strided[:, ::2] = image
    assert (refine_labels(strided[:, ::2], pred.T.copy().T) == want).all()
    ro_img, ro_lab = image.copy(), pred.astype(np.int64)
    ro_img.flags.writeable = False
    assert (refine_labels(ro_img, ro_lab) == want).all()
    gray = image.mean(axis=2).astype(np.uint8)
    assert refine_labels(gray, pred).shape == pred.shape
    assert refine_labels(gray[:, :, None], pred).shape == pred.shape
    probs = np.stack([pred == 0, pred == 3]).astype(np.float64)[:, :, ::-1][:, :, ::-1]
    assert refine(image, probs).dtype == np.uint8


@pytest.mark.parametrize("case, match", [
    ("size", "does not match the image size"),
    ("float_image", "image must be uint8"),
    ("image_shape", "image must be"),
    ("float_labels", "integer label map"),
    ("big_labels", "0..255"),
    ("probs_2d", "C×H×W"),
    ("probs_int", "floating point"),
    ("probs_nan", "NaN"),
    ("logits", "not logits"),
    ("probs_size", "does not match the image size"),
    ("protect_size", "protect mask size"),
    ("protect_values", "boolean mask"),
    ("params", "CRFParams.bilateral_srgb"),
    ("not_array", "numpy array"),
])
def test_bad_input_is_one_clear_value_error(case, match):
    image = _two_tone(32, 32)
    labels = np.zeros((32, 32), np.uint8)
    labels[:, 16:] = 1
    probs = np.stack([labels == 0, labels == 1]).astype(np.float32)
    calls = {
        "size": lambda: refine_labels(image, labels[:31]),
        "float_image": lambda: refine_labels(image.astype(np.float32), labels),
        "image_shape": lambda: refine_labels(image[:, :, :2], labels),
        "float_labels": lambda: refine_labels(image, labels.astype(np.float32)),
        "big_labels": lambda: refine_labels(image, labels.astype(np.int32) * 300),
        "probs_2d": lambda: refine(image, probs[0]),
        "probs_int": lambda: refine(image, probs.astype(np.int64)),
        "probs_nan": lambda: refine(image, np.where(probs > 0, np.nan, probs)),
        "logits": lambda: refine(image, probs * 8 - 4),
        "probs_size": lambda: refine(image, probs[:, :, :20]),
        "protect_size": lambda: refine_labels(image, labels, protect=np.zeros((32, 31), bool)),
        "protect_values": lambda: refine_labels(image, labels, protect=np.full((32, 32), 7)),
        "params": lambda: refine_labels(image, labels, params=replace(CRFParams(), bilateral_srgb=0)),
        "not_array": lambda: refine_labels(image.tolist(), labels),
    }
    with pytest.raises(ValueError, match=match):
        calls[case]()


def test_params_validation():
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=0)
    with pytest.raises(ValueError, match="hard_confidence"):
        CRFParams(hard_confidence=1.0)
    with pytest.raises(ValueError, match="margin"):
        CRFParams(margin=2.5)
    assert CRFParams(iterations=5.0).iterations == 5.0  # sliders hand over floats
    for name in ("bilateral_sxy", "bilateral_srgb", "gaussian_sxy"):
        with pytest.raises(ValueError, match=f"{name} must be >= 0.1"):
            CRFParams(**{name: 1e-6})  # would overflow pydensecrf's lattice: a segfault, not an error


def test_smallest_ranges_run(samples):
    image, pred, _ = samples[114]
    image, pred = image[150:278, 150:278], pred[150:278, 150:278]
    tiny = crf.MIN_RANGE
    p = CRFParams(gaussian_sxy=tiny, bilateral_sxy=tiny, bilateral_srgb=tiny, tile_size=4096)
    out = refine_labels(image, pred, params=p)
    assert out.shape == pred.shape and set(np.unique(out)) <= set(np.unique(pred))
