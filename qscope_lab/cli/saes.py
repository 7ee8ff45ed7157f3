"""``qscope-lab saes``: the 14 Qwen-Scope SAE groups as a table (static data: no torch, no model)."""

from __future__ import annotations

from .options import add_out_option, print_frame


def register(sub) -> None:
    p = sub.add_parser("saes", help="the Qwen-Scope SAE groups as a table")
    p.add_argument("--backbone", help="only the groups of this backbone, e.g. Qwen3-8B-Base")
    add_out_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..core.registry import groups_for_backbone, registry_frame

    frame = registry_frame()
    if args.backbone:
        keep = {g.repo_id for g in groups_for_backbone(args.backbone)}
        if not keep:
            raise ValueError(f"--backbone {args.backbone!r}: no Qwen-Scope group for it (`qscope-lab saes` lists them)")
        frame = frame[frame.repo_id.isin(keep)]
    print_frame(frame, args.out)
