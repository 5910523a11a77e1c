"""``zhyper generate``: turn a description into a PEFT LoRA adapter (or a raw zhyper modulation).

--format peft (default): a standard PEFT folder (adapter_config.json + adapter_model.safetensors)
that ``PeftModel.from_pretrained(base, DIR)``, vLLM or any LoRA server loads.
--format zhyper: modulation.safetensors holding what the hypernetwork emitted for the
description (``modulation`` for diag/square, ``modulation.<type>`` for full), plus description.txt.

--out must not be (or lie inside) the --checkpoint folder or a local --base folder: the command
never writes into a folder it reads from. Other files already in --out are kept; a modulation or
trained tensor with a NaN/inf is refused before anything is written. Both formats record what they
export in zhyper_export.json (with the SHA-256 of the weights): the same description may be written
in both formats into one --out, another description only replaces an export of the same format (a
peft adapter of one description beside a description.txt of another is refused).
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
        from zhyper.export import export_modulation

        out = export_modulation(model, entry, args.out, modulation, weights, args.combine,
                                text="\n".join(args.description), action="zhyper generate")
    print(out)
    return 0
