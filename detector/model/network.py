"""The teacher-student network: features for training, fused maps and scores for inference."""

import torch
from torch import nn

from detector.model.anomaly_map import fuse_maps, gaussian_blur, image_score, level_maps
from detector.model.config import ModelConfig
from detector.model.student import build_student
from detector.model.teacher import Teacher


class FrameNormaliser(nn.Module):
    """uint8 frames (B, H, W, 3), RGB, already at the model's size -> normalised (B, 3, H, W)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std


class TeacherStudent(nn.Module):
    """Frozen teacher, trainable student; anomaly = where the student fails to mimic the teacher.

    The teacher is built with random weights: callers load ImageNet weights
    (`teacher.load_imagenet`) or a saved model's full state. Nothing here reads files.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.teacher = Teacher(config.backbone, moving_average=config.teacher_norm == "moving_average",
                               momentum=config.eman_momentum)
        self.student = build_student(config.student, config.backbone, self.teacher.channels)
        self.normaliser = FrameNormaliser(*config.normalisation)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher and student feature levels of normalised images (B, 3, H, W)."""
        with torch.no_grad():
            teacher_levels = self.teacher(x)
        return teacher_levels, self.student(x)

    def score_features(self, teacher_levels: list[torch.Tensor], student_levels: list[torch.Tensor],
                       size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores (B,) and fused, smoothed float32 maps (B, H, W) from both feature sets."""
        maps = level_maps(teacher_levels, student_levels, size=size)
        fused = fuse_maps(maps.float(), self.config.fusion, self.config.fusion_weights)
        fused = gaussian_blur(fused, self.config.smoothing_sigma)
        return image_score(fused), fused

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, H, W) -> image scores (B,) and fused maps (B, H, W)."""
        return self.score_features(*self.features(x), size=tuple(x.shape[-2:]))

    def forward_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB frames (B, H, W, 3) at the model's size -> scores and fused maps."""
        return self(self.normaliser(frames))
