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

from .options import LAYER, add_lab_options, check_layers, command, lab_from_args, print_frame

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def register(sub) -> None:
    p = command(sub, "index", "feature index over a corpus: build, info, export", """
A feature index over a corpus: for every feature of the indexed layers, its top contexts, statistics,
activation histogram and counts per source, on disk. Cards, search and the heatmap's hover names read it once
a Lab uses it (lab.use_index). Run qscope-lab index ACTION --help for an action's options.""", """
  qscope-lab index build --corpus examples/corpus.jsonl --out my-index --layers 2 3
  qscope-lab index info my-index
  qscope-lab index export my-index --out np-export""")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", title="actions",
                               help="one of these (qscope-lab index ACTION --help for its options):")
    # build's numbers are checked by check_build_args (one line naming the index option), not while parsing
    b = command(actions, "build", "index a corpus (resumes an unfinished build at --out)", """
Index a corpus: run the model over every document, encode each layer with its SAE and keep per feature its top
contexts and statistics. Shards are checkpointed: run the same command again after a crash or Ctrl-C and it
resumes where it stopped, giving the same index byte for byte.

Corpus format (--corpus): .txt with one document per line, .jsonl / .json with a "text" field (and an
optional "source"), .csv / .parquet with a 'text' column, or a folder of such files. examples/corpus.jsonl:
  {"text": "The cat sat on the mat and looked out of the window.", "source": "en"}
  {"text": "今天的天气很好，我们去公园散步。", "source": "zh"}""", """
  qscope-lab index build --corpus examples/corpus.jsonl --out my-index --layers 2 3""")
    add_lab_options(b)
    b.add_argument("--corpus", action="append", required=True, metavar="PATH",
                   help="a .txt / .jsonl / .parquet / .csv / .json file or a folder of them (repeatable; the file "
                        "stem is the source unless rows have a 'source' field)")
    b.add_argument("--out", required=True, metavar="FOLDER", help="the index folder (created; an unfinished build "
                                                                  "there is resumed)")
    b.add_argument("--layers", type=int, nargs="+", metavar="LAYER", help="layers to index (default: all)")
    b.add_argument("--n-top", type=int, default=20, metavar="N", help="top contexts kept per feature (default 20)")
    b.add_argument("--repeated-contexts", action="store_true",
                   help="keep the top firings even where they show the same text (default: each window of text "
                        "once per feature, at its strongest firing)")
    b.add_argument("--context-length", type=int, default=256, metavar="N",
                   help="tokens per forward pass; longer documents are cut into pieces of this length (default 256)")
    b.add_argument("--shard-documents", type=int, default=1024, metavar="N",
                   help="documents per shard, the unit that is checkpointed and resumed (default 1024)")
    b.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="pieces per forward pass (default 16; lower it if memory runs short)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (the default); ray: shards spread over Ray workers (pip install ray)")
    b.add_argument("--workers", type=int, metavar="N", help="Ray actors (default: one per GPU, else CPUs - 1)")
    b.add_argument("--address", help="Ray cluster address ('auto' for a running cluster)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    b.set_defaults(func=run_build)
    i = command(actions, "info", "what an index holds", """
What an index holds: model, SAE suite, layers, documents, tokens, sources and build parameters.""", """
  qscope-lab index info my-index""")
    i.add_argument("path", metavar="FOLDER", help="the index folder")
    i.set_defaults(func=run_info)
    e = command(actions, "export", "write Neuronpedia's bulk-import layout", """
Write an index in the layout Neuronpedia's bulk import reads (one folder per layer: features, activations,
explanations), to browse it in a Neuronpedia instance of your own.""", """
  qscope-lab index export my-index --out np-export""")
    e.add_argument("path", metavar="FOLDER", help="the index folder")
    e.add_argument("--out", required=True, metavar="FOLDER", help="the export folder")
    e.add_argument("--layers", type=LAYER, nargs="+", metavar="LAYER", help="layers to export (default: all indexed)")
    e.add_argument("--source-set", default="qscope-res",
                   help="Neuronpedia's name for the SAE set, in its URLs (default qscope-res)")
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
               "batch_size": args.batch_size, "distinct_contexts": not args.repeated_contexts}
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


class CorpusFiles:
    """The --corpus paths, sized by the documents they hold, so that the build's progress bar counts documents
    done of all of them (a bare list of paths would be sized by its files: "0/1", then "228it"). Counting reads
    every file once before the model loads, so a damaged file is refused first."""

    def __init__(self, paths: list[str]) -> None:
        from ..index.corpus import documents

        self.paths = [Path(p) for p in paths]
        self.documents = sum(1 for _ in documents(self.paths))
        if not self.documents:
            raise ValueError(f"--corpus {' '.join(paths)}: no documents (every text is empty)")

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return self.documents


def run_build(args) -> None:
    from ..index.schema import MANIFEST
    from ..index.store import FeatureIndex

    options = check_build_args(args)
    check_layers(args, layers=args.layers)
    corpus = CorpusFiles(args.corpus)
    try:
        lab = lab_from_args(args)
        index = FeatureIndex.build(lab, corpus, args.layers, args.out, engine=args.engine,
                                   workers=args.workers, address=args.address, overwrite=args.overwrite,
                                   progress=True, **options)
    except KeyboardInterrupt:
        if (Path(args.out) / MANIFEST).is_file():
            raise _interrupted(f"the finished shards are kept in {args.out}: run the same command again (without "
                               f"--overwrite) to resume the build") from None
        raise _interrupted("the build had not started; nothing was written") from None
    if not sys.stderr.isatty():  # a log or a pipe: end the cleared bar's line, so the summary has its own
        print(file=sys.stderr, flush=True)
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
