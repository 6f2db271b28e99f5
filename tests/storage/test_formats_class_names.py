"""Class names matched across datasets: the normaliser, the --classes file, the plan and its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.formats.base import FormatError
from deeplab_studio.storage.formats.class_names import VOID, normalise, parse_class_map, plan_classes


def test_the_normaliser_ignores_case_spaces_slashes_dashes_underscores() -> None:
    assert normalise("potted plant") == normalise("pottedplant") == normalise("Potted-Plant") == "pottedplant"
    assert normalise("tv/monitor") == normalise("TV_Monitor") == "tvmonitor"
    assert normalise("_background_") == "background" and normalise("car") != normalise("cart")


def test_the_classes_file(tmp_path: Path) -> None:
    f = tmp_path / "classes.txt"
    f.write_text("\ufeff# dataset = project\n\nperson = human\n  tv/monitor=television  \nblur = (void)\n")
    assert parse_class_map(f) == {"person": "human", "tv/monitor": "television", "blur": VOID}
    for text, why in (("a = b\nA = c\n", ":2: 'A' is mapped twice"), ("a =\n", ":1: expected"),
                      ("a = b:c\n", ":1: a project class name cannot contain ':'")):
        f.write_text(text)
        with pytest.raises(FormatError, match=why):
            parse_class_map(f)
    with pytest.raises(FormatError, match="cannot read the class mapping"):
        parse_class_map(tmp_path / "missing.txt")


def test_plan_into_a_project_with_label_maps() -> None:
    project = LabelSet(["background", "cat", "pottedplant"], [(0, 0, 0), (9, 9, 9), (1, 1, 1)])
    plan = plan_classes(["Background", "potted plant", "dog", "stuff:sky", "cat"],
                        [(0, 0, 0), (5, 5, 5), (9, 9, 9), (7, 7, 7), (9, 9, 9)], project, adopt=False)
    assert plan.labels.names == ["background", "cat", "pottedplant", "dog", "stuff sky"]
    assert plan.labels.colors[3] != (9, 9, 9) and plan.labels.colors[4] == (7, 7, 7)  # a taken colour is not reused
    np.testing.assert_array_equal(plan.lut[:6], [0, 2, 3, 4, 1, IGNORE])
    assert plan.summary() == ("classes: 1 same; 2 matched by name (Background → background, "
                              "potted plant → pottedplant); 2 added (dog, stuff sky)")
    assert plan.changed and project.names == ["background", "cat", "pottedplant"]  # the project's list untouched
    same = plan_classes(["background", "cat"], None, project, adopt=False)
    assert not same.changed and same.summary() == "classes: 2 same"


def test_plan_into_a_project_without_label_maps_takes_the_datasets_classes() -> None:
    plan = plan_classes(["bg", "road", "Road", "sign"], [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)], LabelSet.voc(),
                        adopt=True, mapping={"sign": VOID})
    assert plan.labels.names == ["bg", "road"] and plan.labels.colors == [(0, 0, 0), (1, 1, 1)]
    np.testing.assert_array_equal(plan.lut[:4], [0, 1, 1, IGNORE])  # "Road" is "road"; sign pixels are void
    with pytest.raises(FormatError, match="more than 255 classes"):
        plan_classes([f"c{i}" for i in range(256)], None, LabelSet.voc(), adopt=True)


def test_a_datasets_background_is_class_0_even_when_the_project_renamed_it():
    """labelme writes `_background_`: a project whose class 0 is called "unlabelled" still gets
    its own export back (the class-0 background is matched by position, not added)."""
    from deeplab_studio.core.labels import LabelSet
    from deeplab_studio.storage.formats.class_names import plan_classes

    project = LabelSet.voc()
    project.names[0] = "unlabelled"
    plan = plan_classes(["_background_", "cat"], None, project, adopt=False)
    assert plan.lut[0] == 0 and plan.lut[1] == project.names.index("cat") and not plan.changed
    other = plan_classes(["cat", "_background_"], None, project, adopt=False)  # not class 0: matched by name only
    assert other.lut[1] != 0 and other.changed
