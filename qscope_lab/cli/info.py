"""``qscope-lab info``: model and SAE facts, and one layer's SAE described."""

from __future__ import annotations

from .options import LAYER, add_lab_options, check_layers, command, lab_from_args, layer_from_args, print_frame


def register(sub) -> None:
    p = command(sub, "info", "model and SAE facts", """
Model and SAE facts (architecture, layers, hidden size, SAE suite, width, k) and one layer's SAE described
(decoder norms, file).""", """
  qscope-lab info""")
    add_lab_options(p, needs_saes=False)
    p.add_argument("--layer", type=LAYER, help="describe this layer's SAE (default: the middle layer)")
    p.set_defaults(func=run)


def run(args) -> None:
    import pandas as pd

    check_layers(args, layer=[args.layer])
    lab = lab_from_args(args)
    frame = lab.info()
    if lab.saes is not None:
        layer = layer_from_args(args, lab)
        sae = lab.sae(layer)
        norms = sae.decoder_norms
        extra = {f"layer {layer} SAE": repr(sae), "decoder norm min/mean/max":
                 f"{norms.min():.4f} / {norms.mean():.4f} / {norms.max():.4f}", "source": sae.meta.get("path")}
        frame = pd.concat([frame, pd.DataFrame({"field": list(extra), "value": [str(v) for v in extra.values()]})])
    print_frame(frame, None)
