"""The CoT layer: shapes, gradients, and the shifted-sum aggregation against an unfold reference."""

import pytest
import torch
import torch.nn.functional as F

from detector.model.cot import CoTLayer, local_aggregate


def unfold_reference(value: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """The reference kernel's local matrix multiply, written with F.unfold."""
    b, c, h, w = value.shape
    groups = weights.shape[1]
    patches = F.unfold(value, k, padding=k // 2).view(b, c, k * k, h, w)
    group_of_channel = torch.arange(c) % groups
    per_channel = weights[:, group_of_channel]  # (B, C, k*k, H, W)
    return (patches * per_channel).sum(dim=2)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("shape", [(2, 16, 7, 9), (1, 32, 5, 5)])
def test_local_aggregate_matches_unfold(shape, k):
    torch.manual_seed(0)
    value = torch.randn(shape)
    weights = torch.randn(shape[0], shape[1] // 8, k * k, *shape[2:])
    ours = local_aggregate(value, weights, k)
    assert torch.allclose(ours, unfold_reference(value, weights, k), atol=1e-5)


def test_group_mapping_is_interleaved():
    # channel c uses weight group c % G: give group 1 zero weights, so odd channels vanish
    value = torch.ones(1, 4, 3, 3)
    weights = torch.ones(1, 2, 9, 3, 3)
    weights[:, 1] = 0
    out = local_aggregate(value, weights, 3)
    assert out[0, 1].abs().sum() == 0 and out[0, 3].abs().sum() == 0
    assert out[0, 0, 1, 1] == 9  # the centre sees all nine neighbours


@pytest.mark.parametrize("channels,size", [(64, 16), (128, 8)])
def test_cot_layer_keeps_shape_and_trains(channels, size):
    torch.manual_seed(0)
    layer = CoTLayer(channels)
    x = torch.randn(2, channels, size, size, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    # every branch contributes: the attention and the value path both get gradient
    assert layer.attention[0].weight.grad.abs().sum() > 0
    assert layer.value_embed[0].weight.grad.abs().sum() > 0


def test_cot_layer_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divide"):
        CoTLayer(12)


def test_cot_output_is_per_frame():
    torch.manual_seed(0)
    layer = CoTLayer(32).eval()
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        assert torch.allclose(layer(x)[1:2], layer(x[1:2]), atol=1e-5)
