"""STPM's distillation loss: squared distance of channel-normalised features, summed over levels."""

import torch
import torch.nn.functional as F


def level_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Per-position squared distance of L2-normalised feature vectors: (B, C, h, w) -> (B, h, w)."""
    t = F.normalize(teacher.float(), dim=1)
    s = F.normalize(student.float(), dim=1)
    return (t - s).pow(2).sum(dim=1)


def stpm_loss(teacher_levels: list[torch.Tensor], student_levels: list[torch.Tensor]) -> torch.Tensor:
    """Mean over positions and batch of each level's distance, summed over the levels."""
    return sum(
        (level_distance(t, s).mean() for t, s in zip(teacher_levels, student_levels, strict=True)),
        start=torch.zeros((), device=teacher_levels[0].device),
    )
