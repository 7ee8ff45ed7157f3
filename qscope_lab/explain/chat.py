"""One chat callable for explainers and judges: an OpenAI-compatible endpoint (vLLM, SGLang, Ollama, ``transformers
serve``, any base URL + model name, through the ``openai`` client), a local transformers chat model, or a plain
Python function ``f(messages) -> str``.

``Chat.batch(prompts, parse=...)`` asks many at once (``concurrency`` threads), retries each with exponential
backoff on server errors, timeouts and malformed replies (``parse`` raising ``Malformed`` / ``ValueError``), shows a
progress bar (``base.progress``), counts the cost (requests, retries, prompt and completion tokens when the server
reports them, cache hits) and keeps every reply that parsed in an on-disk cache (SQLite) keyed by (model, prompt
version, messages, generation parameters), so nothing is asked twice. A prompt that fails after its retries is
reported in its own ``Result`` (error, attempts) and the others' work is kept: a batch never raises for one item.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import validate
from ..base.progress import bar

Messages = list[dict]


class Malformed(ValueError):
    """A reply that does not say what the prompt asked for (parse failed): retried, then reported."""


@dataclass
class Reply:
    """What a backend returns: the text and, when reported, the tokens it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Result:
    """One prompt's outcome: ``ok``, the raw ``reply``, its parsed ``value``, the ``error`` (type: message) when
    it failed, ``attempts`` made and whether it came from the ``cache``."""

    ok: bool
    reply: str | None = None
    value: Any = None
    error: str | None = None
    attempts: int = 0
    cached: bool = False


@dataclass
class Cost:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("requests", "retries", "failures", "cache_hits", "prompt_tokens",
                                              "completion_tokens", "seconds")}

    def __getstate__(self) -> dict:  # the lock stays behind: a copy sent to a Ray worker counts on its own
        return self.as_dict()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


def default_cache() -> Path:
    return Path(os.environ.get("QSCOPE_LAB_HOME", Path.home() / ".qscope-lab")) / "chat-cache.sqlite"


class Cache:
    """Replies by key in one SQLite file (safe across threads and processes; a write is one transaction)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, "
                       "prompt_tokens INTEGER, completion_tokens INTEGER, date REAL)")

    def __getstate__(self) -> dict:  # the path travels (to a Ray worker); connections are per thread
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path, self._local = state["path"], threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    def get(self, key: str) -> str | None:
        row = self._db().execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, model: str, reply: Reply) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                       (key, model, reply.text, reply.prompt_tokens, reply.completion_tokens, time.time()))


def check_messages(messages, name: str = "messages") -> Messages:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TypeError(f"{name} must be a str or a non-empty list of {{'role', 'content'}} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TypeError(f"{name}[{i}] must be a dict with str 'role' and 'content', got {m!r:.80}")
    return [dict(m) for m in messages]


class Chat:
    """A chat model as a callable ``messages -> str``, batched, retried, cached and costed (module docstring).

    Build one with ``Chat.openai(base_url, model)``, ``Chat.transformers(model)`` or ``Chat.function(f)``."""

    def __init__(self, backend: Callable[[Messages, dict], Reply | str], model: str, *, concurrency: int = 8,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0,
                 cache: str | os.PathLike | bool | None = True, params: dict | None = None):
        if not callable(backend):
            raise TypeError(f"backend must be callable, got {type(backend).__name__}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty str, got {model!r}")
        self.backend = backend
        self.model = model
        self.concurrency = validate.integer(concurrency, "concurrency", minimum=1, maximum=1024)
        self.retries = validate.integer(retries, "retries", minimum=0, maximum=100)
        self.backoff = validate.number(backoff, "backoff", minimum=0.0)
        self.max_backoff = validate.number(max_backoff, "max_backoff", minimum=0.0)
        self.params = dict(params or {})
        self.cost = Cost()
        if cache is True or cache is None:
            cache = default_cache()
        self.cache = Cache(cache) if cache is not False else None

    def __repr__(self) -> str:
        return f"Chat({self.model!r}, concurrency={self.concurrency}, retries={self.retries})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def openai(cls, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
               max_tokens: int = 128, temperature: float = 0.0, **options) -> Chat:
        """An OpenAI-compatible endpoint: ``base_url`` such as ``http://localhost:8000/v1`` and the served
        ``model`` name; ``api_key`` (default ``$OPENAI_API_KEY`` or "none" for local servers), ``timeout`` per
        request in seconds. ``Chat`` options (concurrency, retries, backoff, cache) pass through; others go
        to ``chat.completions.create``."""
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as http://localhost:8000/v1, got {base_url!r}")
        timeout = validate.number(timeout, "timeout", minimum=1e-6)
        max_tokens = validate.integer(max_tokens, "max_tokens", minimum=1)
        temperature = validate.number(temperature, "temperature", minimum=0.0)
        own = {k: options.pop(k) for k in ("concurrency", "retries", "backoff", "max_backoff", "cache")
               if k in options}
        params = {"max_tokens": max_tokens, "temperature": temperature, **options}
        call = _OpenAIBackend(base_url, model, api_key or os.environ.get("OPENAI_API_KEY") or "none", timeout,
                              params)
        return cls(call, model, params={"base": "openai", **params}, **own)

    @classmethod
    def transformers(cls, model, tokenizer=None, max_new_tokens: int = 128, name: str | None = None,
                     **options) -> Chat:
        """A local transformers chat model (a folder, a hub id or a loaded model + tokenizer), greedy; one
        generation at a time (``concurrency`` 1)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens", minimum=1)
        if isinstance(model, (str, os.PathLike)):
            name = name or str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: Chat.transformers(model, tokenizer=tok)")
        lock = threading.Lock()

        def call(messages: Messages, extra: dict) -> Reply:
            import torch

            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with lock, torch.no_grad():
                out = model.generate(**ids.to(model.device), max_new_tokens=max_new_tokens, do_sample=False)
            n = ids["input_ids"].shape[1]
            text = tokenizer.decode(out[0, n:], skip_special_tokens=True)
            return Reply(text, int(n), int(out.shape[1] - n))

        options.setdefault("concurrency", 1)
        return cls(call, name or type(model).__name__, params={"base": "transformers",
                                                               "max_new_tokens": max_new_tokens}, **options)

    @classmethod
    def function(cls, f: Callable[[Messages], str], model: str | None = None, **options) -> Chat:
        """A plain Python function ``f(messages) -> str`` (named ``function:<its name>`` unless ``model``)."""
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        name = model or f"function:{getattr(f, '__qualname__', type(f).__name__)}"
        return cls(lambda messages, extra: f(messages), name, **options)

    # ------------------------------------------------------------------ asking
    def key(self, messages: Messages, prompt_version: str = "") -> str:
        blob = json.dumps([self.model, prompt_version, messages, self.params], sort_keys=True, ensure_ascii=False,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def __call__(self, messages) -> str:
        """One reply (retried; raises the last error when every try failed)."""
        result = self.batch([messages], progress=False)[0]
        if not result.ok:
            raise RuntimeError(f"{self.model}: {result.error} (after {result.attempts} attempts)")
        return str(result.reply)

    def _one(self, messages: Messages, parse: Callable[[str], Any] | None, prompt_version: str) -> Result:
        key = self.key(messages, prompt_version)
        if self.cache is not None:
            text = self.cache.get(key)
            if text is not None:
                try:
                    value = parse(text) if parse else text
                    self.cost.add(cache_hits=1)
                    return Result(True, text, value, attempts=0, cached=True)
                except ValueError:
                    pass  # a reply cached by another parser: ask again
        error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.cost.add(retries=1)
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))
            start = time.perf_counter()
            try:
                out = self.backend(messages, {})
                reply = out if isinstance(out, Reply) else Reply(out)
                if not isinstance(reply.text, str):
                    raise Malformed(f"the reply is a {type(reply.text).__name__}, not text")
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # server errors, timeouts, connection errors: retried
                self.cost.add(requests=1, seconds=time.perf_counter() - start)
                error = f"{type(err).__name__}: {str(err)[:300]}"
                continue
            self.cost.add(requests=1, seconds=time.perf_counter() - start, prompt_tokens=reply.prompt_tokens,
                          completion_tokens=reply.completion_tokens)
            try:
                value = parse(reply.text) if parse else reply.text
            except ValueError as err:
                error = f"Malformed: {str(err)[:200]} (reply: {reply.text[:120]!r})"
                continue
            if self.cache is not None:
                self.cache.put(key, self.model, reply)
            return Result(True, reply.text, value, attempts=attempt + 1)
        self.cost.add(failures=1)
        return Result(False, error=error, attempts=self.retries + 1)

    def batch(self, prompts: Sequence, parse: Callable[[str], Any] | None = None, prompt_version: str = "",
              progress: bool | None = None, desc: str = "chat") -> list[Result]:
        """Ask every prompt (a str or a messages list each), ``concurrency`` at a time; one ``Result`` per
        prompt, in order. ``parse(reply)`` turns a reply into a value and raises ``Malformed`` (or ValueError)
        when it is not what was asked: retried like a server error. Replies that parsed are cached."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a list of prompts, got {type(prompts).__name__}")
        if not isinstance(prompt_version, str):
            raise TypeError(f"prompt_version must be a str, got {type(prompt_version).__name__}")
        items = [check_messages(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        results: list[Result | None] = [None] * len(items)
        with bar(len(items), progress, desc=f"{desc} ({self.model})", threshold=20) as pbar:
            if self.concurrency == 1 or len(items) <= 1:
                for i, m in enumerate(items):
                    results[i] = self._one(m, parse, prompt_version)
                    pbar.update(1)
            else:
                with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
                    futures = {pool.submit(self._one, m, parse, prompt_version): i for i, m in enumerate(items)}
                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        pbar.update(1)
        return [r for r in results if r is not None]


class _OpenAIBackend:
    """``Chat.openai``'s backend: one ``openai.OpenAI`` client, rebuilt from its settings when pickled (a Chat
    sent to Ray workers: the client itself holds locks and sockets)."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float, params: dict):
        self.base_url, self.model, self.api_key, self.timeout, self.params = base_url, model, api_key, timeout, params
        self._connect()

    def _connect(self) -> None:
        import openai

        self.client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout,
                                    max_retries=0)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._connect()

    def __call__(self, messages: Messages, extra: dict) -> Reply:
        reply = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                    **{**self.params, **extra})
        text = reply.choices[0].message.content if reply.choices else None
        if text is None:
            raise Malformed("the server's reply has no message content")
        usage = reply.usage
        return Reply(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


def as_chat(chat) -> Chat:
    """A ``Chat`` from a Chat, a function ``messages -> str``, or ``(base_url, model)``."""
    if isinstance(chat, Chat):
        return chat
    if isinstance(chat, tuple) and len(chat) == 2 and all(isinstance(x, str) for x in chat):
        return Chat.openai(*chat)
    if callable(chat):
        return Chat.function(chat)
    raise TypeError(f"chat must be an explain.chat.Chat, a function messages -> str or (base_url, model), got "
                    f"{type(chat).__name__}")
