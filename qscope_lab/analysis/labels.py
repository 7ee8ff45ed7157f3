"""User labels and notes for features, kept in one JSON file so they outlive the kernel.

Keys are ``"<sae suite>/<layer>/<feature>"``: the same feature id means different things in different SAE
suites. Every write takes a cross-process file lock (``labels.json.lock``), re-reads the file, merges the one
change and replaces the file atomically (written to a temporary file, flushed to disk, then renamed): two
notebooks or processes labelling at once lose nothing, and a writer killed mid-write leaves the old file or the
new one, never a torn one, and no temporary file behind once the next write has run.

A ``labels.json`` that is a symbolic link is written through (its target is replaced, the link kept; the lock and
the temporary files live beside the target), and the file keeps its permission bits (a new one gets the umask's
default). An absent file holds no labels; a 0-byte file is refused, never overwritten: the writer here never
leaves one, so it is another program's file being written, or a damaged one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..base import validate
from ..base.atomic import target, write_atomic

if TYPE_CHECKING:
    from ..lab import Lab

_TEMP_PREFIX = ".labels-"
_LOCK_TIMEOUT_S = 30.0


_SUBSCRIBERS: list[weakref.ref] = []
_SUBSCRIBERS_LOCK = threading.Lock()


def subscribe(callback: Callable[[dict], object]) -> None:
    """Call ``callback(change)`` after every label or note saved in this process; ``change`` is ``{namespace,
    path, layer, feature, label, note}``. Held weakly (a bound method through ``weakref.WeakMethod``): subscribing
    keeps nothing alive, and a collected subscriber is dropped."""
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else weakref.ref(callback)
    with _SUBSCRIBERS_LOCK:
        _SUBSCRIBERS[:] = [r for r in _SUBSCRIBERS if r() is not None]
        _SUBSCRIBERS.append(ref)


def announce(change: dict) -> None:
    """Tell every live subscriber about ``change``; one that raises does not stop the others (each widget shows
    its own errors in its error line)."""
    with _SUBSCRIBERS_LOCK:
        refs = list(_SUBSCRIBERS)
    for ref in refs:  # one callback alive at a time here: a traceback a subscriber keeps holds none of the others
        callback = ref()
        if callback is not None:
            with contextlib.suppress(Exception):
                callback(change)
        callback = None


def default_path() -> Path:
    """``$QSCOPE_LAB_HOME/labels.json`` (default ``~/.qscope-lab``)."""
    return Path(os.environ.get("QSCOPE_LAB_HOME", Path.home() / ".qscope-lab")) / "labels.json"


def label_namespace(lab: Lab) -> str:
    """Model and SAE suite: the same feature id means different things in different suites."""
    return f"{lab.name}|{lab.saes.name}" if lab.saes is not None else lab.name


class FeatureLabels:
    """Labels and notes of one namespace (model + SAE suite) in a shared JSON file.

    ``check(layer, feature)`` refuses features that do not exist (``FeatureLabels.for_lab`` uses the Lab's own
    check), so a typo in a feature box never stores a label for feature 1,000,000."""

    def __init__(self, namespace: str, path: str | os.PathLike | None = None,
                 check: Callable[[int, int], object] | None = None):
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        self.namespace = namespace
        self.path = Path(path) if path is not None else default_path()
        self.check = check
        self._lock = threading.Lock()
        self.sweep()

    @classmethod
    def for_lab(cls, lab: Lab, path: str | os.PathLike | None = None) -> FeatureLabels:
        """The labels of ``lab``'s model and SAE suite, refusing layers and features it does not have."""
        return cls(label_namespace(lab), path, check=lambda layer, feature: lab.check_feature(layer, feature))

    # ------------------------------------------------------------------ keys
    def _key(self, layer, feature) -> str:
        layer = validate.integer(layer, "layer", minimum=0)
        feature = validate.integer(feature, "feature", minimum=0)
        if self.check is not None:
            self.check(layer, feature)
        return f"{self.namespace}/{layer}/{feature}"

    def _split(self, key: str) -> tuple[int, int] | None:
        """(layer, feature) of a key of this namespace exactly (``"a"`` does not own ``"a/b/2/5"``), else None."""
        namespace, _, rest = key.rpartition("/")
        namespace, _, layer = namespace.rpartition("/")
        if namespace != self.namespace or not layer.isdigit() or not rest.isdigit():
            return None
        return int(layer), int(rest)

    # ------------------------------------------------------------------ file
    def _read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except NotADirectoryError:
            raise NotADirectoryError(f"cannot read labels at {self.path}: a parent of it is a file, not a folder "
                                     f"(set QSCOPE_LAB_HOME to a folder)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read labels at {self.path}: {err}") from None
        if not text:  # never written so by this class: another program is writing it, or it is damaged
            raise ValueError(f"{self.path} is empty (0 bytes): a labels file is never empty (an absent one is), so "
                             f"another program may be writing it, or it is damaged; nothing was changed. Move it "
                             f"away or delete it to start afresh")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.path} is not a labels file (JSON error: {err}); "
                             "move it away to start afresh") from None
        except RecursionError:
            raise ValueError(f"{self.path} is not a labels file (JSON nested too deeply); "
                             "move it away to start afresh") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} is not a labels file (expected a JSON object)")
        return data

    @contextlib.contextmanager
    def _locked(self):
        """This object's thread lock, then the cross-process file lock beside the labels file."""
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectoryError(f"cannot store labels in {self.path.parent}: it is a file, not a folder "
                                     f"(set QSCOPE_LAB_HOME to a folder)") from None
        except PermissionError:
            raise PermissionError(f"cannot create {self.path.parent} for the labels: permission denied "
                                  f"(set QSCOPE_LAB_HOME to a writable folder)") from None
        with self._lock:
            try:
                with FileLock(self._lock_path(), timeout=_LOCK_TIMEOUT_S):
                    yield
            except Timeout:
                raise TimeoutError(f"another process has held {self._lock_path()} for {_LOCK_TIMEOUT_S:.0f} s; "
                                   f"if none is writing labels, delete the lock file") from None
            except PermissionError:
                raise PermissionError(f"cannot write labels in {self.path.parent}: permission denied "
                                      f"(set QSCOPE_LAB_HOME to a writable folder)") from None

    def _lock_path(self) -> str:
        """The lock beside the file actually written (a symbolic link's target), so that writers through the link
        and through the target share it."""
        return str(target(self.path)) + ".lock"

    def _sweep(self) -> None:
        """Remove temporary files a writer killed mid-write (SIGKILL, power loss) left; only ever called with the
        file lock held, so no live writer's file is touched."""
        for stale in target(self.path).parent.glob(_TEMP_PREFIX + "*.json"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def sweep(self) -> None:
        """Clean up after a killed writer now, if no other process is writing (else the next write does)."""
        from filelock import FileLock, Timeout

        if not self.path.parent.is_dir():
            return
        try:
            with FileLock(self._lock_path(), timeout=0):
                self._sweep()
        except (Timeout, OSError):
            pass

    def _write(self, data: dict) -> None:
        """Replace the file atomically (through a symbolic link, keeping its mode); the temporary file never
        outlives this call, whatever fails."""
        self._sweep()
        text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True)
        try:
            write_atomic(self.path, text, prefix=_TEMP_PREFIX, suffix=".json")
        except PermissionError:
            raise PermissionError(f"cannot write labels in {target(self.path).parent}: permission denied "
                                  f"(set QSCOPE_LAB_HOME to a writable folder)") from None

    # ------------------------------------------------------------------ API
    def get(self, layer: int, feature: int) -> dict:
        """``{"label": str, "note": str}`` (empty strings when never set)."""
        entry = self._read().get(self._key(layer, feature), {})
        return {"label": entry.get("label", ""), "note": entry.get("note", "")}

    def set(self, layer: int, feature: int, label: str | None = None, note: str | None = None) -> dict:
        """Update the label and/or note (None keeps the stored value); an entry with both empty is removed."""
        key = self._key(layer, feature)
        for value, name in ((label, "label"), (note, "note")):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if value is not None and value:
                validate.text(value, name)
        with self._locked():
            data = self._read()  # re-read under the lock: another process may have written since
            entry = {"label": "", "note": "", **data.get(key, {})}
            if label is not None:
                entry["label"] = label
            if note is not None:
                entry["note"] = note
            if entry["label"] or entry["note"]:
                data[key] = entry
            else:
                data.pop(key, None)
            self._write(data)
        layer, feature = self._split(key) or (layer, feature)
        announce({"namespace": self.namespace, "path": str(target(self.path)), "layer": layer, "feature": feature,
                  "label": entry["label"], "note": entry["note"]})
        return {"label": entry["label"], "note": entry["note"]}

    def to_frame(self) -> pd.DataFrame:
        """This namespace's labels: layer, feature, label, note."""
        rows = []
        for key, entry in self._read().items():
            where = self._split(key)
            if where is not None and isinstance(entry, dict):
                rows.append({"layer": where[0], "feature": where[1], "label": entry.get("label", ""),
                             "note": entry.get("note", "")})
        return pd.DataFrame(rows, columns=["layer", "feature", "label", "note"])
