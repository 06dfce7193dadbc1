"""Students: a residual network with CoT layers (asymmetric), a plain one, or a teacher copy."""

import torch
from torch import nn

from detector.model.cot import CoTLayer
from detector.model.teacher import Lite0Features, ResNet18Features

STUDENT_KINDS = ("cot", "residual", "symmetric")


class StudentBlock(nn.Module):
    """A ResNet BasicBlock whose second (stride-1) 3x3 convolution is optionally a CoT layer."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_cot: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if use_cot:
            self.conv2: nn.Module = CoTLayer(out_channels)
        else:
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResidualStudent(nn.Module):
    """ResNet-18-shaped student (stem, layer1-3) with 1x1 projections onto the teacher's channels.

    With `use_cot`, every residual block's second convolution is a CoT layer: the asymmetric
    student of the paper.
    """

    widths = (64, 128, 256)

    def __init__(self, teacher_channels: tuple[int, ...], use_cot: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_channels = 64
        for index, width in enumerate(self.widths):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(
                StudentBlock(in_channels, width, stride, use_cot),
                StudentBlock(width, width, 1, use_cot),
            ))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.projections = nn.ModuleList(
            nn.Identity() if width == target else nn.Conv2d(width, target, 1)
            for width, target in zip(self.widths, teacher_channels, strict=True)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        levels = []
        for stage, projection in zip(self.stages, self.projections, strict=True):
            x = stage(x)
            levels.append(projection(x))
        return levels


class SymmetricStudent(nn.Module):
    """STPM's student: the teacher's own architecture with random weights."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.features = Lite0Features() if backbone == "efficientnet-lite0" else ResNet18Features()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x)


def build_student(kind: str, backbone: str, teacher_channels: tuple[int, ...]) -> nn.Module:
    if kind == "cot":
        return ResidualStudent(teacher_channels, use_cot=True)
    if kind == "residual":
        return ResidualStudent(teacher_channels, use_cot=False)
    if kind == "symmetric":
        return SymmetricStudent(backbone)
    raise ValueError(f"unknown student {kind!r}; choose one of {STUDENT_KINDS}")
