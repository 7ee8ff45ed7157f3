"""What every qscope-lab widget shares: its front-end files, an error line, a busy flag, array traits (numpy
arrays in Python, little-endian bytes on the wire: :class:`ArrayTrait`), updates without echo, and strict
constructor keywords.

Front-end code lives in ES modules under ``widgets/src`` (``src/lib`` holds the shared helpers and controls),
bundled by esbuild into one module per component in ``widgets/dist`` (committed; in a wheel:
``qscope_lab/_widgets/dist``). ``_esm`` and ``_css`` are the built files' paths, so with ``ANYWIDGET_HMR=1``
anywidget reloads a widget's front-end when ``npm run watch`` rebuilds it (see ``widgets/README.md``).

Errors raised while a widget works are shown inside it (``error`` trait) and kept on ``last_exception``: the
kernel and the widget stay usable. That holds for everything the front end sends: custom messages go through
:meth:`LabWidget.on_events` (each event handled inside ``working``; :func:`message_field` checks a payload's
fields by name), and a trait value the front end sets that the kernel refuses (``set_state``) shows as the error
while the front end is put back on the kernel's value.

Observers that run the widget's work are declared with :func:`reacts` instead of ``traitlets.observe``: they
are skipped while the widget is *quiet* — during construction (constructor values notify too, before the
subclass is set up) and inside ``with self.quietly():`` (the widget setting its own traits: reverting a bad
value, loading stored state). The front-end still receives every value; links and other observers still fire.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from ..analysis import labels as label_store
from ..base import validate
from . import _names

if TYPE_CHECKING:
    from ..lab import Lab


def assets_dir() -> Path:
    """The folder of the built front-end files (``dist``)."""
    package = Path(__file__).resolve().parent.parent
    candidates = (package / "_widgets" / "dist", package.parent / "widgets" / "dist")
    for candidate in candidates:
        if (candidate / "qscope.css").is_file():
            return candidate
    raise FileNotFoundError("the widgets' built front-end files are missing (looked in "
                            + " and ".join(str(c) for c in candidates) + "); run `npm run build` in widgets/")


def esm(name: str) -> Path:
    """The built module of one component (``"card.js"``): a path, so anywidget can watch it."""
    path = assets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `npm run build` in widgets/")
    return path


def css() -> Path:
    return assets_dir() / "qscope.css"


class ArrayTrait(traitlets.TraitType):
    """A numpy array of one dtype (and, if given, one number of dimensions), synced to the front-end as its
    little-endian bytes: JS gets a ``DataView`` (``f32`` / ``i32`` / ``u8`` in ``src/lib/common.js``), Python
    keeps the array::

        values = ArrayTrait("float32").tag(sync=True)          # float32 per token
        top = ArrayTrait("int32", ndim=2).tag(sync=True)       # [tokens, k], row-major on the wire

    Assignment validates. An array-like is converted, and cast to the dtype only when no value can change: a
    safe cast (bool -> uint8, int16 -> float32), integers whose every value the dtype holds (``int64`` feature
    ids into ``int32``; a Python list of ints), or an empty array. Anything else is a
    :class:`traitlets.TraitError` naming the trait: another number of dimensions, a float array for a narrower
    float or for integers (``float64`` activations are cast on purpose: ``values.astype("float32")``), ints out
    of range, strings, bytes. The stored array is a C-ordered read-only copy: changed in place it would never
    reach the front-end, so assign a new array instead. Assigning an equal array (same dtype, shape and values)
    notifies nobody and sends nothing.

    ``.tag(sync=True)`` also tags the trait with its ``to_json`` / ``from_json``. Bytes coming back from the
    front-end are read as the dtype; an array of 2 or more dimensions keeps the trailing shape of the current
    value.
    """

    info_text = "a numpy array"

    def __init__(self, dtype, ndim: int | None = None, default_value=traitlets.Undefined, **kwargs):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biuf":
            raise TypeError(f"ArrayTrait holds bool, integer or float arrays, not {self.dtype}")
        self.ndim = ndim
        if default_value is traitlets.Undefined:
            default_value = np.zeros((0,) * (ndim or 1), self.dtype)
        super().__init__(default_value=self._readonly(np.asarray(default_value, self.dtype)), **kwargs)
        self.info_text = (f"a {ndim}-d {self.dtype} array" if ndim is not None else f"a {self.dtype} array")

    @staticmethod
    def _readonly(array: np.ndarray) -> np.ndarray:
        array = np.array(array, order="C", copy=True)
        array.flags.writeable = False
        return array

    def tag(self, **metadata):
        if metadata.get("sync"):
            metadata.setdefault("to_json", self.to_json)
            metadata.setdefault("from_json", self.from_json)
        return super().tag(**metadata)

    def _refuse(self, obj, value, why: str):
        owner = f"{type(obj).__name__} instance" if obj is not None else "ArrayTrait"
        raise traitlets.TraitError(f"The {self.name!r} trait of a {owner} expected {self.info_text}, not {why}")

    def validate(self, obj, value):
        if value is None or isinstance(value, str | bytes | bytearray | memoryview):
            self._refuse(obj, value, f"a {type(value).__name__}")
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as err:  # a ragged list
            self._refuse(obj, value, f"{type(value).__name__} ({err})")
        if array.ndim != self.ndim if self.ndim is not None else array.ndim == 0:
            self._refuse(obj, value, f"a {array.ndim}-d array of shape {array.shape}")
        if array.dtype != self.dtype:
            if array.dtype.kind not in "biuf":
                self._refuse(obj, value, f"an array of {array.dtype}")
            if not (array.size == 0 or np.can_cast(array.dtype, self.dtype, casting="safe")
                    or (array.dtype.kind in "biu" and self._holds(array))):
                self._refuse(obj, value, f"an array of {array.dtype} with values {self.dtype} cannot hold"
                             if array.dtype.kind in "biu" else f"an array of {array.dtype} ({self.dtype} would "
                             f"round its values: cast on purpose with .astype({str(self.dtype)!r}))")
            array = array.astype(self.dtype)
        return self._readonly(array)

    def _holds(self, integers: np.ndarray) -> bool:
        """Whether the dtype holds each of these integers (or bools) exactly."""
        if self.dtype.kind == "b":
            return bool(((integers == 0) | (integers == 1)).all())
        if self.dtype.kind in "iu":  # a round trip would wrap (-1 -> 255 -> -1): compare with the bounds
            info = np.iinfo(self.dtype)
            return bool(((integers >= info.min) & (integers <= info.max)).all())
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(np.array_equal(integers.astype(self.dtype).astype(integers.dtype), integers))

    def set(self, obj, value):
        new_value = self._validate(obj, value)
        old_value = obj._trait_values.get(self.name, self.default_value)
        obj._trait_values[self.name] = new_value
        same = (old_value is not None and new_value is not None and old_value.dtype == new_value.dtype
                and old_value.shape == new_value.shape
                and np.array_equal(old_value, new_value, equal_nan=self.dtype.kind == "f"))
        if not same and not (old_value is None and new_value is None):
            obj._notify_trait(self.name, old_value, new_value)

    def to_json(self, value, widget=None) -> bytes | None:
        """The array's little-endian bytes, row-major (a DataView in JS)."""
        if value is None:
            return None
        return np.ascontiguousarray(value, dtype=self.dtype.newbyteorder("<")).tobytes()

    def from_json(self, data, widget=None) -> np.ndarray | None:
        """Bytes (or a memoryview) from the front-end back to an array of the dtype."""
        if data is None:
            return None
        array = np.frombuffer(bytes(data), dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
        current = getattr(widget, self.name, None) if widget is not None else None
        ndim = self.ndim if self.ndim is not None else current.ndim if current is not None else 1
        if ndim > 1:
            trailing = current.shape[1:] if current is not None and current.ndim == ndim else ()
            if not trailing or 0 in trailing or array.size % int(np.prod(trailing)):
                raise traitlets.TraitError(f"{self.name!r}: {array.size} values from the front-end do not make "
                                           f"rows of shape {trailing or '(unknown)'}")
            array = array.reshape(-1, *trailing)
        return array


def reject_unknown_kwargs(widget: traitlets.HasTraits, kwargs: dict) -> None:
    """TypeError naming the keywords that are neither a constructor parameter nor a trait of ``widget``
    (traitlets would only warn, and the typo would silently do nothing)."""
    unknown = [key for key in kwargs if not widget.has_trait(key)]
    if not unknown:
        return
    cls = type(widget)
    known = [name for name, p in inspect.signature(cls.__init__).parameters.items()
             if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    known += [name for name in widget.trait_names() if not name.startswith("_") and name not in known]
    message = f"{cls.__name__}() got unexpected keyword argument(s): {', '.join(map(repr, unknown))}"
    guesses = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
    guesses = {key: found[0] for key, found in guesses.items() if found}
    if len(unknown) == 1 and guesses:
        message += f" (did you mean {guesses[unknown[0]]!r}?)"
    elif guesses:
        message += " (did you mean " + ", ".join(f"{v!r} for {k!r}" for k, v in guesses.items()) + "?)"
    raise TypeError(message)


def message_field(content: dict, key: str, check: Callable[..., Any] = validate.integer, **kwargs):
    """``content[key]`` of a message from the front end, checked with a ``base.validate`` function
    (``validate.integer`` unless given; ``kwargs`` go to it): ValueError if the message has no ``key``, the
    validator's TypeError / ValueError (naming ``key``) if the value is wrong (a string where an int belongs)."""
    if key not in content:
        raise ValueError(f"the message has no {key!r} (got {', '.join(map(repr, content)) or 'no fields'})")
    return check(content[key], key, **kwargs)


def checked(*names: str, check: Callable[..., Any] = validate.integer, **kwargs):
    """A traitlets ``@validate`` for the traits ``names``, declared in the class body
    (``_check_top = checked("top", minimum=1)``): every value set later (from Python or the front end) goes
    through the ``base.validate`` function ``check`` (``validate.integer`` unless given, with ``kwargs``), and
    what it refuses is a ``TraitError`` with its message, which names the trait."""
    def validator(self, proposal):
        try:
            return check(proposal["value"], proposal["trait"].name, **kwargs)
        except (TypeError, ValueError, IndexError) as err:
            raise traitlets.TraitError(str(err)) from None
    return traitlets.validate(*names)(validator)


def reacts(*names: str):
    """``traitlets.observe(*names)`` for a :class:`LabWidget` method that is skipped while the widget is quiet
    (being constructed, or inside ``self.quietly()``)."""
    def decorate(method):
        @functools.wraps(method)
        def handler(self, change):
            if not self._quiet:
                return method(self, change)
            return None
        return traitlets.observe(*names)(handler)
    return decorate


class LabWidget(anywidget.AnyWidget):
    """Base: ``error`` (shown in the widget, empty when fine), ``busy`` (the front-end shows a spinner) and
    ``names`` (``"layer/feature"`` -> display name of every feature the widget shows: see ``_names``; a label
    saved anywhere in the process re-sends them)."""

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    names = traitlets.Dict().tag(sync=True)

    def __init__(self, lab: Lab, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        self.lab = lab
        self.last_exception: BaseException | None = None
        self._quiet = 0  # > 0: @reacts observers skip (see quietly)
        self._depth = 0  # nesting of working() steps
        self._events: dict[str, Callable[[dict], object]] = {}
        with self.quietly():  # the constructor's values notify before the subclass has set itself up
            super().__init__(**kwargs)
        label_store.subscribe(self._label_saved)  # weakly: a widget that is gone is not kept alive by it

    # ------------------------------------------------------------------ display names
    def named_features(self) -> list[tuple[int, int]]:
        """The (layer, feature) pairs the widget shows by name (each widget says which)."""
        return []

    def refresh_names(self) -> None:
        """Send the display names of :meth:`named_features`. A failure shows in the error line but never clears
        an error already shown."""
        try:
            store = getattr(self, "labels", None)
            names = _names.feature_names(self.lab, self.named_features(),
                                         store if isinstance(store, label_store.FeatureLabels) else None)
        except Exception as err:
            self.last_exception = err
            self.last_traceback = traceback.format_exc()
            self.error = f"names: {err}"
            return
        if names != self.names:
            self.names = names

    def name_of(self, layer: int, feature: int) -> str:
        """The display name the widget shows for a feature ("" when it has only its id)."""
        return self.names.get(_names.key(layer, feature), "")

    def _label_saved(self, change: dict) -> None:
        """``analysis.labels`` announced a saved label: if it is of this Lab's model and SAE suite, re-send."""
        if change.get("namespace") == label_store.label_namespace(self.lab):
            self.label_saved(change)
            self.refresh_names()

    def label_saved(self, change: dict) -> None:
        """Hook: a label of this Lab was saved somewhere in the process (the card updates its label box)."""

    def on_events(self, **handlers: Callable[[dict], object]) -> None:
        """Handle the front end's custom messages ``{"event": name, ...}``: ``handlers[name](content)`` runs
        inside ``working(name)``, so whatever goes wrong (a missing field, a string where an int belongs, an
        unknown feature) becomes the widget's error line instead of a traceback in the kernel's log. A message
        that is not an object, or names an event the widget does not have, is an error too; one without an
        ``event`` field is not for these handlers and is left alone."""
        if not self._events:
            self.on_msg(self._on_message)
        self._events.update(handlers)

    def _on_message(self, widget, content, buffers) -> None:
        """The ``on_msg`` callback of :meth:`on_events` (what a front-end ``model.send`` reaches)."""
        event = content.get("event") if isinstance(content, dict) else None
        if isinstance(content, dict) and "event" not in content:
            return
        with self.working(event if isinstance(event, str) and event in self._events else "message"):
            if not isinstance(content, dict):
                raise TypeError(f"a message from the front end must be an object, got {type(content).__name__}")
            handler = self._events.get(event) if isinstance(event, str) else None
            if handler is None:
                raise ValueError(f"unknown event {event!r} (this widget handles "
                                 f"{', '.join(map(repr, self._events))})")
            handler(content)

    def set_state(self, sync_data):
        """Values from the front end. If setting them fails (a value a trait's validation refuses: the traits
        keep their values), the error becomes the widget's error line and the front end is sent the kernel's
        values back, instead of a traceback in the kernel's log."""
        try:
            super().set_state(sync_data)
        except Exception as err:
            self.last_exception = err
            self.last_traceback = traceback.format_exc()
            self.error = f"set {', '.join(map(str, sync_data))}: {err}"
            keys = [key for key in sync_data if key in self.keys]
            if keys:
                self.send_state(keys)

    @contextlib.contextmanager
    def quietly(self):
        """Set traits without the widget reacting to them: its :func:`reacts` observers skip (nestable). The
        front-end still gets the values."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    @contextlib.contextmanager
    def working(self, what: str):
        """Run a step; an exception becomes the widget's error message instead of a dead widget. Nested steps
        report to the outermost one."""
        if self._depth:
            yield  # the outer step catches and reports
            return
        self._depth, self.busy = 1, True
        try:
            yield
            self.error = ""
        except Exception as err:  # shown to the user; the traceback stays on last_exception
            self.last_exception = err
            self.last_traceback = traceback.format_exc()
            self.error = f"{what}: {err}"
        finally:
            self._depth, self.busy = 0, False
