"""Validation losses and paired gaps of a finished checkpoint, pooled and per context, in one process.

The same evaluation a run does at its end (``zhyper.evaluation.losses.validation_metrics``: each
validation example with its context's held-out description against another context's, the same
rows), recomputed from the checkpoint and the run's config. For runs that finished before the
per-context gaps were reported (a run now writes them into eval.md itself).

Run:  python tools/context_gaps.py --checkpoint runs/askx-china-africa/final \\
          --config launch/configs/askx-china-africa.yaml [overrides ...]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", required=True, help="the run's config (its data section and eval sizes)")
    parser.add_argument("overrides", nargs="*", help="key=value, as given to the run")
    args = parser.parse_args()

    import torch

    from zhyper import ZhyperModel
    from zhyper.data.chat import ChatCollator
    from zhyper.evaluation.losses import validation_metrics
    from zhyper.evaluation.report import gap_lines
    from zhyper.training.config import load_config
    from zhyper.training.data import load_data

    cfg = load_config(args.config, args.overrides)
    model = ZhyperModel.from_pretrained(args.checkpoint).eval()
    collator = ChatCollator(model.tokenizer, max_length=cfg.data.max_length,
                            description_in_prompt=cfg.data.description_in_prompt)

    def forward(ids, mask, emb):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, context_embeddings=emb).logits

    metrics = validation_metrics(forward, collator, model.embed, load_data(cfg), 0, 1, cfg.eval.max_examples,
                                 cfg.eval.batch_size)
    print(json.dumps(metrics, indent=1))
    print("\n".join(gap_lines(metrics)))


if __name__ == "__main__":
    main()
