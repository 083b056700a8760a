"""The time-conditioned UNet: shapes (any h, w), time conditioning, gradients everywhere, bad inputs."""

from __future__ import annotations

import pytest
import torch

from diffseg.models import UNet


def _x(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("dim_mults", "size", "attention"),
    [((1, 1, 1), (16, 16), True), ((1, 1, 1), (18, 23), True), ((1, 2), (9, 7), True), ((1,), (5, 6), False)],
)
def test_shapes_any_size(dim_mults: tuple[int, ...], size: tuple[int, int], attention: bool) -> None:
    torch.manual_seed(0)
    unet = UNet(6, 4, width=16, dim_mults=dim_mults, attention=attention)
    out = unet(_x(2, 6, *size), torch.tensor([1, 7]))
    assert out.shape == (2, 4, *size)
    assert torch.isfinite(out).all()


def test_time_changes_the_output_and_float_time_equals_long() -> None:
    torch.manual_seed(0)
    unet = UNet(3, 2, width=16, dim_mults=(1, 1))
    x = _x(2, 3, 8, 8)
    a = unet(x, torch.tensor([1, 1]))
    b = unet(x, torch.tensor([50, 50]))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(unet(x, torch.tensor([1.0, 1.0])), a)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    unet = UNet(3, 2, width=16, dim_mults=(1, 1))
    unet(_x(2, 3, 8, 8), torch.tensor([3, 9])).square().mean().backward()
    missing = [n for n, p in unet.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_batch_items_are_independent() -> None:
    # GroupNorm, not BatchNorm: one sample's output must not depend on the rest of the batch
    torch.manual_seed(0)
    unet = UNet(3, 2, width=16, dim_mults=(1, 1)).eval()
    x = _x(3, 3, 8, 8)
    t = torch.tensor([2, 5, 9])
    torch.testing.assert_close(unet(x, t)[1:2], unet(x[1:2], t[1:2]), rtol=1e-4, atol=1e-5)


def test_bad_inputs() -> None:
    unet = UNet(3, 2, width=16, dim_mults=(1, 1))
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        unet(_x(1, 4, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"time must have shape \(2,\)"):
        unet(_x(2, 3, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="divisible by groups=8"):
        UNet(3, 2, width=12)
    with pytest.raises(ValueError, match="dim_mults"):
        UNet(3, 2, width=16, dim_mults=())


@pytest.mark.parametrize("size", [(16, 16), (18, 23)])  # 18x23 needs the replicate padding
def test_projected_input_equals_the_full_concatenation(size: tuple[int, int]) -> None:
    # The refiner projects its step-invariant condition once; the split conv must give the full conv's result.
    torch.manual_seed(0)
    unet = UNet(7, 4, width=16, dim_mults=(1, 1, 1)).eval()
    x = _x(2, 7, *size)
    t = torch.tensor([3, 8])
    projected = unet.project_input(x[:, 2:], first_channel=2)
    assert projected.shape[:2] == (2, 16)
    torch.testing.assert_close(unet(x[:, :2], t, projected=projected), unet(x, t), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the projection"):
        unet(x[:, :2], t, projected=projected[..., :-4, :])
    with pytest.raises(ValueError, match=r"channels \[5, 12\)"):
        unet.project_input(x, first_channel=5)
    with pytest.raises(ValueError, match="fewer leading channels"):
        unet(x[:, :0], t, projected=projected)


# ------------------------------------------------------------------------------------------------------------
# the release's UNet options (paper profile)


def test_weight_standardised_convs_ignore_the_scale_and_offset_of_their_filters() -> None:
    """A weight-standardised conv uses (w - mean) / sqrt(var + eps) per filter: shifting a filter by a constant
    leaves the UNet's output unchanged, and so does scaling it (up to eps = 1e-5 against the filter's variance);
    a plain conv's output changes."""
    from diffseg.models.unet import WeightStandardizedConv2d

    torch.manual_seed(0)
    unet = UNet(3, 2, width=16, dim_mults=(1, 1), weight_standardized=True).eval()
    conv = unet.downs[0][0].block1.conv
    assert isinstance(conv, WeightStandardizedConv2d)
    x, t = _x(2, 3, 8, 8), torch.tensor([1, 5])
    before = unet(x, t)
    with torch.no_grad():
        conv.weight.add_(0.5)
    torch.testing.assert_close(unet(x, t), before, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        conv.weight.mul_(3.0)
    torch.testing.assert_close(unet(x, t), before, rtol=0, atol=1e-3)
    torch.manual_seed(0)
    plain = UNet(3, 2, width=16, dim_mults=(1, 1)).eval()
    before = plain(x, t)
    with torch.no_grad():
        plain.downs[0][0].block1.conv.weight.mul_(3.0).add_(0.5)
    assert not torch.allclose(plain(x, t), before, atol=1e-3)


def test_linear_attention_scale_v_divides_the_values_by_the_positions() -> None:
    from diffseg.models.unet import LinearAttention

    torch.manual_seed(0)
    scaled = LinearAttention(16, scale_v=True)
    plain = LinearAttention(16)
    plain.load_state_dict(scaled.state_dict())
    x = _x(2, 16, 6, 5)
    with torch.no_grad():  # v is the last third of to_qkv's output channels: scale its weights instead
        plain.to_qkv.weight[2 * 128 :] /= 6 * 5
    torch.testing.assert_close(scaled(x), plain(x), rtol=1e-5, atol=1e-6)


def test_the_release_head_has_dropout_in_train_mode_only() -> None:
    torch.manual_seed(0)
    unet = UNet(3, 5, width=16, dim_mults=(1, 1), head_channels=32, head_dropout=0.5)
    assert (
        unet.final_conv.out_channels == 32
        and unet.head[1].in_channels == 32
        and unet.head[1].out_channels == 5
    )
    x, t = _x(2, 3, 8, 8), torch.tensor([1, 5])
    unet.train()
    assert not torch.allclose(unet(x, t), unet(x, t))  # Dropout2d drops other channels on each call
    unet.eval()
    torch.testing.assert_close(unet(x, t), unet(x, t), rtol=0, atol=0)
    assert unet(x, t).shape == (2, 5, 8, 8)
    with pytest.raises(ValueError, match="head_channels must be >= 0 and head_dropout in"):
        UNet(3, 5, width=16, head_channels=-1)


def test_the_paper_profile_builds_the_release_unet() -> None:
    from diffseg.profiles import profile_config

    cfg = profile_config("paper", "ade20k", "segformer-b0")
    assert (cfg.unet.weight_standardized, cfg.unet.attention_scale_v, cfg.unet.head_channels) == (
        True,
        True,
        256,
    )
    assert cfg.unet.head_dropout == 0.1


@pytest.mark.parametrize("blocks", [1, 3])
def test_blocks_per_level_give_any_depth_with_every_parameter_used(blocks: int) -> None:
    torch.manual_seed(0)
    unet = UNet(3, 2, width=16, dim_mults=(1, 1), blocks=blocks, attention_head_channels=8)
    assert all(len(level) == blocks + 2 for level in (*unet.downs, *unet.ups))  # blocks, attention, resample
    out = unet(_x(2, 3, 8, 8), torch.tensor([3, 9]))
    assert out.shape == (2, 2, 8, 8)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())
    with pytest.raises(ValueError, match="blocks per level and attention head channels must be >= 1"):
        UNet(3, 2, width=16, blocks=0)


def test_two_blocks_keep_the_release_layout_and_head_channels_size_attention() -> None:
    torch.manual_seed(0)
    names = {n for n, _ in UNet(3, 2, width=16, dim_mults=(1, 1)).named_parameters()}
    # the release's layout: downs.<level>.{0,1} ResNet blocks, .2 attention, .3 resample
    expected = {"downs.0.0.block1.conv.weight", "downs.0.1.block2.conv.weight", "downs.0.2.to_qkv.weight"}
    expected |= {"downs.0.3.weight", "ups.1.0.res_conv.weight", "ups.1.2.to_qkv.weight", "ups.1.3.weight"}
    assert expected <= names
    narrow = UNet(3, 2, width=16, dim_mults=(1, 1), attention_head_channels=8)
    assert narrow.downs[0][2].to_qkv.weight.shape == (3 * 4 * 8, 16, 1, 1)
    assert narrow.mid_attn.to_qkv.weight.shape == (3 * 4 * 8, 16, 1, 1)
