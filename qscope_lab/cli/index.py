"""``qscope-lab index build | info | export``: a feature index over a corpus, its facts, its Neuronpedia export.

    qscope-lab index build --corpus docs.jsonl --corpus more/ --out my-index [--layers 2 3] [--engine ray]
    qscope-lab index info my-index
    qscope-lab index export my-index --out np-export [--layers 2]
"""

from __future__ import annotations

from .options import add_lab_options, lab_from_args, print_frame


def register(sub) -> None:
    p = sub.add_parser("index", help="feature index over a corpus: build, info, export")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="index a corpus (resumes an unfinished build at --out)")
    add_lab_options(b)
    b.add_argument("--corpus", action="append", required=True,
                   help="a .txt / .jsonl / .parquet / .csv / .json file or a folder of them (repeatable; the file "
                        "stem is the source unless rows have a 'source' field)")
    b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--layers", type=int, nargs="+", help="layers to index (default: all)")
    b.add_argument("--n-top", type=int, default=20, help="top contexts kept per feature (default 20)")
    b.add_argument("--context-length", type=int, default=256, help="tokens per forward (default 256)")
    b.add_argument("--shard-documents", type=int, default=1024, help="documents per shard (default 1024)")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--engine", choices=("local", "ray"), default="local")
    b.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else CPUs - 1)")
    b.add_argument("--address", help="Ray cluster address ('auto' for a running cluster)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    b.set_defaults(func=run_build)
    i = actions.add_parser("info", help="what an index holds")
    i.add_argument("path")
    i.set_defaults(func=run_info)
    e = actions.add_parser("export", help="write Neuronpedia's bulk-import layout")
    e.add_argument("path")
    e.add_argument("--out", required=True, help="export folder")
    e.add_argument("--layers", type=int, nargs="+")
    e.add_argument("--source-set", default="qscope-res")
    e.add_argument("--model-id", help="Neuronpedia model id (default: the model name's last part)")
    e.set_defaults(func=run_export)


def run_build(args) -> None:
    from ..index.store import FeatureIndex

    lab = lab_from_args(args)
    index = FeatureIndex.build(lab, list(args.corpus), args.layers, args.out, engine=args.engine,
                               workers=args.workers, address=args.address, overwrite=args.overwrite, progress=True,
                               n_top=args.n_top, context_length=args.context_length,
                               shard_documents=args.shard_documents, batch_size=args.batch_size)
    print(f"indexed {index.documents:,} documents, {index.tokens:,} tokens, layers {index.layers} -> {index.path}")


def run_info(args) -> None:
    from ..index.store import FeatureIndex

    print_frame(FeatureIndex.open(args.path).info(), None)


def run_export(args) -> None:
    from ..index.store import FeatureIndex

    folders = FeatureIndex.open(args.path).export_neuronpedia(args.out, layers=args.layers,
                                                              source_set=args.source_set, model_id=args.model_id)
    for folder in folders:
        print(f"wrote {folder}")
