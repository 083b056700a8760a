"""Reference outputs of mmsegmentation 0.30's own SegFormer-B0 and DeepLabV3+ R50-D8 / MobileNetV2-D8, for
tests/test_mmseg_parity.py.

Run with the parity venv's python (``make parity`` builds it: mmcv 1.7.2 without compiled ops, mmseg 0.30.0,
torch 2.13 CPU), never with the project's venv:

    build/parity-venv/bin/python tests/parity/mmseg_reference.py build/parity

Per model it writes ``<model>.pth``, an mmseg checkpoint (``{"state_dict", "meta"}``, as mmcv saves zoo files)
of seeded random weights, and ``<model>_io.pt``, a list of ``{"input", "features", "logits"}`` for fixed seeded
inputs: features are what ``decode_head.cls_seg`` receives (the input of ``conv_seg``, dropout is off in eval),
logits the decode head's output at 1/4 resolution. BN running statistics and all norm affine parameters are
randomised too, so that a BN or LayerNorm in the wrong place (or with the wrong eps) cannot hide as an identity.
MobileNetV2's BN statistics are calibrated on a seeded batch instead (see :func:`calibrate`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import mmseg
import torch
from mmseg.models import build_segmentor
from torch import nn

# The configs of mmseg 0.30 (configs/_base_/models/segformer_mit-b0.py with
# configs/segformer/segformer_mit-b0_512x512_160k_ade20k.py, and configs/_base_/models/deeplabv3plus_r50-d8.py
# with configs/deeplabv3plus/deeplabv3plus_r50-d8_512x512_160k_ade20k.py, and the latter overridden by
# configs/mobilenet_v2/deeplabv3plus_m-v2-d8_512x512_160k_ade20k.py), ADE20K's 150 classes, SyncBN -> BN
# (CPU, one process; identical in eval), no pretrained download.
NORM = dict(type="BN", requires_grad=True)
CONFIGS = {
    "segformer_mit-b0": dict(
        type="EncoderDecoder",
        pretrained=None,
        backbone=dict(
            type="MixVisionTransformer",
            in_channels=3,
            embed_dims=32,
            num_stages=4,
            num_layers=[2, 2, 2, 2],
            num_heads=[1, 2, 5, 8],
            patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1],
            out_indices=(0, 1, 2, 3),
            mlp_ratio=4,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.1,
        ),
        decode_head=dict(
            type="SegformerHead",
            in_channels=[32, 64, 160, 256],
            in_index=[0, 1, 2, 3],
            channels=256,
            dropout_ratio=0.1,
            num_classes=150,
            norm_cfg=NORM,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    ),
    "deeplabv3plus_r50-d8": dict(
        type="EncoderDecoder",
        pretrained=None,
        backbone=dict(
            type="ResNetV1c",
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4),
            strides=(1, 2, 1, 1),
            norm_cfg=NORM,
            norm_eval=False,
            style="pytorch",
            contract_dilation=True,
        ),
        decode_head=dict(
            type="DepthwiseSeparableASPPHead",
            in_channels=2048,
            in_index=3,
            channels=512,
            dilations=(1, 12, 24, 36),
            c1_in_channels=256,
            c1_channels=48,
            dropout_ratio=0.1,
            num_classes=150,
            norm_cfg=NORM,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        ),
        # kept so the checkpoint carries auxiliary_head.* keys like the zoo's, which the converter must drop
        auxiliary_head=dict(
            type="FCNHead",
            in_channels=1024,
            in_index=2,
            channels=256,
            num_convs=1,
            concat_input=False,
            dropout_ratio=0.1,
            num_classes=150,
            norm_cfg=NORM,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    ),
}
# configs/mobilenet_v2/deeplabv3plus_m-v2-d8_512x512_160k_ade20k.py: the backbone replaced (_delete_=True), the
# heads' input channels set to MobileNetV2's (decode in_index 3 -> layer7, c1 -> layer2, auxiliary in_index 2 ->
# layer5); act_cfg stays MobileNetV2's default ReLU6
CONFIGS["deeplabv3plus_m-v2-d8"] = copy.deepcopy(CONFIGS["deeplabv3plus_r50-d8"])
CONFIGS["deeplabv3plus_m-v2-d8"]["backbone"] = dict(
    type="MobileNetV2",
    widen_factor=1.0,
    strides=(1, 2, 2, 1, 1, 1, 1),
    dilations=(1, 1, 1, 2, 2, 4, 4),
    out_indices=(1, 2, 4, 6),
    norm_cfg=NORM,
)
CONFIGS["deeplabv3plus_m-v2-d8"]["decode_head"].update(in_channels=320, c1_in_channels=24)
CONFIGS["deeplabv3plus_m-v2-d8"]["auxiliary_head"].update(in_channels=96)
# (batch, height, width): a square input and an odd, non-square one (ceil(H/4) rounding, bilinear resizes)
INPUT_SHAPES = ((1, 64, 64), (2, 65, 49))
SEED = 20240514
# model -> gain of its backbone's BN weights before calibrate() (models not listed are not calibrated)
CALIBRATED = {"deeplabv3plus_m-v2-d8": 2.0}


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """mmseg's own init, then norm layers drawn away from the identity (affine and BN running statistics)."""
    model.init_weights()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
            shape = module.weight.shape
            module.weight.data = torch.empty(shape).uniform_(0.5, 1.5, generator=generator)
            module.bias.data = 0.1 * torch.randn(shape, generator=generator)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean = 0.1 * torch.randn(module.running_mean.shape, generator=generator)
            module.running_var = torch.empty(module.running_var.shape).uniform_(0.5, 1.5, generator=generator)
    # conv_seg is initialised with std 0.01 and a zero bias; a visible bias checks it is loaded too
    head = model.decode_head.conv_seg
    head.bias.data = 0.1 * torch.randn(head.bias.shape, generator=generator)


def calibrate(model: nn.Module, gain: float, generator: torch.Generator) -> None:
    """Backbone BN weights times ``gain``, then BN running statistics set to a seeded batch's (B=4, 64x64).

    Why: mmseg's MobileNetV2 init (mmcv Kaiming, mode fan_out) takes a depthwise conv's fan-out as if it were
    dense, so its weights come out ~sqrt(hidden) too small; with running statistics drawn near (0, 1) the signal
    fades block by block, no ReLU6 ever clamps and the head barely sees the backbone: ReLU instead of ReLU6 gave
    a relative error of 0 and dilating every block of a layer (mmseg dilates the first only) 2e-5. Calibrated at
    gain 2 every block runs at a scale where ReLU6 clips ~0.5% of its inputs, and those two mistakes give
    1e-1 and 3e-2, far above the test's 1e-5.
    """
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.weight.data *= gain
        module.momentum = 1.0  # running statistics := this batch's
    model.backbone.train()
    with torch.no_grad():
        model.backbone(torch.randn(4, 3, 64, 64, generator=generator))
    for module, momentum in zip(norms, momenta, strict=True):
        module.momentum = momentum


def reference(name: str, out: Path) -> None:
    # init_weights logs every parameter's initialiser at INFO through the "mmcv" logger
    logging.getLogger("mmcv").setLevel(logging.WARNING)
    torch.manual_seed(SEED)  # mmseg's init_weights draws from the global generator
    model = build_segmentor(copy.deepcopy(CONFIGS[name]))
    draws = torch.Generator().manual_seed(SEED)
    randomise(model, draws)
    if name in CALIBRATED:
        calibrate(model, CALIBRATED[name], draws)
    model.eval()
    captured: list[torch.Tensor] = []
    model.decode_head.conv_seg.register_forward_pre_hook(
        lambda module, args: captured.append(args[0].clone())
    )
    generator = torch.Generator().manual_seed(SEED + 1)
    records = []
    with torch.no_grad():
        for batch, height, width in INPUT_SHAPES:
            image = torch.randn(batch, 3, height, width, generator=generator)
            captured.clear()
            logits = model.decode_head(model.extract_feat(image))
            records.append({"input": image, "features": captured[0], "logits": logits})
            print(
                f"{name} {tuple(image.shape)} -> features {tuple(captured[0].shape)} logits {tuple(logits.shape)}"
            )
    meta = {
        "mmseg_version": mmseg.__version__,
        "config": repr(CONFIGS[name]),
        "CLASSES": [f"class{i}" for i in range(150)],
        "seed": SEED,
    }
    torch.save({"state_dict": model.state_dict(), "meta": meta}, out / f"{name}.pth")
    torch.save(records, out / f"{name}_io.pt")
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head."))
    print(f"{name}: {params} parameters without the auxiliary head")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the checkpoints and reference outputs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in CONFIGS:
        reference(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
