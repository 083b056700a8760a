"""The release's checkpoints -> diffseg run folders (diffseg.release_checkpoint).

The release's names and shapes are test data (tests/data/release_ade20k_segformer_b2_head.json, read from its
code); the state dicts here are random tensors of exactly those names and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffseg.config import ExperimentConfig, identity_dict, load_config
from diffseg.models.denoiser import Denoiser
from diffseg.models.unet import UNet
from diffseg.release_checkpoint import (
    RELEASE_MODELS,
    _permute_init_conv,
    convert_refiner_state,
    convert_release_checkpoint,
    split_release_state,
)

DATA = json.loads((Path(__file__).parent / "data" / "release_ade20k_segformer_b2_head.json").read_text())
K, T = DATA["num_classes"], DATA["num_steps"]
SCHEDULE = ("log_cumprod_at", "log_cumprod_bt", "log_at", "log_bt")


def release_schedule(num_steps: int, num_classes: int) -> dict[str, torch.Tensor]:
    """The head's buffers as the release computes them (its alpha_schedule_torch: float32, abar linear from
    0.99999 at its first level to 0.000009 at its last, then a trailing 1)."""
    att = torch.arange(0, num_steps) / (num_steps - 1) * (0.000009 - 0.99999) + 0.99999
    at = att / torch.cat((torch.ones(1), att[:-1]))
    att = torch.cat((att, torch.ones(1)))
    return {
        "log_cumprod_at": att.log(),
        "log_cumprod_bt": ((1 - att) / num_classes).log(),
        "log_at": at.log(),
        "log_bt": ((1 - at) / num_classes).log(),
    }


def release_head(seed: int = 0, num_steps: int = T) -> dict[str, torch.Tensor]:
    """``decode_head.*`` of a release file: random tensors with the recorded names and shapes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in DATA["decode_head"].items():
        if key in SCHEDULE:
            continue
        if key.endswith("num_batches_tracked"):
            out[f"decode_head.{key}"] = torch.tensor(1000)
        else:
            out[f"decode_head.{key}"] = torch.randn(shape, generator=g) * 0.05
    out.update({f"decode_head.{k}": v for k, v in release_schedule(num_steps, K).items()})
    return out


def release_denoiser(num_steps: int = T) -> Denoiser:
    """diffseg's denoiser as the release model's config builds it (without the 27M-parameter base)."""
    m = RELEASE_MODELS["ade20k-b2-multistep"]
    unet = UNet(
        in_channels=16 + 256,
        out_channels=K,
        width=m.width,
        weight_standardized=True,
        attention_scale_v=True,
        head_channels=256,
    )
    return Denoiser(unet, K, 16, False, None, time_from=num_steps)


def refiner_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return split_release_state(state, Path("release.pth"))[1]


def test_every_release_refiner_key_maps_one_to_one_and_loads_strictly():
    denoiser = release_denoiser()
    own = denoiser.state_dict()
    release = refiner_part(release_head())
    converted = convert_refiner_state(release, own, Path("release.pth"))
    assert (
        len(release) == len(own) == len(converted)
    )  # one to one: no release key dropped, no diffseg key left
    assert set(converted) == set(own)
    denoiser.load_state_dict(converted, strict=True)
    assert torch.equal(denoiser.embedding.weight, release["decode_head.embed.weight"])
    assert torch.equal(denoiser.unet.head[1].weight, release["decode_head.conv_seg_new.weight"])
    mid = release["decode_head.unet.mid_attn.fn.fn.to_qkv.weight"]
    assert torch.equal(denoiser.unet.mid_attn.to_qkv.weight, mid)


def test_init_conv_permutation_gives_the_release_first_layer_output():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 20 + 4, 7, 7, generator=g, dtype=torch.float64)
    cond = torch.randn(2, 20, 9, 9, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 4, 9, 9, generator=g, dtype=torch.float64)
    release = F.conv2d(
        torch.cat((cond, emb), dim=1), w, padding=3
    )  # the release: (condition, mask embedding)
    ours = F.conv2d(torch.cat((emb, cond), dim=1), _permute_init_conv(w, 4), padding=3)
    torch.testing.assert_close(ours, release)


def test_the_denoiser_feeds_the_release_index_T_minus_t_to_the_time_embedding():
    seen = []

    def record(_module, args):
        seen.append(args[0].clone())

    for time_from, expected in ((None, [7, 1]), (20, [13, 19])):
        unet = UNet(16 + 8, 5, width=16, dim_mults=(1,), attention=False)
        unet.time_mlp.register_forward_pre_hook(record)
        denoiser = Denoiser(unet, 5, 16, False, None, time_from=time_from)
        denoiser(torch.zeros(2, 4, 4, dtype=torch.long), torch.tensor([7, 1]), torch.zeros(2, 8, 4, 4))
        assert seen.pop().tolist() == expected


def test_release_time_at_its_default_stays_out_of_the_run_identity():
    assert "release_time" not in identity_dict(ExperimentConfig())["refiner"]
    cfg = load_config(None, ["refiner.release_time=true"])
    assert identity_dict(cfg)["refiner"]["release_time"] is True


def test_a_missing_or_an_unknown_release_key_is_one_line_naming_the_file():
    own = release_denoiser().state_dict()
    release = refiner_part(release_head())
    del release["decode_head.unet.downs.1.2.fn.norm.g"]
    with pytest.raises(ValueError, match=r"release\.pth.*missing keys.*unet\.downs\.1\.2\.norm\.g") as e:
        convert_refiner_state(release, own, Path("release.pth"))
    assert "\n" not in str(e.value)
    state = release_head()
    state["decode_head.unet.extra.weight"] = torch.zeros(1)
    state["decode_head.conv_seg.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"release\.pth: 1 keys left unmapped \(e\.g\. decode_head\.conv_seg"
    ):
        split_release_state(state, Path("release.pth"))
    with pytest.raises(ValueError, match="no diffseg module of that name.*decode_head.unet.extra.weight"):
        convert_refiner_state(
            refiner_part({**release_head(), "decode_head.unet.extra.weight": torch.zeros(1)}), own, Path("x")
        )


def test_ema_copies_are_dropped_only_when_they_shadow_a_plain_key():
    state = release_head()
    state["ema_decode_head_unet_init_conv_weight"] = torch.zeros(1)
    assert "ema_decode_head_unet_init_conv_weight" not in refiner_part(state)
    state["ema_decode_head_unet_nothing"] = torch.zeros(1)
    with pytest.raises(ValueError, match="left unmapped.*ema_decode_head_unet_nothing"):
        refiner_part(state)


def test_a_plain_segmentor_file_is_refused_naming_the_file(tmp_path):
    plain = tmp_path / "segformer_mit-b2_512x512_160k_ade20k.pth"
    torch.save(
        {"state_dict": {"decode_head.conv_seg.weight": torch.zeros(150, 256, 1, 1)}, "meta": {}}, plain
    )
    with pytest.raises(
        ValueError, match=r"segformer_mit-b2_512x512_160k_ade20k\.pth is not a DDPS release"
    ) as e:
        convert_release_checkpoint(plain, "ade20k-b2-multistep", tmp_path / "run", plain)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def _write_release_file(path: Path, num_steps: int = T) -> None:
    """A whole release file: mmseg MiT-B2 backbone + the recorded head, as mmcv saves it."""
    from diffseg.segmentors import build_segmentor, to_mmseg_state_dict

    base = to_mmseg_state_dict(build_segmentor("segformer-b2-mmseg", K))
    head = release_head(num_steps=num_steps)
    base_head = {k for k in base if k.startswith("decode_head.")} - {
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
    }
    # the release's frozen base head is mmseg's SegformerHead: same names and shapes as diffseg's mmseg B2
    assert {k: list(base[k].shape) for k in base_head} == {
        k: list(v.shape) for k, v in head.items() if k.startswith(("decode_head.convs", "decode_head.fusion"))
    }
    state = {k: v for k, v in base.items() if k.startswith("backbone.")} | head
    torch.save({"state_dict": state, "meta": {"iter": 144000, "CLASSES": ["other"] * K}}, path)


@pytest.mark.slow
def test_a_release_file_becomes_a_run_folder_that_loads(tmp_path):
    from diffseg.engines.checkpoints import check_signature, load_latest_checkpoint
    from diffseg.engines.runner import build_models

    release, zoo = tmp_path / "best_mIoU_iter_144000.pth", tmp_path / "zoo.pth"
    _write_release_file(release)
    classifier = {
        "decode_head.conv_seg.weight": torch.randn(150, 256, 1, 1),
        "decode_head.conv_seg.bias": torch.randn(150),
    }
    torch.save({"state_dict": classifier, "meta": {}}, zoo)
    out = convert_release_checkpoint(release, "ade20k-b2-multistep", tmp_path / "run", zoo)

    cfg = load_config(out / "config.yaml")
    assert cfg.refiner.release_time and cfg.diffusion.num_steps == T and cfg.eval.grid == "release"
    segmentor, refiner = build_models(cfg, torch.device("cpu"), str(out / "base.safetensors"), K)
    state, path = load_latest_checkpoint(out / "checkpoints")
    check_signature(state["model_signature"], refiner, path)
    refiner.denoiser.load_state_dict(state["denoiser"], strict=True)
    head = torch.load(release, weights_only=True)["state_dict"]
    torch.testing.assert_close(
        refiner.denoiser.unet.final_block.block1.conv.weight,
        head["decode_head.unet.final_res_block.block1.proj.weight"],
    )
    torch.testing.assert_close(
        segmentor.decode_head.fusion_conv.bn.running_var, head["decode_head.fusion_conv.bn.running_var"]
    )
    torch.testing.assert_close(
        segmentor.decode_head.conv_seg.bias[1:], classifier["decode_head.conv_seg.bias"]
    )
    with pytest.raises(ValueError, match="already holds a run"):
        convert_release_checkpoint(release, "ade20k-b2-multistep", out, zoo)
    with pytest.raises(ValueError, match=r"trained with T = 100 .* T = 20"):
        convert_release_checkpoint(release, "ade20k-b2-multistep-t20", tmp_path / "run20", zoo)
    assert not (tmp_path / "run20" / "config.yaml").exists()


def test_the_cli_refuses_a_plain_segmentor_file_in_one_line(tmp_path, capsys):
    from diffseg.cli import main

    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "meta": {}}, plain)
    argv = ["convert-release", str(plain), "--config", "ade20k-b2-multistep", "--base-classifier", str(plain)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffseg convert-release: error:") and "plain.pth is not a DDPS release" in err
    assert "\n" not in err


@pytest.mark.slow
def test_diffseg_eval_runs_on_a_converted_folder(tmp_path, capsys):
    from diffseg.cli import main
    from diffseg.config import apply_overrides, save_config
    from diffseg.data import ensure_synthetic

    release, zoo = tmp_path / "release.pth", tmp_path / "zoo.pth"
    _write_release_file(release)
    classifier = {
        "decode_head.conv_seg.weight": torch.randn(150, 256, 1, 1),
        "decode_head.conv_seg.bias": torch.zeros(150),
    }
    torch.save({"state_dict": classifier}, zoo)
    out = tmp_path / "run"
    argv = ["convert-release", str(release), "--config", "ade20k-b2-multistep", "--base-classifier", str(zoo)]
    assert main([*argv, "--out", str(out), "--data-root", str(tmp_path / "ade")]) == 0
    # a one-image synthetic ADE20K (151-class mode) stands in for the real validation set
    small = ["data.synthetic=true", "data.synth_n_train=1", "data.synth_n_val=1", "data.synth_size=[64,64]"]
    cfg = apply_overrides(load_config(out / "config.yaml"), small)
    save_config(cfg, out / "config.yaml")
    ensure_synthetic(cfg.data)
    assert main(["eval", "--run", str(out), "--steps", "2"]) == 0
    res = json.loads((out / "eval_val_free_renoise_2.json").read_text())
    assert res["t"] == [100, 50, 1]  # the release's grid: its steps 0, 50, 99
