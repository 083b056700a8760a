"""MaskPriorRefiner: training touches only the denoiser, shapes for every condition / noise object, refine()
determinism and sampler relations, the release's parameter counts, bad inputs."""

from __future__ import annotations

import pytest
import torch

from diffseg.config import DiffusionConfig, ExperimentConfig, RefinerConfig, UNetConfig
from diffseg.diffusion import Uniform, build_kernel, make_step_grid
from diffseg.models import (
    CONDITIONS,
    NOISE_OBJECTS,
    MaskPriorRefiner,
    UNet,
    build_refiner,
    denoiser_in_channels,
)
from diffseg.segmentors import build_segmentor, count_parameters

K = 5
T = 10


@pytest.fixture(scope="module")
def segmentor():
    torch.manual_seed(0)
    return build_segmentor("deeplabv3plus-tiny", K)  # has BatchNorm layers whose statistics must not move


def _refiner(
    segmentor, condition="features", kernel="uniform", embed_trainable=False, seed=0
) -> MaskPriorRefiner:
    torch.manual_seed(seed)
    kern = build_kernel(kernel, K, T)
    unet = UNet(denoiser_in_channels(segmentor, kern, condition, 16), K, width=16, dim_mults=(1, 1))
    return MaskPriorRefiner(segmentor, kern, unet, K, condition=condition, embed_trainable=embed_trainable)


def _batch(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, K, (b, h, w), generator=g)
    mask[:, :3] = 255  # a band of ignore pixels
    return {"image": torch.randn(b, 3, h, w, generator=g), "mask": mask}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("embed_trainable", [False, True])
def test_training_step_changes_only_the_denoiser(segmentor, embed_trainable: bool) -> None:
    refiner = _refiner(segmentor, embed_trainable=embed_trainable)
    refiner.train()
    assert not refiner.segmentor.training  # frozen: the parent's train() does not reach it
    seg_before = {k: v.clone() for k, v in refiner.segmentor.state_dict().items()}
    den_before = {k: v.clone() for k, v in refiner.denoiser.state_dict().items()}
    # every parameter goes to the optimizer: requires_grad=False ones get no gradient and AdamW skips them
    opt = torch.optim.AdamW(refiner.parameters(), lr=1e-2)
    out = refiner.loss(_batch(), noise_object="first", generator=_gen())
    out["loss"].backward()
    opt.step()
    for k, v in refiner.segmentor.state_dict().items():  # weights and BN statistics
        assert torch.equal(v, seg_before[k]), k
    emb = refiner.denoiser.embedding.weight
    assert torch.equal(emb, den_before["embedding.weight"]) != embed_trainable
    changed = [
        k
        for k, v in refiner.denoiser.state_dict().items()
        if k.startswith("unet") and not torch.equal(v, den_before[k])
    ]
    assert "unet.final_conv.weight" in changed and "unet.init_conv.weight" in changed


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("noise_object", NOISE_OBJECTS)
def test_loss_every_condition_and_noise_object(segmentor, condition: str, noise_object: str) -> None:
    refiner = _refiner(segmentor, condition=condition)
    out = refiner.loss(_batch(h=30, w=34), noise_object=noise_object, generator=_gen())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert ((out["t"] >= 1) & (out["t"] <= T)).all()
    # against the uniform guess log K the untrained denoiser is near chance
    assert abs(out["loss"].item() - torch.log(torch.tensor(float(K))).item()) < 1.0


@pytest.mark.parametrize("kernel", ["absorbing", "mask_replace", "gaussian"])
def test_loss_and_refine_other_kernels(segmentor, kernel: str) -> None:
    refiner = _refiner(segmentor, kernel=kernel)
    assert torch.isfinite(refiner.loss(_batch(), generator=_gen())["loss"])
    steps = refiner.refine(_batch()["image"], steps=3, generator=_gen())
    assert [t for t, _ in steps] == make_step_grid(T, 3)
    assert all(logits.shape == (2, K, 8, 8) for _, logits in steps)


def test_precomputed_base_and_single_step(segmentor) -> None:
    refiner = _refiner(segmentor)
    batch = _batch()
    base = refiner.base_outputs(batch["image"])
    a = refiner.loss(batch, generator=_gen(3))
    b = refiner.loss(batch, generator=_gen(3), base=base)
    torch.testing.assert_close(a["loss"], b["loss"])
    assert refiner.loss(batch, single_step=True, generator=_gen())["t"].eq(T).all()


def test_noise_object_gt_fills_ignore_with_base_argmax(segmentor) -> None:
    refiner = _refiner(segmentor)
    image = _batch()["image"]
    _, logits = refiner.base_outputs(image)
    mask = torch.full((2, 32, 32), 255, dtype=torch.long)
    mask[:, :16] = 3
    obj = refiner._noise_object("gt", mask, logits, None, None)
    assert obj.shape == (2, 8, 8)
    assert (obj[:, :4] == 3).all()
    assert torch.equal(obj[:, 4:], logits.argmax(1)[:, 4:])


def test_all_ignored_batch_gives_zero_loss(segmentor) -> None:
    refiner = _refiner(segmentor)
    batch = _batch()
    batch["mask"].fill_(255)
    out = refiner.loss(batch, generator=_gen())
    assert out["loss"].item() == 0.0


def test_refine_deterministic_and_segmentor_runs_once(segmentor) -> None:
    refiner = _refiner(segmentor)
    image = _batch()["image"]
    calls = []
    handle = refiner.segmentor.register_forward_hook(lambda *args: calls.append(1))
    try:
        a = refiner.refine(image, steps=4, generator=_gen(1))
    finally:
        handle.remove()
    assert len(calls) == 1
    b = refiner.refine(image, steps=4, generator=_gen(1))
    c = refiner.refine(image, steps=4, generator=_gen(2))
    assert [t for t, _ in a] == make_step_grid(T, 4)
    for (_, la), (_, lb) in zip(a, b):
        assert torch.equal(la, lb) and not la.requires_grad
    assert not torch.equal(a[-1][1], c[-1][1])
    last = refiner.refine(image, steps=[9, 5, 2], generator=_gen(1), collect="last")
    assert len(last) == 1 and last[0][0] == 2


def test_single_step_equals_first_free_renoise_step_and_base_input(segmentor) -> None:
    refiner = _refiner(segmentor)
    image = _batch()["image"]
    fr = refiner.refine(image, sampler="free_renoise", steps=5, generator=_gen(4))
    ss = refiner.refine(image, sampler="single_step", steps=5, generator=_gen(4))
    assert len(ss) == 1 and ss[0][0] == fr[0][0] == T
    torch.testing.assert_close(ss[0][1], fr[0][1], rtol=0, atol=0)
    from_base = refiner.refine(base=refiner.base_outputs(image), steps=5, generator=_gen(4))
    for (_, x), (_, y) in zip(fr, from_base):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    strict = refiner.refine(image, sampler="strict", steps=5, generator=_gen(4))
    torch.testing.assert_close(strict[0][1], fr[0][1], rtol=0, atol=0)  # same x_T, same first prediction


def test_guidance_combines_with_the_null_condition(segmentor) -> None:
    refiner = _refiner(segmentor)
    image = _batch()["image"]
    ((t, guided_logits),) = refiner.refine(image, steps=1, generator=_gen(5), guidance=0.4)
    features, logits = refiner.base_outputs(image)
    x_T = refiner.kernel.prior_sample((2, 8, 8), generator=_gen(5))
    t_vec = torch.full((2,), T)
    with torch.no_grad():
        cond = refiner.denoise(x_T, t_vec, features)
        uncond = refiner.denoise(x_T, t_vec, torch.zeros_like(features))
    torch.testing.assert_close(guided_logits, 1.4 * cond - 0.4 * uncond, rtol=1e-5, atol=1e-5)


def test_build_refiner_from_config(segmentor) -> None:
    cfg = ExperimentConfig(
        diffusion=DiffusionConfig(kernel="absorbing", num_steps=20),
        unet=UNetConfig(width=16, dim_mults=(1, 1)),
        refiner=RefinerConfig(condition="mask", embed_dim=8),
    )
    refiner = build_refiner(cfg, segmentor)
    assert refiner.kernel.num_steps == 20 and refiner.kernel.num_states == K + 1
    assert refiner.denoiser.embedding.weight.shape == (K + 1, 8)
    assert refiner.denoiser.unet.in_channels == 8 + K and refiner.denoiser.unet.width == 16
    assert torch.isfinite(refiner.loss(_batch(), generator=_gen())["loss"])


def test_parameter_counts_at_release_scale() -> None:
    # denoiser = class embedding + UNet (+ its 1x1 classifier), 150 classes, 256 feature + 16 embedding channels
    seg = build_segmentor("segformer-b0", 150)
    kernel = Uniform(150, 100)
    counts = {}
    for width in (256, 128):
        unet = UNet(256 + 16, 150, width=width)
        counts[width] = count_parameters(MaskPriorRefiner(seg, kernel, unet, 150).denoiser)
    print(f"denoiser parameters: width 256 -> {counts[256]:,}, width 128 -> {counts[128]:,}")
    assert abs(counts[256] / 40.9e6 - 1) < 0.05
    assert abs(counts[128] / 11.4e6 - 1) < 0.05


def test_bad_inputs(segmentor) -> None:
    refiner = _refiner(segmentor)
    batch = _batch()
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, 5\)"):
        refiner.loss({**batch, "mask": batch["mask"].masked_fill(batch["mask"] == 0, 7)})
    with pytest.raises(ValueError, match="long tensor"):
        refiner.loss({**batch, "mask": batch["mask"].float()})
    with pytest.raises(ValueError, match="to match the image"):
        refiner.loss({**batch, "mask": batch["mask"][:, :16]})
    with pytest.raises(ValueError, match="batch has no 'mask'"):
        refiner.loss({"image": batch["image"]})
    with pytest.raises(ValueError, match="unknown noise_object 'noise'"):
        refiner.loss(batch, noise_object="noise")
    with pytest.raises(ValueError, match="exactly one of image"):
        refiner.refine()
    with pytest.raises(ValueError, match="unknown sampler"):
        refiner.refine(batch["image"], sampler="ddim")
    with pytest.raises(ValueError, match="unknown condition 'edges'"):
        _refiner(segmentor, condition="edges")
    kern = Uniform(K, T)
    with pytest.raises(ValueError, match=r"expected in_channels=80"):
        MaskPriorRefiner(segmentor, kern, UNet(17, K, width=16), K)
    with pytest.raises(ValueError, match="not frozen"):
        MaskPriorRefiner(build_segmentor("segformer-tiny", K, frozen=False), kern, UNet(80, K, width=16), K)
    with pytest.raises(ValueError, match="must agree"):
        MaskPriorRefiner(segmentor, Uniform(K + 1, T), UNet(80, K, width=16), K)


@pytest.mark.parametrize("kernel", ["uniform", "gaussian"])
def test_condition_projection_gives_the_denoisers_output(segmentor, kernel: str) -> None:
    # refine() projects the condition once per image and reuses it at every step: same logits as the full input.
    refiner = _refiner(segmentor, kernel=kernel).eval()
    features, logits = refiner.base_outputs(_batch()["image"])
    x_t = refiner.kernel.prior_sample((2, 8, 8), generator=_gen(3))
    t_vec = torch.full((2,), T)
    with torch.no_grad():
        full = refiner.denoise(x_t, t_vec, features)
        split = refiner.denoise(x_t, t_vec, features, refiner.denoiser.project_condition(features))
    torch.testing.assert_close(split, full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="condition must have shape"):
        refiner.denoiser.project_condition(features[:, :-1])  # a wrong slice of weights would pass silently


@pytest.mark.parametrize("sampler", ["free_renoise", "strict"])
def test_the_trajectory_figure_shows_what_refine_computes(segmentor, sampler: str) -> None:
    """``artifacts.trace`` consumes the sampler's loop: its x0 logits are ``refine``'s, step for step."""
    from diffseg.artifacts import trace

    refiner = _refiner(segmentor).eval()
    image = _batch()["image"]
    features, logits = refiner.base_outputs(image)
    cond = refiner.make_condition(features, logits)
    grid = make_step_grid(T, 4)
    xs, traced = trace(refiner, cond, (2, *logits.shape[-2:]), grid, sampler, _gen(5))
    refined = refiner.refine(image, sampler=sampler, steps=grid, generator=_gen(5))
    assert len(xs) == len(traced) == len(refined) == len(grid)
    for a, (_, b) in zip(traced, refined):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("noise_object", ["gt", "first"])
def test_per_item_generators_make_each_items_draws_its_own(segmentor, noise_object: str) -> None:
    """With one generator per item, two half batches draw what the whole batch draws (as DDP ranks do)."""
    refiner = _refiner(segmentor)
    batch = _batch(b=4)

    def loss(items: slice) -> dict[str, torch.Tensor]:
        part = {k: v[items] for k, v in batch.items()}
        gens = [_gen(10 + i) for i in range(4)][items]
        return refiner.loss(part, noise_object=noise_object, generator=gens)

    whole, first, second = loss(slice(0, 4)), loss(slice(0, 2)), loss(slice(2, 4))
    assert torch.equal(whole["t"], torch.cat([first["t"], second["t"]]))
    assert whole["valid"] == first["valid"] + second["valid"]
    torch.testing.assert_close(whole["ce_sum"], first["ce_sum"] + second["ce_sum"], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        refiner.loss(batch, generator=[_gen(i) for i in range(3)])
