"""Make the bundled VOC model `deeplab_studio/models/deeplabv3_mobilenetv2_voc.safetensors`.

Converts the Coral/TFLite DeepLab v3 MobileNetV2 (depth multiplier 1.0, 21 Pascal VOC classes,
Apache-2.0; kept in `tests/data/coral_deeplabv3_mnv2_pascal/`) with `deeplab-studio convert` to
float16 and writes its model card. Measured figures and the CRF setting are added to the card by
`benchmarks/measure_voc_model.py` and kept when the model is remade. Run:
`python models/convert_voc_model.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "coral_deeplabv3_mnv2_pascal"
OUT = ROOT / "deeplab_studio" / "models" / "deeplabv3_mobilenetv2_voc.safetensors"


def main() -> int:
    from deeplab_studio.cli import main as cli

    card_path = OUT.with_suffix(".json")
    kept = {}  # measured figures and the CRF setting survive a remake (they describe the same weights)
    if card_path.is_file():
        old = json.loads(card_path.read_text())
        kept = {k: old[k] for k in ("measured", "crf") if k in old}
    rc = cli(["convert", str(SOURCE / "deeplabv3_mnv2_pascal_quant.tflite"), "--out", str(OUT),
              "--labels", str(SOURCE / "pascal_voc_segmentation_labels.txt"), "--float16",
              "--licence", "Apache-2.0 (the source repository's licence; text in LICENSE-coral beside this card)",
              "--source", "google-coral/test_data (public repository), file deeplabv3_mnv2_pascal_quant.tflite"])
    if rc:
        return rc
    card = json.loads(card_path.read_text()) | kept
    card["name"] = "DeepLab v3 MobileNetV2 (Pascal VOC), converted from the Coral TFLite model"
    card["description"] = (
        "TensorFlow DeepLab's mobile DeepLab v3 (MobileNetV2, depth multiplier 1.0, output stride 16, "
        "ASPP with one 1x1 branch and image pooling) trained on the 21 Pascal VOC classes, published by "
        "Google as int8 TFLite for the Coral Edge TPU. Converted to float16 with 'deeplab-studio convert'. "
        "The source states no training recipe and no accuracy; see 'measured'.")
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    (OUT.parent / "LICENSE-coral").write_text((SOURCE / "LICENSE").read_text())
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB) and {card_path.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
