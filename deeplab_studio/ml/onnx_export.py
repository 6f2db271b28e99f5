"""A segmentation model as an ONNX file: dynamic batch, height and width, described in its metadata.

`onnx_bytes(model)` exports a `LoadedModel` (or a bare DeepLab `nn.Module`) with torch's exporter
and returns the file's bytes; `export_onnx(model, path)` writes them atomically. The graph maps
the input `image` (float32 N×3×H×W, RGB, normalised as `(pixel / 255 - mean) / std`) to `logits`
(float32 N×C×H×W at the input size). The normalisation, the class names and colours, the
architecture and the output stride are stored in the model's `metadata_props`
(`onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`), so a runtime that
knows nothing of this project can prepare inputs and name the classes.

Two exporters of torch 2.14 work: "dynamo" (`torch.export`, torch's default and maintained one;
~10× slower to export) and "torchscript" (the legacy tracer, deprecated by torch). TF-style
"SAME" convolutions (`tf_mobile.SameConv2d`) compute their padding from the input size with
`math.ceil`, which neither exporter follows symbolically (the traced graph would be right at the
example size only); the exported copy pads with integer arithmetic both exporters carry through.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.atomic_file import write_bytes_atomic
from .tf_mobile import SameConv2d

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
#: the lowest opset torch's dynamo exporter writes natively; ONNX Runtime ≥ 1.14 runs it
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: bumped whenever the exported graph changes for the same weights (part of the cache key)
GRAPH_VERSION = 1
#: the example input the exporters trace (batch 2: torch.export specialises sizes of 0 and 1)
_EXAMPLE_SHAPE = (2, 3, 67, 93)
INSTALL_HINT = "pip install 'deeplab-studio[onnx]' (onnx, onnxscript, onnxruntime)"


class OnnxUnavailable(ImportError):
    """An optional package of the [onnx] extra is not installed."""


class OnnxExportError(RuntimeError):
    """The exporter failed or its graph disagrees with torch (one line)."""


def require(*modules: str) -> None:
    """Raise OnnxUnavailable naming the first of `modules` that is not installed."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise OnnxUnavailable(f"the Python package '{name}' is not installed; {INSTALL_HINT}")


def module_of(model: Any) -> nn.Module:
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module or a loaded checkpoint, got {type(model).__name__}")
    return module


def _same_conv_forward(self: SameConv2d, x: torch.Tensor) -> torch.Tensor:
    """`SameConv2d.forward` with TF "SAME" padding as integer arithmetic on the (symbolic) size:
    total = (ceil(n / s) - 1)·s + effective kernel - n, split with the extra pixel after."""
    (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
    pads: list[Any] = []
    for n, k, s, d in ((x.shape[-1], kw, sw, dw), (x.shape[-2], kh, sh, dh)):  # F.pad order: last dim first
        effective = (k - 1) * d + 1
        if s == 1:
            total: Any = effective - 1
        else:
            total = ((n + s - 1) // s - 1) * s + effective - n
            if effective < s:  # only then can it go negative
                total = torch.sym_max(total, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _LogitsNet(nn.Module):
    """The network as exported: one N×C×H×W logits tensor out (a torchvision-style dict's "out")."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


def exportable(model: Any) -> nn.Module:
    """An eval-mode CPU float32 copy of the model whose graph follows the input size in both exporters."""
    net = copy.deepcopy(module_of(model)).float().cpu().eval()
    for module in net.modules():
        if isinstance(module, SameConv2d):
            module.forward = types.MethodType(_same_conv_forward, module)  # type: ignore[method-assign]
    return _LogitsNet(net).eval()


def graph_digest(model: Any) -> str:
    """sha256 of what defines the exported graph: the module structure (strides, dilations, batch
    norm epsilons: its repr) and every weight and buffer, bit for bit."""
    module = module_of(model)
    digest = hashlib.sha256(repr(module).encode())
    digest.update(f"graph-v{GRAPH_VERSION}".encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def metadata(model: Any, *, exporter: str, opset: int) -> dict[str, str]:
    """The metadata_props written into the file (all values strings; lists and triples as JSON)."""
    from deeplab_studio import __version__

    from .augment import IMAGENET_MEAN, IMAGENET_STD

    module = module_of(model)
    loaded = None if model is module else model
    mean = tuple(getattr(loaded, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(loaded, "std", None) or IMAGENET_STD)
    meta = {
        "producer": f"deeplab-studio {__version__}",
        "arch": str(getattr(loaded, "arch", None) or getattr(module, "arch", type(module).__name__)),
        "num_classes": str(getattr(loaded, "num_classes", None) or getattr(module, "num_classes", "")),
        "output_stride": str(getattr(loaded, "output_stride", None) or getattr(module, "output_stride", "")),
        "mean": json.dumps([float(v) for v in mean]),
        "std": json.dumps([float(v) for v in std]),
        "input": (f"{INPUT_NAME}: float32 N×3×H×W, RGB, (pixel / 255 - mean) / std with the mean and std "
                  "above; H and W free (at least 32)"),
        "output": f"{OUTPUT_NAME}: float32 N×C×H×W at the input size; argmax over C is the class index",
        "exporter": f"torch {torch.__version__} {exporter}",
        "opset": str(opset),
        "graph_sha256": graph_digest(module),
    }
    names = getattr(loaded, "class_names", None)
    colors = getattr(loaded, "class_colors", None)
    if names:
        meta["class_names"] = json.dumps(list(names))
    if colors:
        meta["class_colors"] = json.dumps([[int(c) for c in color] for color in colors])
    return meta


def _run_exporter(net: nn.Module, path: Path, *, exporter: str, opset: int) -> None:
    example = torch.randn(*_EXAMPLE_SHAPE)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if exporter == "dynamo":
        dyn = torch.export.Dim.DYNAMIC
        program = torch.onnx.export(net, (example,), None, dynamo=True, verbose=False, external_data=False,
                                    dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}}, **names)
        program.save(str(path), external_data=False)
    else:
        axes = {0: "batch", 2: "height", 3: "width"}
        torch.onnx.export(net, (example,), str(path), dynamo=False, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, **names)


def _rename_dims(graph: Any) -> None:
    """Name the free dimensions of input and output batch/height/width (the dynamo exporter's
    are sympy symbols such as s77)."""
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, name in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) == 4 and not dims[index].HasField("dim_value"):
                dims[index].dim_param = name


def onnx_bytes(model: Any, *, exporter: str = DEFAULT_EXPORTER, opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX file of `model` (LoadedModel or nn.Module) with its metadata, as bytes.

    Raises OnnxUnavailable when `onnx` (or, for dynamo, `onnxscript`) is missing, and
    OnnxExportError (one line) when the exporter fails.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    require("onnx", *(("onnxscript",) if exporter == "dynamo" else ()))
    import onnx

    meta = metadata(model, exporter=exporter, opset=opset)
    net = exportable(model)
    with tempfile.TemporaryDirectory(prefix="deeplab-studio-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer and deprecation warnings name torch internals
                _run_exporter(net, path, exporter=exporter, opset=opset)
            proto = onnx.load(str(path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise OnnxExportError(f"the {exporter} exporter failed (opset {opset}): "
                                  f"{type(exc).__name__}: {first}") from exc
    _rename_dims(proto.graph)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (f"DeepLab segmentation ({meta['arch']}, {meta['num_classes']} classes) exported by "
                        f"{meta['producer']}; see metadata_props for the input normalisation and classes")
    return proto.SerializeToString()


def export_onnx(model: Any, path: str | Path, *, exporter: str = DEFAULT_EXPORTER,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write `onnx_bytes(model)` to `path` atomically (the caller decides whether it may be replaced)."""
    return write_bytes_atomic(path, onnx_bytes(model, exporter=exporter, opset=opset))


def read_metadata(source: str | Path | bytes) -> dict[str, str]:
    """The metadata_props of an ONNX file (path or bytes) as a dict."""
    require("onnx")
    import onnx

    proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source),
                                                                                     load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
