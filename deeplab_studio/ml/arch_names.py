"""The names of the registered model architectures, without importing torch.

``ml.zoo`` registers exactly these, in this order, and refuses to import if they ever differ, so
a window can list them (or a command line check one) without paying for torch.
"""

from __future__ import annotations

#: every architecture ``ml.zoo.build_model`` knows, in registry order (VainF's naming; torchvision's
#: MobileNetV3 DeepLab v3; TensorFlow DeepLab's mobile v3 at depth multiplier 1 and 0.5)
ARCH_NAMES: tuple[str, ...] = (
    "deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenet",
    "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_mobilenetv2_tf", "deeplabv3_mobilenetv2_tf_dm05",
)

#: what a new model is built as when no architecture is given
DEFAULT_ARCH = "deeplabv3plus_mobilenet"
