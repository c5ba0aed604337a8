"""``clinseg compress MODEL -o OUT``: the OAR thesis's compression of a stage-1 U-Net (chapter 4).

Channel pruning in steps to ``--prune`` (default 20 %), channel removal, threshold pruning to ``--threshold``
(0.02), ``--levels`` (31) uniform quantisation with STE fine-tuning; ``--steps`` fine-tuning iterations after
each step on head & neck phantoms (0: no fine-tuning). Writes the packed model (5 bits a kernel weight) and
prints the size of every stage; ``--onnx-int8`` also writes the channel-pruned model as INT8 ONNX.
``bench/oar_compression.py`` adds Dice, memory and time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

ARCHITECTURE = "oar_unet:OARUNet"


def register(subparsers) -> None:
    p = subparsers.add_parser("compress", help="prune and quantise an OAR stage-1 U-Net (thesis chapter 4)",
                              description=__doc__.split("\n\n", 1)[1])
    p.add_argument("model", help="OAR U-Net weights (.safetensors; an OARCascade file's 'stage1.' part is used)")
    p.add_argument("-o", "--out", required=True, help="packed output (.safetensors)")
    p.add_argument("--prune", type=float, default=0.20, help="final channel-pruning fraction (default 0.20)")
    p.add_argument("--prune-step", type=float, default=0.05, help="fraction added per pruning step (default 0.05)")
    p.add_argument("--threshold", type=float, default=0.02, help="weight threshold (default 0.02; 0: skip)")
    p.add_argument("--levels", type=int, default=31, help="quantisation levels (default 31)")
    p.add_argument("--absolute", action="store_true",
                   help="use the thesis's absolute grid +-0.45 and threshold (default: each layer's own scale)")
    p.add_argument("--steps", type=int, default=0, help="fine-tuning steps after each step (thesis: 2000)")
    p.add_argument("--phantoms", type=int, default=8, help="head & neck phantoms to fine-tune on (default 8)")
    p.add_argument("--grid", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"),
                   help="fine-tuning grid (default 32 64 64; the thesis: 72 208 208)")
    p.add_argument("--onnx-int8", type=Path, help="also write the channel-pruned model as INT8 ONNX here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def load_oar_unet(path: Path):
    """An ``OARUNet`` from a state-dict file (widths, input/output channels and norm read from the tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..nets.oar_unet import OARUNet, channels_from_state_dict

    if not path.is_file():
        raise InputError(str(path), "not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InputError(str(path), f"not a safetensors file ({error})") from None
    if any(k.startswith("stage1.") for k in state):
        state = {k.removeprefix("stage1."): v for k, v in state.items() if k.startswith("stage1.")}
    try:
        model = OARUNet(in_channels=int(state["convs.conv1.weight"].shape[1]),
                        out_channels=int(state["convs.conv15.weight"].shape[0]),
                        norm="batch" if any(k.startswith("norms.") for k in state) else "none",
                        channels=channels_from_state_dict(state))
        model.load_state_dict(state)
    except (KeyError, RuntimeError) as error:
        raise InputError(str(path), f"not OAR U-Net weights ({str(error).splitlines()[0]})") from None
    return model.eval()


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(str(path), "exists (choose another name or pass --overwrite)")


def run(args: argparse.Namespace) -> int:
    import itertools

    import torch

    from ..compress import CompressionPlan, compress, model_size_report, save_packed
    from ..nets.oar_unet import OARUNet, channels_from_state_dict

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    if args.onnx_int8 is not None:
        from ..compress.onnx_int8 import require_onnxruntime

        require_onnxruntime()
        _refuse_existing(args.onnx_int8, args.overwrite)
    if not 0 <= args.prune < 1 or args.prune_step <= 0 or args.threshold < 0 or not 2 <= args.levels <= 256:
        raise InputError("options", "need 0 <= --prune < 1, --prune-step > 0, --threshold >= 0, 2 <= --levels <= 256")
    model = load_oar_unet(Path(args.model))
    kwargs = {"in_channels": model.convs["conv1"].in_channels, "out_channels": model.convs["conv15"].out_channels,
              "norm": model.norm}

    def build(state):
        return OARUNet(**kwargs, channels=channels_from_state_dict(state))

    from ..train.oar_losses import focal_loss

    cases = []
    if args.steps > 0 or args.onnx_int8 is not None:  # INT8 calibration needs real inputs too
        from ..phantoms.oar_stage1 import stage1_cases

        cases = stage1_cases(range(1, max(args.phantoms, 1) + 1), tuple(args.grid))
    # Cycle through the phantoms, one a step (the thesis: batch 1).
    batches = ((image[None], labels[None]) for image, labels in itertools.cycle(cases))
    plan = CompressionPlan(prune_fraction=args.prune, prune_step=args.prune_step, threshold=args.threshold,
                           levels=args.levels, steps=args.steps, relative=not args.absolute)
    stages = compress(model, build, batches, focal_loss, plan, log=print)
    final = stages[-1]
    metadata = {"architecture": ARCHITECTURE, **kwargs, "channels": final.model.layer_channels(),
                "plan": {"prune": args.prune, "threshold": args.threshold, "levels": args.levels,
                         "relative": not args.absolute, "steps": args.steps}}
    size = save_packed(final.model, out, final.quantiser, metadata=metadata)
    print(f"{'stage':24} {'params':>10} {'kernels':>10} {'float32 MiB':>11} {'sparsity':>8}")
    for stage in stages:
        r = model_size_report(stage.model)
        print(f"{stage.name:24} {r.params:>10,} {r.weights_only:>10,} {r.file_bytes / 2**20:>11.2f} {r.sparsity:>8.3f}")
    first = model_size_report(stages[0].model).file_bytes
    print(f"wrote {out}: {size / 2**20:.2f} MiB ({first / size:.1f}x smaller than the float32 original)")
    if args.onnx_int8 is not None:
        from ..compress.onnx_int8 import export_onnx, quantise_int8

        pruned = stages[1].model if len(stages) > 1 else stages[0].model
        example = torch.zeros(1, kwargs["in_channels"], *args.grid)
        tmp = args.onnx_int8.with_name(args.onnx_int8.name + ".float.onnx")
        try:
            export_onnx(pruned, example, tmp)
            quantise_int8(tmp, args.onnx_int8, [image[None].numpy() for image, _ in cases[:4]])
        finally:
            tmp.unlink(missing_ok=True)
        print(f"wrote {args.onnx_int8}: {args.onnx_int8.stat().st_size / 2**20:.2f} MiB (INT8, ONNX Runtime)")
    return 0
