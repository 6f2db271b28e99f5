"""The inference worker thread and its client, with a real tiny checkpoint on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeplab_studio.gui.workers.inference_client import InferenceClient
from deeplab_studio.gui.workers.jobs import BATCH, INTERACTIVE, Job, JobKind, JobQueue

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "deeplabv3plus_mobilenet"
CLASSES = ["background", "disk", "square", "triangle"]


def _image(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    from deeplab_studio.core.scenes import generate_scene

    return generate_scene(h, w, seed=seed)[0]


def _write_images(folder: Path, n: int) -> list[tuple[str, str]]:
    from PIL import Image

    items = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(_image(i)).save(p)
        items.append((p.name, str(p)))
    return items


@pytest.fixture
def client(qtbot, tiny_checkpoint):
    c = InferenceClient()
    with qtbot.waitSignal(c.modelLoaded, timeout=60000) as blocker:
        c.load_model(str(tiny_checkpoint), "cpu")
    assert blocker.args[0].arch == ARCH
    yield c
    assert c.shutdown()


def test_gui_modules_do_not_import_torch_until_the_first_request() -> None:
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "import deeplab_studio.gui.workers.inference_client as w, deeplab_studio.gui.model.controller, "
        "deeplab_studio.gui.model.dialog, deeplab_studio.gui.model.crf_panel, deeplab_studio.gui.demo\n"
        "c = w.InferenceClient()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.stdout.split()[-1] == "False"


def test_queue_runs_interactive_before_batch() -> None:
    q = JobQueue()
    for i, prio in enumerate([BATCH, BATCH, INTERACTIVE, BATCH]):
        q.push(Job(JobKind.PREDICT, i, key=str(i), priority=prio))
    assert [q.pop().request_id for _ in range(4)] == [2, 0, 1, 3]
    assert q.pop() is None


def test_proposal_matches_the_predictor(qtbot, client, tiny_checkpoint) -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    image = _image(1)
    client.set_current_key("a")
    with qtbot.waitSignal(client.proposalReady, timeout=60000) as blocker:
        rid = client.request("a", image=image)
    p = blocker.args[0]
    assert (p.key, p.request_id) == ("a", rid)
    expected = Predictor(load_checkpoint(tiny_checkpoint), device="cpu").predict(image)
    np.testing.assert_array_equal(p.labels, expected.labels)
    assert p.confidence.dtype == np.uint8 and p.confidence.shape == image.shape[:2]
    assert abs(p.confidence.mean() / 255 - expected.confidence.mean()) < 0.01


def test_result_for_an_image_the_user_left_is_dropped(qtbot, client) -> None:
    got = []
    client.proposalReady.connect(got.append)
    client.set_current_key("a")
    client.request("a", image=_image(1))
    client.set_current_key("b")  # the user moved on before the answer came
    with qtbot.waitSignal(client.proposalReady, timeout=60000):
        client.request("b", image=_image(2))
    assert [p.key for p in got] == ["b"]


def test_an_older_request_for_the_same_image_is_dropped(qtbot, client) -> None:
    got = []
    client.proposalReady.connect(got.append)
    client.set_current_key("a")
    first = client.request("a", image=_image(1))
    with qtbot.waitSignal(client.proposalReady, timeout=60000):
        second = client.request("a", image=_image(2))
    qtbot.waitUntil(lambda: not client.busy, timeout=60000)
    assert [p.request_id for p in got] == [second] and first != second


def test_cancel_stops_a_batch(qtbot, client, tmp_path) -> None:
    items = _write_images(tmp_path, 8)
    progress = []
    client.batchProgress.connect(lambda b, done, total, rate, eta: progress.append(done))
    with qtbot.waitSignal(client.batchProgress, timeout=60000):
        batch = client.start_batch(items)
    with qtbot.waitSignal(client.batchFinished, timeout=60000) as finished:
        client.cancel_batch(batch)
    b, done, failed, cancelled = finished.args
    assert b == batch and cancelled and done < len(items) and failed == 0
    qtbot.waitUntil(lambda: not client.busy, timeout=60000)


@pytest.fixture
def tiled_client(qtbot, tiny_checkpoint):
    """A client whose Predictor splits images wider than 64 px into overlapping 64-px tiles."""
    c = InferenceClient()
    with qtbot.waitSignal(c.modelLoaded, timeout=60000):
        c.load_model(str(tiny_checkpoint), "cpu", tile_size=64, tile_overlap=16)
    yield c
    assert c.shutdown()


def _hold_after_first_tile(client):
    """Make the worker wait after its first tile until the test releases it (worker-thread slot)."""
    import threading

    from PySide6.QtCore import Qt

    seen, gate = [], threading.Event()

    def on_tile(rid: int, done: int, total: int) -> None:  # runs in the worker thread, between tiles
        seen.append((rid, done, total))
        if done == 1:
            assert gate.wait(30), "the test never released the worker"

    client.worker.tileProgress.connect(on_tile, Qt.ConnectionType.DirectConnection)
    return seen, gate


@pytest.mark.parametrize("how", ["user left the image", "batch cancelled"])
def test_cancel_stops_a_tiled_image_after_its_first_tile(qtbot, tiled_client, tmp_path, how) -> None:
    client = tiled_client
    seen, gate = _hold_after_first_tile(client)
    proposals = []
    client.proposalReady.connect(proposals.append)
    big = _image(7, 64, 320)  # 64-px tiles: one row of several tiles
    try:
        with qtbot.waitSignal(client.tileProgress, timeout=60000) as first:  # the GUI thread hears of tile 1
            if how == "user left the image":
                client.set_current_key("big")
                rid = client.request("big", image=big)
            else:
                from PIL import Image

                Image.fromarray(big).save(tmp_path / "big.png")
                batch = client.start_batch([("big.png", str(tmp_path / "big.png"))])
        rid_seen, done, total = first.args
        assert done == 1 and total > 2
        with qtbot.waitSignal(client.requestCancelled, timeout=60000) as stopped:
            if how == "user left the image":
                client.set_current_key("other")  # the user moved on while tile 1 was finished
            else:
                with qtbot.waitSignal(client.batchFinished, timeout=60000) as finished:
                    client.cancel_batch(batch)
                    gate.set()
            gate.set()
    finally:
        gate.set()
    assert stopped.args[0] == rid_seen
    if how == "user left the image":
        assert rid_seen == rid
    else:
        assert list(finished.args[1:]) == [0, 0, True]
    qtbot.waitUntil(lambda: not client.busy, timeout=60000)
    assert [d for _, d, _ in seen] == [1] and not proposals  # no tile after the first one ran
    client.set_current_key("again")  # the worker goes on: the next request is answered
    with qtbot.waitSignal(client.proposalReady, timeout=60000) as blocker:
        client.request("again", image=big)
    assert [d for _, d, _ in seen[1:]] == list(range(1, total + 1))
    assert blocker.args[0].labels.shape == big.shape[:2]


def test_batch_reports_progress_and_survives_an_unreadable_image(qtbot, client, tmp_path) -> None:
    items = _write_images(tmp_path, 3)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    items.insert(1, (bad.name, str(bad)))
    keys, failures = [], []
    client.proposalReady.connect(lambda p: keys.append(p.key))
    client.failed.connect(failures.append)
    with qtbot.waitSignal(client.batchFinished, timeout=60000) as finished:
        client.start_batch(items)
    _, done, failed, cancelled = finished.args
    assert (done, failed, cancelled) == (3, 1, False)
    assert sorted(keys) == ["img0.png", "img1.png", "img2.png"]
    assert failures[0].key == "broken.png" and "broken.png" in failures[0].message


def test_a_corrupt_checkpoint_is_reported_and_the_old_model_stays(qtbot, client, tmp_path) -> None:
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with qtbot.waitSignal(client.modelFailed, timeout=60000) as blocker:
        client.load_model(str(bad), "cpu")
    assert "corrupt.safetensors" in blocker.args[0]
    client.set_current_key("a")
    with qtbot.waitSignal(client.proposalReady, timeout=60000):
        client.request("a", image=_image(3))


def test_a_vainf_checkpoint_is_detected_and_gives_the_same_proposals(qtbot, client, tiny_checkpoint, tmp_path) -> None:
    """The same weights saved the way VainF/DeepLabV3Plus-Pytorch saves them (a pickled dict with
    `model_state` and a numpy `best_score`): arch and classes come from the keys and shapes."""
    import torch

    from deeplab_studio.ml.checkpoints import load_checkpoint

    state = load_checkpoint(tiny_checkpoint).model.state_dict()
    vainf = tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth"
    torch.save({"model_state": state, "best_score": np.float64(0.5), "cur_itrs": 10}, vainf)
    client.set_current_key("a")
    with qtbot.waitSignal(client.proposalReady, timeout=60000) as ours:
        client.request("a", image=_image(4))
    with qtbot.waitSignal(client.modelLoaded, timeout=60000) as loaded:
        client.load_model(str(vainf), "cpu")
    info = loaded.args[0]
    assert (info.arch, info.num_classes, info.class_names) == (ARCH, 4, None)
    with qtbot.waitSignal(client.proposalReady, timeout=60000) as theirs:
        client.request("a", image=_image(4))
    np.testing.assert_array_equal(theirs.args[0].labels, ours.args[0].labels)


def test_request_without_model_fails_cleanly(qtbot) -> None:
    c = InferenceClient()
    try:
        with qtbot.waitSignal(c.failed, timeout=60000) as blocker:
            c.request("x", image=_image(0))
        assert "no model" in blocker.args[0].message
    finally:
        assert c.shutdown()


def test_model_info_is_plain_data(client) -> None:
    import dataclasses

    info = client.model
    json.dumps(dataclasses.asdict(info))
    assert list(info.class_names) == CLASSES and info.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.path = "other"


def test_a_long_batch_does_not_recurse(qtbot, client) -> None:
    import sys

    image = _image(5, 32, 32)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # a smaller stack, so that fewer jobs show a nested pump
    try:
        n = 250  # more jobs than nested pumps (one frame each, plus the model's) could survive
        done = []
        client.proposalReady.connect(lambda p: done.append(p.key))
        client.set_current_key("k0")
        for i in range(n):
            client.request(f"k{i}", image=image, priority=BATCH)
        qtbot.waitUntil(lambda: not client.busy, timeout=300000)
    finally:
        sys.setrecursionlimit(limit)
    assert len(done) == n


def test_error_messages_are_one_readable_line() -> None:
    from deeplab_studio.gui.workers.jobs import describe_error
    from deeplab_studio.ml.checkpoints import CheckpointError

    oom = describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details"))
    assert oom.startswith("Out of memory") and "\n" not in oom and "CPU" in oom
    assert describe_error(CheckpointError("m.pth", "not a checkpoint")) == "m.pth: not a checkpoint"
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_errors_are_told_apart_by_type_not_by_name() -> None:
    from deeplab_studio.gui.workers.jobs import describe_error
    from deeplab_studio.gui.training.worker import describe_error as train_error
    from deeplab_studio.ml.errors import CheckpointError, DatasetError
    from deeplab_studio.storage.images import ImageReadError

    class Renamed(CheckpointError):  # a subclass says it all too
        pass

    class CheckpointErrorLookalike(Exception):  # the same name pattern, not the type: named
        pass

    assert describe_error(ImageReadError("a.png", "not an image")) == "a.png: not an image"
    assert describe_error(Renamed("m.pth", "bad")) == "m.pth: bad"
    assert describe_error(CheckpointErrorLookalike("x")) == "CheckpointErrorLookalike: x"
    assert train_error(DatasetError("f: too few images")) == "f: too few images"
    assert train_error(KeyError("k")) == "KeyError: 'k'"
