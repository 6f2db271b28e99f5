"""Segmentation metrics from a confusion matrix accumulated over many images.

Rows are ground truth, columns prediction. Ground-truth pixels equal to `ignore_index` are skipped.
A prediction of `ignore_index` on a counted pixel (the model or annotator abstained) is a miss:
it counts against the ground-truth class (lower recall and IoU) but as no class's false positive.
"""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """`num_classes`×`num_classes` pixel counts; `update` per image, `merge` across workers."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if not 1 <= int(num_classes) <= 65536:
            raise ValueError(f"num_classes must be 1..65536, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # last column: counted pixels predicted as ignore ("no prediction")
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """Counts [gt, pred] over classes (a read-only view; abstentions are in `missed`)."""
        view = self._counts[:, : self.num_classes]
        view.flags.writeable = False
        return view

    @property
    def missed(self) -> np.ndarray:
        """Per ground-truth class: counted pixels whose prediction was `ignore_index`."""
        return self._counts[:, self.num_classes].copy()

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's pixels. Values outside 0..num_classes-1 (other than ignore) are errors."""
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
        if gt.size == 0:
            return
        if gt.dtype == np.uint8 and pred.dtype == np.uint8:
            # one pass: a 256×256 joint histogram of (gt, pred), then keep what counts
            joint = (gt.astype(np.uint16) << 8) | pred
            self._add_joint(np.bincount(joint.ravel(), minlength=65536).reshape(256, 256))
            return
        self._update_general(gt.ravel().astype(np.int64, copy=False),
                             pred.ravel().astype(np.int64, copy=False))

    def _bad_value(self, name: str, value: int) -> ValueError:
        extra = f" or the ignore index {self.ignore_index}" if self.ignore_index is not None else ""
        return ValueError(f"{name} holds value {value}, not a class 0..{self.num_classes - 1}{extra}")

    def _add_joint(self, hist: np.ndarray) -> None:
        """Add a 256×256 histogram hist[gt value, pred value] of uint8 maps."""
        k, ig = self.num_classes, self.ignore_index
        ig = ig if ig is not None and 0 <= ig < 256 else None
        if ig is not None:
            hist = hist.copy()
            hist[ig, :] = 0  # ignored ground truth
        gt_values = np.flatnonzero(hist.sum(axis=1))
        if gt_values.size and gt_values[-1] >= k:
            raise self._bad_value("ground truth", int(gt_values[gt_values >= k][0]))
        kk = min(k, 256)
        pred_counts = hist[:kk].sum(axis=0)
        if ig is not None:
            pred_counts[ig] = 0
        pred_values = np.flatnonzero(pred_counts)
        if pred_values.size and pred_values[-1] >= k:
            raise self._bad_value("prediction", int(pred_values[pred_values >= k][0]))
        self._counts[:kk, :kk] += hist[:kk, :kk]
        if ig is not None:
            self._counts[:kk, k] += hist[:kk, ig]

    def _update_general(self, g: np.ndarray, p: np.ndarray) -> None:
        k = self.num_classes
        abstain = None
        if self.ignore_index is not None:
            keep = g != self.ignore_index
            if not keep.all():
                g, p = g[keep], p[keep]
            abstain = p == self.ignore_index
        if g.size == 0:
            return
        checked = p if abstain is None else np.where(abstain, 0, p)
        for name, arr in (("ground truth", g), ("prediction", checked)):
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi >= k:
                raise self._bad_value(name, lo if lo < 0 else hi)
        if abstain is not None and abstain.any():
            p = np.where(abstain, k, p)
        self._counts += np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (same classes and ignore index); returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError("cannot merge confusion matrices with different classes or ignore index")
        self._counts += other._counts
        return self

    def reset(self) -> None:
        self._counts[:] = 0

    @property
    def total(self) -> int:
        """Counted ground-truth pixels."""
        return int(self._counts.sum())

    def _gt_pred_tp(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self._counts[:, : self.num_classes]
        return self._counts.sum(axis=1), m.sum(axis=0), np.diag(m)

    def iou(self) -> np.ndarray:
        """Per-class intersection over union; nan for classes absent from both GT and prediction."""
        gt, pred, tp = self._gt_pred_tp()
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present in ground truth or prediction (nan when there are none)."""
        v = self.iou()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (nan when nothing was counted)."""
        total = self.total
        return float(np.trace(self._counts[:, : self.num_classes]) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall (correct / GT pixels of the class); nan for classes absent from GT."""
        gt, _, tp = self._gt_pred_tp()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)

    def mean_class_accuracy(self) -> float:
        v = self.class_accuracy()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        """JSON-ready summary (nan becomes None)."""
        def num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        out = {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "pixels": self.total,
            "pixel_accuracy": num(self.pixel_accuracy()),
            "mean_class_accuracy": num(self.mean_class_accuracy()),
            "miou": num(self.miou()),
            "iou": [num(v) for v in self.iou()],
            "matrix": self.matrix.tolist(),
            "missed": self.missed.tolist(),
        }
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
            out["class_names"] = list(class_names)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ConfusionMatrix":
        """Rebuild from `to_dict` output."""
        cm = cls(int(data["num_classes"]), data.get("ignore_index", 255))
        m = np.asarray(data["matrix"], np.int64)
        missed = np.asarray(data.get("missed", [0] * cm.num_classes), np.int64)
        if m.shape != (cm.num_classes, cm.num_classes) or missed.shape != (cm.num_classes,):
            raise ValueError("confusion matrix data does not match its num_classes")
        cm._counts[:, : cm.num_classes] = m
        cm._counts[:, cm.num_classes] = missed
        return cm
