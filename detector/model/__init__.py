"""The asymmetric teacher-student network: pure nn.Modules, its loss and its anomaly map."""

from detector.model.anomaly_map import fuse_maps, gaussian_blur, level_maps
from detector.model.config import ModelConfig
from detector.model.loss import stpm_loss
from detector.model.network import TeacherStudent

__all__ = ["ModelConfig", "TeacherStudent", "fuse_maps", "gaussian_blur", "level_maps", "stpm_loss"]
