"""The inference worker's assisted jobs, run in its thread: click to correct the model
(`ml.click_correct`) and scoring a saved label map for review (`session.review`).

`AssistJobs` keeps one `ClickCorrector` for the loaded model and the features of the last image it
saw, so the backbone runs once per image and every later click only re-runs the head. torch and
the ml package are imported on first use (in the worker thread).
"""

from __future__ import annotations

import time

import numpy as np

from deeplab_studio.gui.workers.jobs import Correction, Job, JobCancelled, ReviewResult


class AssistJobs:
    """Runs "click" and "review" jobs with the worker's Predictor (see the module docstring)."""

    def __init__(self) -> None:
        self._corrector = None  # ml.click_correct.ClickCorrector of the loaded model
        self._image_key: tuple[str, tuple[int, ...]] | None = None  # whose features it holds

    def reset(self) -> None:
        """Another model is loaded: the corrector and its features are dropped."""
        self._corrector = None
        self._image_key = None

    def correct(self, predictor, job: Job) -> Correction:
        """Adapt the model to the job's clicks and re-propose the pixels no human painted."""
        if job.image is None or job.labels is None or job.edit_mask is None:
            raise ValueError("a click correction needs the image, its labels and its edit mask")
        corrector = self._corrector_for(predictor)
        t0 = time.perf_counter()
        features = 0.0
        key = (job.key, job.image.shape)
        if key != self._image_key:
            self._image_key = None
            corrector.set_image(job.image)
            self._image_key = key
            features = time.perf_counter() - t0
        if job.cancelled.is_set():
            raise JobCancelled()
        labels = corrector.correct(list(job.clicks), job.labels, job.edit_mask, cancel=job.cancelled.is_set,
                                   lut=job.lut)
        stats = corrector.stats
        return Correction(job.request_id, job.key, np.ascontiguousarray(labels, dtype=np.uint8), stats.clicks,
                          stats.satisfied, stats.steps, time.perf_counter() - t0, features)

    def _corrector_for(self, predictor):
        if self._corrector is not None and self._corrector.device != predictor.device:
            self.reset()  # the Predictor moved its model (e.g. to the CPU after running out of memory)
        if self._corrector is None:
            from deeplab_studio.ml.click_correct import ClickCorrector

            loaded = getattr(predictor, "loaded", None)
            if loaded is None:
                raise ValueError("click correction needs a model loaded from a checkpoint")
            self._corrector = ClickCorrector(loaded, device=predictor.device)
        return self._corrector

    def review(self, predictor, job: Job) -> ReviewResult:
        """The review score and disagreement map of one image's human labels."""
        from deeplab_studio.session.review import score_labels

        t0 = time.perf_counter()
        image = job.image
        if image is None:
            from deeplab_studio.storage.images import read_image

            image = read_image(job.path)
        labels = job.labels if job.labels is not None else job.read_labels()
        if labels.shape != image.shape[:2]:
            raise ValueError(f"the label map is {labels.shape[1]}×{labels.shape[0]}, "
                             f"the image {image.shape[1]}×{image.shape[0]}")
        pred = predictor.predict(image, cancel=job.cancelled.is_set)
        if job.cancelled.is_set():
            raise JobCancelled()
        if pred.probs is None:
            raise ValueError("review needs the model's probabilities (the Predictor keeps none)")
        review, dmap = score_labels(labels, pred.probs, lut=job.lut, key=job.key)
        disagreement = np.clip(dmap * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return ReviewResult(job.request_id, job.key, review, disagreement, job.batch_id, time.perf_counter() - t0)


__all__ = ["AssistJobs"]
