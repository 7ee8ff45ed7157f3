"""``qscope-lab index build | info | export``: a feature index over a corpus, its facts, its Neuronpedia export.

    qscope-lab index build --corpus docs.jsonl --corpus more/ --out my-index [--layers 2 3] [--engine ray]
    qscope-lab index info my-index
    qscope-lab index export my-index --out np-export [--layers 2] [--overwrite]

Arguments are checked before the model loads. Ctrl-C stops a build with one line (exit 130): the shards it
finished are kept, and the same command resumes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .options import add_lab_options, lab_from_args, print_frame

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


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
    e.add_argument("--creator-id", help="id of an existing user of the Neuronpedia instance (default: its seeded "
                                        "bot user, clkht01d40000jv08hvalcvly)")
    e.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not an earlier export of the same source")
    e.set_defaults(func=run_export)


def _interrupted(message: str) -> SystemExit:
    print(f"qscope-lab index: interrupted (Ctrl-C); {message}", file=sys.stderr)
    return SystemExit(INTERRUPTED)


def check_build_args(args) -> dict:
    """Everything ``build`` can check without the model (the corpus paths, the options, --out, --layers,
    --workers); returns the index options. Raises a user error naming the argument."""
    from ..index.build import build_params
    from ..index.schema import MANIFEST

    for corpus in args.corpus:
        if not Path(corpus).exists():
            raise FileNotFoundError(f"--corpus {corpus}: no such file or folder")
    options = {"n_top": args.n_top, "context_length": args.context_length, "shard_documents": args.shard_documents,
               "batch_size": args.batch_size}
    build_params(options)
    negative = [x for x in args.layers or () if x < 0]
    if negative:
        raise ValueError(f"--layers {negative[0]}: a layer is a number from 0")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}: at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not an index folder")
    if out.is_dir() and not args.overwrite and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not a feature index; choose an empty or new folder")
    return options


def run_build(args) -> None:
    from ..index.schema import MANIFEST
    from ..index.store import FeatureIndex

    options = check_build_args(args)
    try:
        lab = lab_from_args(args)
        index = FeatureIndex.build(lab, [Path(c) for c in args.corpus], args.layers, args.out, engine=args.engine,
                                   workers=args.workers, address=args.address, overwrite=args.overwrite,
                                   progress=True, **options)
    except KeyboardInterrupt:
        if (Path(args.out) / MANIFEST).is_file():
            raise _interrupted(f"the finished shards are kept in {args.out}: run the same command again (without "
                               f"--overwrite) to resume the build") from None
        raise _interrupted("the build had not started; nothing was written") from None
    print(f"indexed {index.documents:,} documents, {index.tokens:,} tokens, layers {index.layers} -> {index.path}")


def run_info(args) -> None:
    from ..index.store import FeatureIndex

    print_frame(FeatureIndex.open(args.path).info(), None)


def run_export(args) -> None:
    from ..index.export import DEFAULT_CREATOR_ID, check_id, check_source_set
    from ..index.store import FeatureIndex

    check_source_set(args.source_set)
    if args.model_id is not None:
        check_id(args.model_id, "model_id")
    creator_id = check_id(args.creator_id or DEFAULT_CREATOR_ID, "creator_id")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise FileExistsError(f"--out {args.out} is a file, not a folder")
    try:
        folders = FeatureIndex.open(args.path).export_neuronpedia(
            args.out, layers=args.layers, source_set=args.source_set, model_id=args.model_id, creator_id=creator_id,
            overwrite=args.overwrite)
    except KeyboardInterrupt:
        raise _interrupted("files already written are whole (each is replaced atomically): run the same command "
                           "again to finish the export") from None
    for folder in folders:
        print(f"wrote {folder}")
