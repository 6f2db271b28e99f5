"""The one cancel hook: ml and the dataset formats share core's."""

import threading

from deeplab_studio.core.cancel import is_cancelled


def test_is_cancelled_accepts_none_callables_and_events():
    assert not is_cancelled(None)
    assert not is_cancelled(lambda: False)
    assert is_cancelled(lambda: True)
    ev = threading.Event()
    assert not is_cancelled(ev)
    ev.set()
    assert is_cancelled(ev)


def test_ml_and_formats_use_the_same_hook():
    from deeplab_studio.ml import cancel as ml_cancel
    from deeplab_studio.storage.formats import base

    assert ml_cancel.is_cancelled is is_cancelled
    assert base.is_cancelled is is_cancelled
