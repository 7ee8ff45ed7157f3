"""Execute a notebook headless (the CI equivalent of opening it in JupyterLab); fails on the first error."""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        nb = nbformat.read(path, as_version=4)
        start = time.time()
        resources = {"metadata": {"path": str(path.parent)}}
        NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
        print(f"{path}: {len(nb.cells)} cells ran in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
