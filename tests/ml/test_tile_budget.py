"""The tile size from a memory budget: the arithmetic of the memory model, the model held against
the allocations a real prediction makes, the bundled model's tabled figure, and what memory there is.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from deeplab_studio.ml.checkpoints import LoadedModel
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.tile_budget import (
    COST_PER_PIXEL, TileBudget, available_bytes, host_available_bytes, input_bytes_per_pixel, measure_cost_per_pixel,
    output_bytes_per_pixel, peak_allocated_bytes, tile_size_for)
from deeplab_studio.ml.zoo import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


# --- the arithmetic --------------------------------------------------------------------------
def test_a_whole_image_when_it_fits_else_the_largest_tile_that_does() -> None:
    cost, c = 330.0, 21
    per_px = input_bytes_per_pixel(cost, channels=c)
    assert per_px == 330 + 24 + 168
    h, w = 3000, 4000  # 12 MP
    exact = h * w * per_px
    assert tile_size_for(h, w, channels=c, model_cost_per_pixel=cost, budget_bytes=exact) is None
    side = tile_size_for(h, w, channels=c, model_cost_per_pixel=cost, budget_bytes=exact - 1)
    assert side is not None and side < w and side % 32 == 0
    for budget in (50e6, 400e6, 2e9):
        side = tile_size_for(h, w, channels=c, model_cost_per_pixel=cost, budget_bytes=budget)
        tile_px = min(side, h) * min(side, w)
        bigger = min(side + 32, h) * min(side + 32, w)
        assert tile_px * per_px <= budget < bigger * per_px or side == 256, (budget, side)
    # 400 MB: squares of 864 px (864² · 522 B = 390 MB; 896² would be 419 MB)
    assert tile_size_for(h, w, channels=c, model_cost_per_pixel=cost, budget_bytes=400e6) == 864


def test_strips_tta_outputs_and_the_floor() -> None:
    cost, c = 330.0, 21
    per_px = input_bytes_per_pixel(cost, channels=c)
    # a 300 px high panorama: full-height strips as long as the budget allows
    side = tile_size_for(300, 20000, channels=c, model_cost_per_pixel=cost, budget_bytes=300 * 5000 * per_px)
    assert side == 4992
    base = tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=1e9)
    flip = tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=1e9, batch=2)
    ms = tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=1e9, batch=2, scale=1.25)
    assert base > flip > ms
    flip_px = input_bytes_per_pixel(cost, channels=c, batch=2)
    assert flip == math.isqrt(int(1e9 / flip_px)) // 32 * 32
    # the full-size outputs come off the budget first (CPU: the same memory)
    out = output_bytes_per_pixel(c, keep_probs=True)
    assert out == 1 + 4 + 84 and output_bytes_per_pixel(c, keep_probs=False) == 5
    whole = 3000 * 4000 * per_px
    assert tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=whole) is None
    assert tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=whole,
                         output_bytes_per_pixel=out) is not None
    # a budget the outputs alone exceed: the smallest tile (the out-of-memory fallback remains)
    assert tile_size_for(3000, 4000, channels=c, model_cost_per_pixel=cost, budget_bytes=1e6,
                         output_bytes_per_pixel=out) == 256
    with pytest.raises(ValueError):
        tile_size_for(0, 10, channels=c, model_cost_per_pixel=cost, budget_bytes=1e9)


# --- the model against real allocations ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("deeplabv3plus_mobilenet", num_classes=4, separable=True).eval()


@pytest.mark.parametrize("tta", [None, "flip"])
def test_the_model_bounds_a_whole_image_prediction_from_above_within_two_times(tiny, tta) -> None:
    cost = measure_cost_per_pixel(tiny, CPU, sides=(128, 192))
    assert 50 < cost < 5000
    h, w = 224, 288
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    predictor = Predictor(tiny, device="cpu", tile_size=512, tta=tta, amp=None)
    predictor.predict(image)  # once before: one-off buffers are not what the model is about
    measured = peak_allocated_bytes(lambda: predictor.predict(image), CPU)
    modelled = h * w * input_bytes_per_pixel(cost, channels=4, batch=2 if tta else 1)
    print(f"tta {tta}: cost {cost:.0f} B/px; predict peak {measured / (h * w):.0f} B/px, "
          f"model {modelled / (h * w):.0f} B/px")
    assert measured <= modelled <= 2 * measured


def test_the_tabled_figure_is_the_bundled_models_own() -> None:
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.models import VOC_MODEL, bundled_model_path

    with bundled_model_path(VOC_MODEL) as path:
        loaded = load_checkpoint(path, device="cpu")
    measured = measure_cost_per_pixel(loaded.model, CPU, sides=(128, 192))
    tabled = COST_PER_PIXEL[(loaded.arch, loaded.output_stride)]
    print(f"{loaded.arch}: measured {measured:.0f} B/px, tabled {tabled:.0f}")
    assert abs(measured - tabled) <= 0.1 * tabled


def test_tile_budget_uses_the_given_or_the_measured_cost(tiny) -> None:
    budget = TileBudget(budget_bytes=10**12)
    assert budget.tile_for(3000, 4000, model=tiny, device=CPU, channels=4) == 4000  # fits: whole
    measured = budget.cost(tiny, CPU)
    assert budget.cost(tiny, CPU) == measured and len(budget._measured) == 1  # measured once
    small = TileBudget(budget_bytes=200 * 10**6, cost_per_pixel=measured)
    side = small.tile_for(3000, 4000, model=tiny, device=CPU, channels=4, keep_probs=False)
    per_px = input_bytes_per_pixel(measured, channels=4)
    assert side == math.isqrt(int((200e6 - 12e6 * 5) / per_px)) // 32 * 32


def test_the_predictor_runs_whole_within_the_budget_and_in_tiles_beyond_it(tiny) -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    whole = Predictor(tiny, device="cpu", tile_size=512, amp=None).predict(image)
    calls: list[tuple[int, int]] = []
    roomy = Predictor(tiny, device="cpu", tile_size=TileBudget(budget_bytes=10**10), amp=None)
    same = roomy.predict(image, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)] and roomy.tile_size == 400
    np.testing.assert_array_equal(same.labels, whole.labels)
    # a budget for 224 px tiles next to the full-size outputs: the image does not fit whole
    cost = measure_cost_per_pixel(tiny, CPU, sides=(128, 192))
    per_px = input_bytes_per_pixel(cost, channels=4)
    out = output_bytes_per_pixel(4, keep_probs=True)
    budget = int(224 * 224 * per_px + 300 * 400 * out) + 1
    loaded = LoadedModel(tiny, "deeplabv3plus_mobilenet", 4, None, None, 16)  # its class count is used
    tight = Predictor(loaded, device="cpu", tile_size=TileBudget(budget_bytes=budget, cost_per_pixel=cost, min_tile=64),
                      amp=None)
    calls.clear()
    tiled = tight.predict(image, progress=lambda done, total: calls.append((done, total)))
    assert tight.tile_size == 224 and tight.tile_overlap == 28
    assert calls[-1] == (4, 4)  # 2 rows × 2 columns of 224 px tiles (28 px overlap)
    assert (tiled.labels == whole.labels).mean() > 0.9  # the same network, less context at the seams
    small = np.ascontiguousarray(image[:200, :200])
    tight.predict(small)
    assert tight.tile_size == 200  # re-planned per image: this one fits whole
    assert Predictor(tiny, device="cpu", tile_size="auto").tile_budget == TileBudget()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_memory_is_read_from_the_system() -> None:
    free = host_available_bytes()
    total = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal:"))
    assert free is not None and 0 < free <= total
    assert available_bytes(CPU) == pytest.approx(free, rel=0.2)  # read again: the same order
    assert available_bytes(torch.device("meta")) is None
