"""``qscope-lab saes``: the 14 Qwen-Scope SAE groups as a table (static data: no torch, no pandas, no model)."""

from __future__ import annotations

from .options import add_out_option, command, print_frame


def register(sub) -> None:
    p = command(sub, "saes", "the 14 Qwen-Scope SAE groups as a table (no model, no download)", """
The 14 Qwen-Scope SAE groups: backbone, width, k, layers, hub id and download size. Static data: nothing is
loaded or downloaded, so it answers at once.""", """
  qscope-lab saes
  qscope-lab saes --backbone Qwen3-8B-Base --out groups.csv""")
    p.add_argument("--backbone", help="only the groups of this backbone, e.g. Qwen3-8B-Base")
    add_out_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..saes.registry import groups_for_backbone, registry_rows

    rows = registry_rows()
    if args.backbone:
        keep = {g.repo_id for g in groups_for_backbone(args.backbone)}
        if not keep:
            raise ValueError(f"--backbone {args.backbone!r}: no Qwen-Scope group for it (`qscope-lab saes` lists them)")
        rows = [row for row in rows if row["repo_id"] in keep]
    if args.out:
        import pandas as pd

        print_frame(pd.DataFrame(rows), args.out)
    else:
        print(text_table(rows))


def text_table(rows: list[dict]) -> str:
    """Left-aligned text columns, right-aligned numbers, as pandas prints them: pandas costs 0.4 s to import, and
    this static table is the whole command."""
    columns = list(rows[0]) if rows else []
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], (int, float)) for row in rows) for c in columns]
    fit = lambda text, i: text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])  # noqa: E731
    lines = [" ".join(fit(c, i) for i, c in enumerate(columns))]
    lines += [" ".join(fit(text, i) for i, text in enumerate(r)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)
