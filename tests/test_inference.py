"""The inference API: any frame in, per-frame scores independent of the batch, maps out."""

import numpy as np
import pytest

from detector.frames import FrameError, fit_to_square, map_to_frame, to_rgb8, valid_region
from detector.inference import Inspector
from tests.conftest import small_model


def frames(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (80, 120, 3), dtype=np.uint8),
        rng.integers(0, 256, (64, 64), dtype=np.uint8),  # gray
        rng.integers(0, 65535, (50, 30), dtype=np.uint16),  # 16-bit gray
        rng.integers(0, 256, (70, 70, 4), dtype=np.uint8),  # with alpha
    ]


@pytest.mark.parametrize("teacher_norm", ["frozen", "moving_average"])
@pytest.mark.parametrize("student", ["cot", "residual", "symmetric"])
def test_score_is_the_same_alone_and_in_a_batch(teacher_norm, student, some_calibration):
    inspector = Inspector(small_model(student=student, teacher_norm=teacher_norm),
                          some_calibration)
    batch = frames()
    together = inspector.inspect(batch)
    for index, frame in enumerate(batch):
        alone = inspector.inspect([frame])
        assert alone.scores[0] == pytest.approx(together.scores[index], rel=1e-4)
        assert np.allclose(alone.maps[0], together.maps[index], rtol=1e-4, atol=1e-6)


def test_outputs_have_documented_shapes(model, some_calibration):
    result = Inspector(model, some_calibration).inspect(frames())
    assert result.scores.shape == (4,) and result.maps.shape == (4, 64, 64)
    assert np.all((result.normalised >= 0) & (result.normalised <= 1))
    assert np.allclose(result.normalised, some_calibration.normalise(result.scores))
    assert np.allclose(result.scores, result.maps.reshape(4, -1).max(axis=1))
    empty = Inspector(model, some_calibration).inspect([])
    assert empty.scores.shape == (0,)


def test_bfloat16_scores_stay_close_to_float32(model, some_calibration):
    batch = frames()
    exact = Inspector(small_model(), some_calibration).inspect(batch)
    fast = Inspector(model, some_calibration, precision="bfloat16").inspect(batch)
    assert np.allclose(fast.scores, exact.scores, rtol=0.1)


def test_bad_precision_and_float16_on_cpu_are_refused(model, some_calibration):
    with pytest.raises(ValueError, match="precision"):
        Inspector(model, some_calibration, precision="int8")
    with pytest.raises(ValueError, match="bfloat16"):
        Inspector(model, some_calibration, precision="float16")


def test_bad_frames_get_a_clear_error():
    with pytest.raises(FrameError):
        to_rgb8(np.zeros((0, 0), np.uint8))
    with pytest.raises(FrameError, match="dtype"):
        to_rgb8(np.zeros((4, 4), np.float32))
    with pytest.raises(FrameError, match="shape"):
        to_rgb8(np.zeros((4, 4, 5), np.uint8))


def test_pad_resize_keeps_aspect_and_maps_back():
    frame = np.zeros((50, 100, 3), np.uint8)
    frame[:, :50] = 255
    square = fit_to_square(frame, 64, "pad")
    assert square.shape == (64, 64, 3)
    top, left, height, width = valid_region((50, 100), 64, "pad")
    assert (top, left, height, width) == (16, 0, 32, 64)
    anomaly = np.zeros((64, 64), np.float32)
    anomaly[top:top + height, :32] = 1.0
    back = map_to_frame(anomaly, (50, 100), "pad")
    assert back.shape == (50, 100)
    assert back[:, :45].min() > 0.9 and back[:, 55:].max() < 0.1
