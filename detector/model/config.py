"""The architecture and pre-processing switches of a model, stored with it."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from detector.model.teacher import TEACHER_NORMALISATION


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model's network and feed it frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: Literal["efficientnet-lite0", "resnet18"] = "efficientnet-lite0"
    student: Literal["cot", "residual", "symmetric"] = "cot"
    # frozen measured best on magnetic tiles (docs/results.md); moving_average is our EMAN reading
    teacher_norm: Literal["moving_average", "frozen"] = "frozen"
    # PyTorch convention: 0.001 is EMAN's m = 0.999
    eman_momentum: float = Field(0.001, gt=0, lt=1)
    image_size: int = Field(256, ge=64, le=1024)
    # stretch: resize to a square; pad: keep the aspect ratio, reflect-pad to a square
    # pad measured better than stretch on magnetic tiles' many aspect ratios (docs/results.md)
    resize: Literal["stretch", "pad"] = "pad"
    # the stride-16 level alone measured best on magnetic tiles and ELPV (docs/results.md)
    fusion: Literal["product", "mean", "weighted"] = "weighted"
    fusion_weights: tuple[float, float, float] = (0.0, 0.0, 1.0)
    smoothing_sigma: float = Field(4.0, ge=0, le=32)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {value}")
        return value

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return TEACHER_NORMALISATION[self.backbone]
