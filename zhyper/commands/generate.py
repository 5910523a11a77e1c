"""``zhyper generate``: turn a description into a PEFT LoRA adapter (or a raw zhyper modulation).

--format peft (default): a standard PEFT folder (adapter_config.json + adapter_model.safetensors)
that ``PeftModel.from_pretrained(base, DIR)``, vLLM or any LoRA server loads.
--format zhyper: modulation.safetensors holding what the hypernetwork emitted for the
description (``modulation`` for diag/square, ``modulation.<type>`` for full), plus description.txt.

--out must not be (or lie inside) the --checkpoint folder or a local --base folder: the command
never writes into a folder it reads from. Other files already in --out are kept; a modulation or
trained tensor with a NaN/inf is refused before anything is written.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="zhyper checkpoint folder (save_pretrained)")
    parser.add_argument("--description", required=True, help="the context description, e.g. 'Answer like a German.'")
    parser.add_argument("--out", required=True,
                        help="output folder (its files written atomically; other files there are kept)")
    parser.add_argument("--format", choices=("peft", "zhyper"), default="peft")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zhyper.io import same_folder

    for flag, source in (("--checkpoint", args.checkpoint), ("--base", args.base)):
        if source and Path(source).is_dir() and same_folder(source, args.out):
            raise ValueError(f"--out {args.out} is the {flag} folder {source} (or inside it): zhyper generate never "
                             f"writes into a folder it reads from; choose another --out")

    from zhyper.model import ZhyperModel

    model = ZhyperModel.from_pretrained(args.checkpoint, base_model=args.base).eval()
    if args.format == "peft":
        model.modulation_for([args.description], check_finite=True)  # names the description and the checkpoint
        out = model.export_peft(args.description, args.out)
    else:
        from safetensors.torch import save_file

        from zhyper.io import atomic_folder
        from zhyper.pretrained import check_finite, check_output_folder

        check_output_folder(model, Path(args.out), "zhyper generate")
        modulation = model.modulation_for([args.description], check_finite=True)
        tensors = ({"modulation": modulation[0]} if not isinstance(modulation, dict)
                   else {f"modulation.{t}": m[0] for t, m in modulation.items()})
        check_finite(tensors, f"zhyper generate: the hypernetwork's output for {args.description!r}")
        with atomic_folder(args.out) as tmp:
            save_file({k: v.float().cpu().contiguous() for k, v in tensors.items()},
                      str(tmp / "modulation.safetensors"))
            (tmp / "description.txt").write_text(args.description + "\n")
        out = Path(args.out)
    print(out)
    return 0
