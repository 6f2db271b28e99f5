"""Convert TensorFlow DeepLab's mobile v3 from a TFLite file into `tf_mobile.TFMobileDeepLabV3`.

The file is parsed with the `tflite` package (flatbuffer readers; nothing is executed). Each
convolution's weights are de-quantized from their scale and zero point (per tensor, or per channel
where the file says so), its bias likewise, and placed by the TF scope in the tensor's name
(`MobilenetV2/expanded_conv_3/depthwise`, `aspp0`, `logits/semantic`, …). The graph's own op options
are checked against the architecture — padding SAME, strides, dilations, activations, and the
`align_corners` bilinear resize — so a file of another graph is refused with one line instead of
being converted into a network that computes something else. Batch norm arrives folded into the
convolutions: the model's batch-norm layers become identities that hold the folded biases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ConvertError  # noqa: F401 (also imported from here)
from .tf_mobile import TFMobileDeepLabV3, identity_batch_norms
from .zoo import build_model

_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8}
_ACT = {0: None, 1: "relu", 3: "relu6"}
_SCOPE = re.compile(r"^(?:MobilenetV2/(?P<block>Conv|expanded_conv(?:_(?P<n>\d+))?)(?:/(?P<part>expand|depthwise|project))?"
                    r"|(?P<head>aspp0|image_pooling|concat_projection|logits/semantic))/")


@dataclass
class ConvOp:
    """One convolution of the graph with de-quantized weights in torch layout."""

    scope: str
    kind: str  # "conv" or "depthwise"
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    dilation: int
    padding: str
    activation: str | None


@dataclass
class TFLiteGraph:
    convs: list[ConvOp] = field(default_factory=list)
    resize_align_corners: list[bool] = field(default_factory=list)
    sha256: str = ""


def _dequantize(model, graph, index: int) -> np.ndarray:
    tensor = graph.Tensors(index)
    dtype = _TYPES.get(tensor.Type())
    if dtype is None:
        raise ValueError(f"tensor {tensor.Name().decode(errors='replace')} has unsupported type {tensor.Type()}")
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(raw, int):
        raise ValueError(f"tensor {tensor.Name().decode(errors='replace')} holds no constant data")
    data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(tensor.ShapeAsNumpy())
    q = tensor.Quantization()
    if dtype in (np.float32, np.float16) or q is None or q.ScaleLength() == 0:
        return data.astype(np.float32)
    scale, zero = q.ScaleAsNumpy().astype(np.float64), q.ZeroPointAsNumpy().astype(np.float64)
    if scale.size > 1:  # per channel along quantized_dimension
        shape = [1] * data.ndim
        shape[q.QuantizedDimension()] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((data.astype(np.float64) - zero) * scale).astype(np.float32)


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def read_tflite(path: str | Path) -> TFLiteGraph:
    """The convolutions and resizes of a TFLite DeepLab graph (ConvertError for other files)."""
    import tflite  # optional dependency: the `convert` extra

    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ConvertError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ConvertError(path, "not a TFLite file (no TFL3 flatbuffer identifier)")
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    out = TFLiteGraph(sha256=hashlib.sha256(buf).hexdigest())
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                out.convs.append(_conv_op(model, graph, op, name, tflite))
            elif name == "RESIZE_BILINEAR":
                out.resize_align_corners.append(bool(_options(op, tflite.ResizeBilinearOptions).AlignCorners()))
    except ConvertError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer fails anywhere in the readers
        raise ConvertError(path, f"damaged or unsupported TFLite file ({type(exc).__name__}: {exc})") from None
    return out


def _conv_op(model, graph, op, name: str, tflite) -> ConvOp:
    depthwise = name == "DEPTHWISE_CONV_2D"
    opts = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    w = _dequantize(model, graph, op.Inputs(1))
    b = _dequantize(model, graph, op.Inputs(2)) if op.InputsLength() > 2 and op.Inputs(2) >= 0 else np.zeros(w.shape[0 if not depthwise else 3], np.float32)
    # TFLite: conv [out, kh, kw, in]; depthwise [1, kh, kw, channels] → torch [out, in/groups, kh, kw]
    weight = w[0].transpose(2, 0, 1)[:, None] if depthwise else w.transpose(0, 3, 1, 2)
    scope = graph.Tensors(op.Inputs(1)).Name().decode("utf-8", "replace").split(";")[0]
    return ConvOp(scope, "depthwise" if depthwise else "conv", np.ascontiguousarray(weight), b.reshape(-1),
                  int(opts.StrideW()), int(opts.DilationWFactor()), "SAME" if opts.Padding() == 0 else "VALID",
                  _ACT.get(opts.FusedActivationFunction(), f"activation {opts.FusedActivationFunction()}"))


def _target(scope: str) -> str | None:
    """Our module name for a TF scope, e.g. `backbone.features.4.depthwise` (None if unknown)."""
    m = _SCOPE.match(scope + "/")
    if m is None:
        return None
    if m["head"]:
        return "classifier." + ("logits" if m["head"] == "logits/semantic" else m["head"])
    index = 0 if m["block"] == "Conv" else 1 + int(m["n"] or 0)
    return f"backbone.features.{index}" + (f".{m['part']}" if m["part"] else "")


def _expected_act(name: str) -> str | None:
    if name.endswith(".project") or name == "classifier.logits":
        return None
    return "relu" if name.startswith("classifier.") else "relu6"


def to_model(graph: TFLiteGraph, path: Path, *, num_classes: int | None = None) -> TFMobileDeepLabV3:
    """Build the matching architecture and fill it with the graph's weights (checked op by op)."""
    stem = next((c for c in graph.convs if c.scope.startswith("MobilenetV2/Conv/")), None)
    logits = next((c for c in graph.convs if c.scope.startswith("logits/semantic/")), None)
    if stem is None or logits is None:
        raise ConvertError(path, "not TensorFlow DeepLab's mobile v3 graph (no MobilenetV2/Conv or logits/semantic)")
    arch = {32: "deeplabv3_mobilenetv2_tf", 16: "deeplabv3_mobilenetv2_tf_dm05"}.get(stem.weight.shape[0])
    if arch is None:
        raise ConvertError(path, f"a MobileNetV2 stem of {stem.weight.shape[0]} channels is neither depth "
                                 "multiplier 1.0 nor 0.5")
    classes = logits.weight.shape[0]
    if num_classes is not None and num_classes != classes:
        raise ConvertError(path, f"the graph has {classes} classes, the labels file {num_classes}")
    model = build_model(arch, num_classes=classes)
    identity_batch_norms(model)
    modules = dict(model.named_modules())
    seen: set[str] = set()
    for op in graph.convs:
        name = _target(op.scope)
        mod = modules.get(name) if name else None
        if mod is None or name in seen:
            raise ConvertError(path, f"another graph: convolution {op.scope!r} has no place in {arch}")
        seen.add(name)
        conv = mod if name == "classifier.logits" else mod.conv
        problem = _mismatch(op, conv, name)
        if problem:
            raise ConvertError(path, f"another graph: {op.scope} {problem}")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(op.weight))
            (conv.bias if name == "classifier.logits" else mod.bn.bias).copy_(torch.from_numpy(op.bias))
    missing = {n for n, m in modules.items() if hasattr(m, "conv") and hasattr(m, "bn")} - seen
    if missing:
        raise ConvertError(path, f"another graph: no weights for {', '.join(sorted(missing)[:4])}")
    if not graph.resize_align_corners or not all(graph.resize_align_corners):
        raise ConvertError(path, "another graph: its bilinear resizes do not use align_corners=True")
    return model.eval()


def _mismatch(op: ConvOp, conv: torch.nn.Conv2d, name: str) -> str | None:
    if tuple(op.weight.shape) != tuple(conv.weight.shape):
        return f"has weights {tuple(op.weight.shape)}, {name} expects {tuple(conv.weight.shape)}"
    if op.padding != "SAME":
        return f"uses {op.padding} padding, not SAME"
    if (op.stride, op.dilation) != (conv.stride[0], conv.dilation[0]):
        return (f"has stride {op.stride} and dilation {op.dilation}, {name} at output stride 16 has "
                f"{conv.stride[0]} and {conv.dilation[0]}")
    if op.activation != _expected_act(name):
        return f"ends in {op.activation or 'no activation'}, {name} expects {_expected_act(name) or 'none'}"
    return None


def read_labels(path: str | Path) -> list[str]:
    """Class names, one per line up to the first blank line (notes after it, as in the Coral
    labels file, are ignored); ConvertError if unusable."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(path, f"cannot read the labels file ({exc})") from None
    names = [ln.strip() for ln in text.strip().split("\n\n")[0].splitlines()]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ConvertError(path, "a labels file has one distinct, non-empty class name per line")
    return names


def convert_tflite(path: str | Path, *, labels: str | Path | None = None) -> tuple[TFMobileDeepLabV3, list[str] | None, TFLiteGraph]:
    """(model in eval mode, class names or None, what was read) from a TFLite DeepLab file."""
    path = Path(path)
    names = read_labels(labels) if labels is not None else None
    graph = read_tflite(path)
    model = to_model(graph, path, num_classes=len(names) if names is not None else None)
    return model, names, graph
