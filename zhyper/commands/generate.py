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

from zhyper.commands._common import add_description_arguments, add_model_arguments, description_entry


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_description_arguments(parser)
    parser.add_argument("--out", required=True,
                        help="output folder (its files written atomically; other files there are kept)")
    parser.add_argument("--format", choices=("peft", "zhyper"), default="peft")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zhyper.io import same_folder

    for flag, source in (("--checkpoint", args.checkpoint), ("--base", args.base)):
        if source and Path(source).is_dir() and same_folder(source, args.out):
            raise ValueError(f"--out {args.out} is the {flag} folder {source} (or inside it): zhyper generate never "
                             f"writes into a folder it reads from; choose another --out")

    from zhyper.model import ZhyperModel

    entry, weights = description_entry(args)
    model = ZhyperModel.from_pretrained(args.checkpoint, base_model=args.base).eval()
    # check_finite: a NaN/inf modulation is refused, naming the description and the checkpoint
    modulation = model.modulation([entry], None if weights is None else [weights], args.combine, check_finite=True)
    if args.format == "peft":
        out = model.export_peft(entry, args.out, weights, args.combine)
    else:
        from safetensors.torch import save_file

        from zhyper.io import atomic_folder
        from zhyper.pretrained import check_finite, check_output_folder

        check_output_folder(model, Path(args.out), "zhyper generate")
        tensors = ({"modulation": modulation[0]} if not isinstance(modulation, dict)
                   else {f"modulation.{t}": m[0] for t, m in modulation.items()})
        check_finite(tensors, f"zhyper generate: the hypernetwork's output for {entry!r}")
        with atomic_folder(args.out) as tmp:
            save_file({k: v.float().cpu().contiguous() for k, v in tensors.items()},
                      str(tmp / "modulation.safetensors"))
            (tmp / "description.txt").write_text("\n".join(args.description) + "\n")
        out = Path(args.out)
    print(out)
    return 0
