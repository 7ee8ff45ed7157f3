"""Write tests/data/index_format1: a small feature index in format 1 (no generation, no checksums, tokens beside
the manifest, no ``distinct_contexts`` parameter), as qscope-lab wrote it before format 2. The tests open it to
check that indexes users built then still open, verify and read.

Run it with the package as it was at commit cf5f2e8 (the last to write format 1):

    git worktree add /tmp/oldwt cf5f2e8
    cd /tmp/oldwt && PYTHONPATH=/tmp/oldwt python $REPO/tests/data/make_index_format1.py $REPO/tests/data/index_format1
"""

import sys

from qscope_lab import FeatureIndex, Lab
from qscope_lab.embedded import reference_documents

lab = Lab.load(index=False)
rows = reference_documents()
docs = [{"text": r["text"][:100], "source": r["source"]}
        for lang in ("en", "zh", "code") for r in [x for x in rows if x["lang"] == lang][:2]]
index = FeatureIndex.build(lab, docs, [1], sys.argv[1], n_top=2, window=2, samples_per_bin=1, context_length=64)
print(index.documents, "documents,", index.tokens, "tokens")
