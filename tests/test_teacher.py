"""Teachers: ImageNet weights load strictly, statistics adapt, weights never change."""
import re

import pytest
import torch

from detector.model.eman import MovingAverageBatchNorm2d
from detector.model.teacher import Teacher, TeacherWeightsError


def test_lite0_levels_have_strides_4_8_16():
    teacher = Teacher("efficientnet-lite0", moving_average=False)
    teacher.load_imagenet()
    levels = teacher(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape[1:]) for f in levels] == [(24, 32, 24), (40, 16, 12), (112, 8, 6)]


def test_moving_average_statistics_move_but_weights_do_not():
    torch.manual_seed(0)
    teacher = Teacher("efficientnet-lite0", moving_average=True, momentum=0.1)
    teacher.load_imagenet()
    weights_before = {k: v.clone() for k, v in teacher.named_parameters()}
    stats_before = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k}
    teacher.train()
    optimizer_target = teacher(torch.rand(4, 3, 64, 64) * 2 - 1)
    assert not any(f.requires_grad for f in optimizer_target)
    for _ in range(3):
        teacher(torch.rand(4, 3, 64, 64) * 2 - 1)
    moved = [k for k, v in teacher.state_dict().items()
             if "running" in k and not torch.allclose(v, stats_before[k])]
    assert len(moved) == len(stats_before)
    for name, parameter in teacher.named_parameters():
        assert torch.equal(parameter, weights_before[name]), name
        assert not parameter.requires_grad


def test_frozen_teacher_statistics_never_move():
    teacher = Teacher("efficientnet-lite0", moving_average=False)
    teacher.load_imagenet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    teacher(torch.randn(4, 3, 64, 64))
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not any(m.training for m in teacher.modules())


def test_teacher_features_do_not_depend_on_the_batch_while_adapting():
    torch.manual_seed(0)
    teacher = Teacher("efficientnet-lite0", moving_average=True, momentum=0.5)
    teacher.load_imagenet()
    frame = torch.randn(1, 3, 64, 64)
    others = torch.randn(5, 3, 64, 64) * 3
    teacher.train()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    alone = teacher(frame)
    teacher.load_state_dict(state)
    in_batch = teacher(torch.cat([frame, others]))
    for a, b in zip(alone, in_batch, strict=True):
        assert torch.allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, MovingAverageBatchNorm2d) and m.training for m in teacher.modules())


def test_resnet18_needs_a_weights_file(tmp_path):
    teacher = Teacher("resnet18", moving_average=False)
    with pytest.raises(TeacherWeightsError, match="--teacher-weights"):
        teacher.load_imagenet()
    missing = tmp_path / "resnet18.pth"
    with pytest.raises(TeacherWeightsError, match=re.escape(str(missing))):
        teacher.load_imagenet(missing)


def test_mismatched_teacher_weights_name_the_file(tmp_path):
    from torchvision.models import resnet34

    wrong = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(TeacherWeightsError, match=r"resnet34\.pth"):
        Teacher("resnet18", moving_average=False).load_imagenet(wrong)


def test_resnet18_loads_a_torchvision_state_dict(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    source = resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    teacher = Teacher("resnet18", moving_average=False)
    teacher.load_imagenet(path)
    x = torch.randn(1, 3, 64, 64)
    expected = source.layer3(source.layer2(source.layer1(
        source.maxpool(source.relu(source.bn1(source.conv1(x)))))))
    assert torch.allclose(teacher(x)[2], expected, atol=1e-5)
