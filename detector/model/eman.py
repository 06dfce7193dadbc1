"""Moving-average normalisation for the frozen teacher (our reading of EMAN, Cai et al. 2021)."""

import torch
from torch import nn


class MovingAverageBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with running statistics, never with batch statistics.

    While `adapting` and in training mode, the running statistics move towards the statistics of
    each batch seen, with `momentum` (PyTorch's convention: 0.001 means m = 0.999 in EMAN). The
    output is computed with the statistics from before the update, so a frame's features never
    depend on the other frames in its batch. Affine weights stay frozen.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.001) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=True)
        self.adapting = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.running_mean is not None and self.running_var is not None
        out = nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=False, momentum=0.0, eps=self.eps,
        )
        if self.training and self.adapting:
            with torch.no_grad():
                xf = x.detach().float()
                mean = xf.mean(dim=(0, 2, 3))
                n = xf.numel() / xf.shape[1]
                var = xf.var(dim=(0, 2, 3), unbiased=n > 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
                self.num_batches_tracked += 1
        return out


def convert_to_moving_average(module: nn.Module, momentum: float) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a MovingAverageBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, MovingAverageBatchNorm2d):
            replacement = MovingAverageBatchNorm2d(child.num_features, eps=child.eps,
                                                   momentum=momentum)
            replacement.load_state_dict(child.state_dict())
            replacement.weight.requires_grad_(False)
            replacement.bias.requires_grad_(False)
            setattr(module, name, replacement)
        else:
            convert_to_moving_average(child, momentum)
    return module
