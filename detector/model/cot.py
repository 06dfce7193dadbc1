"""Contextual Transformer (CoT) layer (Li et al., TPAMI 2022) in plain PyTorch.

The reference implementation computes the dynamic context with a CUDA-only kernel. Here the
local matrix multiply is a weighted sum of the k*k shifted copies of the value map, which runs
on any device, needs no unfold buffer and exports to ONNX.
"""

import torch
import torch.nn.functional as F
from torch import nn


def local_aggregate(value: torch.Tensor, weights: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Weight each position's kxk neighbourhood of `value` by its own attention weights.

    value: (B, C, H, W). weights: (B, G, k*k, H, W), shared by channel groups: channel c uses
    weight group c % G, as in the reference kernel. Zero padding at the borders.
    """
    batch, channels, height, width = value.shape
    groups = weights.shape[1]
    pad = kernel_size // 2
    padded = F.pad(value, (pad, pad, pad, pad))
    # channel c = i * G + g belongs to weight group g
    out = value.new_zeros(batch, channels // groups, groups, height, width)
    for offset in range(kernel_size * kernel_size):
        dy, dx = divmod(offset, kernel_size)
        shifted = padded[:, :, dy:dy + height, dx:dx + width]
        shifted = shifted.reshape(batch, channels // groups, groups, height, width)
        out = out + shifted * weights[:, None, :, offset]
    return out.reshape(batch, channels, height, width)


class CoTLayer(nn.Module):
    """Contextual Transformer layer: static context, attention, dynamic context, fusion.

    Shape-preserving (stride 1), so it replaces a 3x3, stride-1 convolution of a residual block.
    """

    def __init__(self, channels: int, kernel_size: int = 3, key_groups: int = 4,
                 share_planes: int = 8, attention_factor: int = 2, radix_reduction: int = 4) -> None:
        super().__init__()
        if channels % share_planes or channels % key_groups:
            raise ValueError(f"channels ({channels}) must divide by {share_planes} and {key_groups}")
        self.kernel_size = kernel_size
        self.weight_groups = channels // share_planes
        # static context K1: kxk group convolution of the input
        self.key_embed = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                      groups=key_groups, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        # attention from [x, K1]: a kxk weight per position and channel group
        hidden = channels // attention_factor
        weight_channels = kernel_size * kernel_size * self.weight_groups
        self.attention = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, weight_channels, 1),
            nn.GroupNorm(self.weight_groups, weight_channels),
        )
        # value V
        self.value_embed = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.dynamic_norm = nn.BatchNorm2d(channels)
        self.dynamic_act = nn.SiLU(inplace=True)
        # split attention over {K1, K2}
        radix = 2
        attention_channels = max(channels * radix // radix_reduction, 32)
        self.split_attention = nn.Sequential(
            nn.Conv2d(channels, attention_channels, 1),
            nn.BatchNorm2d(attention_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(attention_channels, radix * channels, 1),
        )

    def attention_weights(self, x: torch.Tensor, static_context: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        weights = self.attention(torch.cat([x, static_context], dim=1))
        return weights.reshape(batch, self.weight_groups, self.kernel_size ** 2, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        static_context = self.key_embed(x)
        weights = self.attention_weights(x, static_context)
        value = self.value_embed(x)
        dynamic_context = local_aggregate(value, weights, self.kernel_size)
        dynamic_context = self.dynamic_act(self.dynamic_norm(dynamic_context))

        batch, channels = x.shape[:2]
        pooled = (dynamic_context + static_context).mean(dim=(2, 3), keepdim=True)
        # softmax over the pair {K2, K1}, per channel
        pair_weights = self.split_attention(pooled).reshape(batch, channels, 2).softmax(dim=2)
        return (dynamic_context * pair_weights[..., 0, None, None]
                + static_context * pair_weights[..., 1, None, None])
