"""Setting up and keeping a training run: the initial model and the best model it writes.

- ``init_model``: a bundled model by name (e.g. ``deeplabv3_mobilenetv2_voc``) or a checkpoint
  (fine-tune; the class head is resized when the class list differs, rows of classes with the
  same name kept), an ImageNet backbone (when the weights can be had; otherwise a clear message
  and random init) or random weights. Its summary also says how inputs are normalised (the
  checkpoint's mean/std; TF DeepLab's 0.5/0.5 for its architectures) and whether batch norm must
  stay frozen (weights with batch norm folded in, as converted TFLite models have);
- ``save_best``: the best model in the own checkpoint format with the training summary.

The resume state is ``train_state``'s.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from deeplab_studio.core.labels import VOC_CLASSES
from deeplab_studio.ml.augment import IMAGENET_MEAN, IMAGENET_STD
from deeplab_studio.ml.tf_mobile import TF_MEAN, TF_STD

from .arch_names import DEFAULT_ARCH
from .errors import TrainError  # noqa: F401 (also imported from here)



def _matching_rows(old_names: list[str], new_names: list[str]) -> list[tuple[int, int]]:
    """(old row, new row) pairs of classes with the same name (case-insensitive)."""
    old = {n.casefold(): i for i, n in enumerate(old_names)}
    return [(old[n.casefold()], j) for j, n in enumerate(new_names) if n.casefold() in old]


def class_head_keys(model: nn.Module, num_classes: int) -> list[str]:
    """State-dict keys of the last convolution producing ``num_classes`` channels (the class head)."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels == num_classes:
            last = name
    if last is None:
        raise TrainError(f"no {num_classes}-channel class head in the model")
    return [k for k in model.state_dict() if k.rsplit(".", 1)[0] == last]


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor], old_names: list[str] | None,
                     new_names: list[str]) -> dict[str, Any]:
    """Copy ``state`` into ``model``. The class head is copied row by row for the classes whose
    names (case-insensitive) appear in both lists; new classes keep their fresh init.

    Returns a summary: ``{"kept_classes": [...], "new_classes": [...]}``.
    """
    own = model.state_dict()
    head = class_head_keys(model, len(new_names))
    missing = [k for k in own if k not in state]
    if missing:
        raise TrainError(f"the initial checkpoint lacks {missing[0]!r}: not the same architecture")
    n_old = int(state[head[0]].shape[0])
    if old_names is None:  # unnamed checkpoint: same size → same classes, 21 → VOC
        old_names = list(new_names) if n_old == len(new_names) else list(VOC_CLASSES) if n_old == 21 else \
            [f"class {i}" for i in range(n_old)]
    if len(old_names) != n_old:
        raise TrainError(f"the initial checkpoint has {n_old} output channels but {len(old_names)} class names")
    pairs = _matching_rows(old_names, new_names)
    merged = {}
    for key, mine in own.items():
        theirs = state[key]
        if key in head and theirs.shape[1:] == mine.shape[1:]:
            out = mine.clone()
            for i, j in pairs:
                out[j] = theirs[i]
            merged[key] = out
        elif theirs.shape == mine.shape:
            merged[key] = theirs
        else:
            raise TrainError(f"the initial checkpoint's {key!r} has shape {tuple(theirs.shape)}, "
                             f"expected {tuple(mine.shape)}")
    model.load_state_dict(merged, strict=True)
    kept = [new_names[j] for _, j in pairs]
    return {"kept_classes": kept, "new_classes": [n for n in new_names if n not in kept]}


def init_model(init: str | None, arch: str | None, class_names: list[str], *, output_stride: int = 16,
               separable: bool = False, say: Callable[[str], None] = print) -> tuple[nn.Module, str, bool, dict]:
    """See ``_init_model``; a model that cannot be built (e.g. a stride the arch lacks) is a TrainError."""
    try:
        return _init_model(init, arch, class_names, output_stride=output_stride, separable=separable, say=say)
    except ValueError as exc:
        raise TrainError(str(exc)) from None


def _init_model(init: str | None, arch: str | None, class_names: list[str], *, output_stride: int,
                separable: bool, say: Callable[[str], None]) -> tuple[nn.Module, str, bool, dict]:
    """The model to train: ``(model, arch, backbone pretrained?, init summary)``.

    ``init``: None/"imagenet", "random", a bundled model's name or a checkpoint path; ``arch``
    None means the checkpoint's, else ``DEFAULT_ARCH``. The summary holds ``init``, ``build``,
    ``mean``/``std`` (input normalisation) and ``freeze_bn`` (batch norm folded into the weights).
    """
    from deeplab_studio.ml.zoo import arch_spec, build_model, list_archs

    if arch is not None and arch not in list_archs():
        raise TrainError(f"unknown architecture {arch!r}; known: {', '.join(list_archs())}")
    init = init or "imagenet"
    num_classes = len(class_names)
    if init in ("imagenet", "random"):
        arch = arch or DEFAULT_ARCH
        tf_style = arch_spec(arch).head == "tf_mobile"
        if init == "imagenet" and tf_style:  # TF DeepLab's MobileNetV2 has no ImageNet weights here
            say(f"{arch} has no ImageNet backbone weights here (start from a bundled model or checkpoint instead)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = build_model(arch, num_classes=num_classes, output_stride=output_stride,
                                pretrained_backbone=init == "imagenet" and not tf_style, separable=separable)
        offline = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        for msg in offline:
            say(msg)
        pretrained = init == "imagenet" and not offline and not tf_style
        say(f"{arch}: {'ImageNet backbone' if pretrained else 'random initialisation'}")
        mean, std = (TF_MEAN, TF_STD) if tf_style else (IMAGENET_MEAN, IMAGENET_STD)
        return model, arch, pretrained, {"init": "imagenet" if pretrained else "random",
                                         "build": build_kwargs(model), "mean": list(mean), "std": list(std),
                                         "freeze_bn": False}
    loaded, source = _load_initial(init)
    arch = arch or loaded.arch
    if arch != loaded.arch:
        raise TrainError(f"--arch {arch} differs from the initial model's {loaded.arch} ({source})")
    model = build_model(arch, num_classes=num_classes, output_stride=output_stride, **build_kwargs(loaded.model))
    info = transfer_weights(model, loaded.model.state_dict(), loaded.class_names, list(class_names))
    folded = has_folded_batch_norm(loaded.model)
    say(f"{arch} from {source}: kept {len(info['kept_classes'])} classes"
        + (f", new: {', '.join(info['new_classes'])}" if info["new_classes"] else "")
        + ("; batch norm is folded into its weights, so BatchNorm statistics stay fixed" if folded else ""))
    return model, arch, True, {"init": str(init), "build": build_kwargs(model), **info,
                               "mean": list(loaded.mean), "std": list(loaded.std), "freeze_bn": folded}


def _load_initial(init: str) -> tuple[Any, str]:
    """The LoadedModel to start from and how to name it: a file or folder that exists, else a
    bundled model of that name (``deeplab_studio.models``)."""
    from deeplab_studio.ml.checkpoints import CheckpointError, load_checkpoint
    from deeplab_studio.models import bundled_model_path, bundled_models

    try:
        if not Path(init).exists() and init in bundled_models():
            with bundled_model_path(init) as path:
                return load_checkpoint(path, device="cpu"), f"the bundled model {init}"
        return load_checkpoint(init, device="cpu"), str(init)
    except (CheckpointError, OSError) as exc:
        raise TrainError(f"cannot load the initial checkpoint: {exc}") from None


def has_folded_batch_norm(model: nn.Module) -> bool:
    """True when every batch norm keeps the statistics of an identity (running mean 0, variance
    1 - eps) while its affine part is not the fresh one (some bias not 0 or scale not 1): batch
    norm was folded into the convolutions, as in converted TFLite models and models fine-tuned
    from them. Training such a model with batch statistics would undo the folding, so its
    BatchNorm layers must stay in eval mode. (A freshly built model has variance 1, bias 0.)"""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or any(m.running_mean is None or m.running_var is None or m.weight is None or m.bias is None
                        for m in norms):
        return False
    for m in norms:
        var = m.running_var.float()
        if not (torch.all(m.running_mean == 0)
                and torch.allclose(var, torch.full_like(var, 1 - m.eps), rtol=0, atol=1e-4)):
            return False
    return any(bool(torch.any(m.bias != 0) or torch.any(m.weight != 1)) for m in norms)


def build_kwargs(model: nn.Module) -> dict[str, Any]:
    """How a zoo model was built beyond arch/classes/stride (separable convs, decoder depth)."""
    return {"separable": bool(getattr(model, "separable", False)),
            "decoder_convs": int(getattr(model, "decoder_convs", 1))}


def save_best(path: Path, model: nn.Module, arch: str, class_names: list[str], class_colors, output_stride: int,
              summary: dict[str, Any], *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
    """The best model in the own checkpoint format (``save_checkpoint`` writes atomically), with
    the input normalisation it was trained with."""
    from deeplab_studio.ml.checkpoints import save_checkpoint

    save_checkpoint(path, model, arch=arch, num_classes=len(class_names), class_names=list(class_names),
                    class_colors=[list(c) for c in class_colors] if class_colors else None,
                    output_stride=output_stride, mean=mean, std=std, training=_plain(summary))


def _plain(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
