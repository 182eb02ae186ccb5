"""Model references and loading: a hub id, a local directory, or a ``tiny-…`` name.

* ``Qwen/Qwen3-VL-2B-Instruct`` (``kind_of`` -> ``"hub"``): loaded from the Hugging Face cache
  (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read at call
  time) without touching the network; only when it is not cached, and neither
  ``HF_HUB_OFFLINE`` nor ``TRANSFORMERS_OFFLINE`` is set, from the hub (which, unreachable,
  costs about 50 s of retries before the error).
* ``/path/to/dir``, ``./dir``, ``~/dir`` or any existing directory (``"local"``): a directory
  written by ``save_pretrained``.
* ``tiny-qwen3-vl``, ``tiny-qwen3``, ``tiny-qwen3-fgca`` (``"tiny"``): built once by
  :mod:`iea.models.tiny` into ``<cache>/<name>-seed<seed>-v<TINY_VERSION>/`` and then loaded from
  there like a local directory. ``tiny-qwen3-fgca`` is ``tiny-qwen3`` trained to write FGCA texts
  (:mod:`iea.recipes.copier`; its build takes about a minute of CPU).

Every real load uses ``from_pretrained`` with safetensors only, ``trust_remote_code`` off unless
asked for, puts the model on the requested device and dtype in eval mode, and counts itself in
:data:`LOAD_COUNTS`. Missing weights raise :class:`ModelNotAvailable`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch

from iea.models.tiny import TINY_BUILDERS, TINY_VERSION

RefKind = Literal["tiny", "local", "hub"]

LOAD_COUNTS: Counter[str] = Counter()
"""Number of real ``from_pretrained`` loads per reference (as passed by the caller)."""
BUILD_COUNTS: Counter[str] = Counter()
"""Number of tiny-model builds per ``tiny-…`` name (0 or 1 per cache entry in one process)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE = {"1", "true", "yes", "on"}
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelNotAvailable(RuntimeError):
    """The weights (or processor files) of a model reference cannot be found.

    ``ModelNotAvailable(ref, where, detail)`` composes the message (the reference, where it
    looked, the cause, how to fix it); ``ModelNotAvailable(message)`` takes a ready-made one
    (other model families, e.g. SAM checkpoints). ``ref``/``where``/``detail`` are kept as
    attributes (None for a ready-made message).
    """

    def __init__(self, ref: str, where: str | None = None, detail: str = ""):
        self._args = (ref, where, detail)
        if where is None:
            self.ref, self.where, self.detail = None, None, detail
            super().__init__(ref)
            return
        self.ref, self.where, self.detail = ref, where, detail
        hub_id = ref if kind_of_or_none(ref) == "hub" else "<hub id>"
        lines = [
            f"model {ref!r} is not available: looked in {where}.",
            *([f"  cause: {detail}"] if detail else []),
            "  to fix: on a machine with internet run "
            f"`hf download {hub_id}` and copy the Hugging Face cache here (point HF_HOME or "
            "HF_HUB_CACHE at it), or pass a local directory written by save_pretrained "
            "(with *.safetensors weights), or use a tiny reference "
            f"({', '.join(sorted(TINY_BUILDERS))}) for tests and demos.",
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (e.g. task runners)
        return (type(self), self._args)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when CUDA is available, else ``cpu``; ``"cpu"``, ``"cuda[:N]"``.

    Raises:
        ValueError: an unknown device string, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def resolve_dtype(
    dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu"
) -> torch.dtype:
    """``"auto"`` -> bfloat16 on CUDA, float32 elsewhere; or ``float32``/``bfloat16``/``float16``.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")
        return dtype
    name = dtype.strip().lower() if isinstance(dtype, str) else None
    if name == "auto":
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    if name in _DTYPES:
        return _DTYPES[name]
    raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")


def kind_of_or_none(ref: str) -> RefKind | None:
    """Like :func:`kind_of`, but None for a reference that is none of the three kinds."""
    if not isinstance(ref, str) or not ref.strip():
        return None
    if ref.startswith("tiny-"):
        return "tiny"
    if (
        ref.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or ref in (".", "..")
        or Path(ref).expanduser().is_dir()
        or ref.count("/") > 1
        or "\\" in ref
    ):
        return "local"
    if _HUB_ID.fullmatch(ref) and ".." not in ref:
        return "hub"
    return None


def kind_of(ref: str) -> RefKind:
    """What a model reference names.

    ``"tiny"`` for ``tiny-…`` names; ``"local"`` for an existing directory or anything path-like
    (absolute, ``./``, ``../``, ``~``, more than one ``/``); ``"hub"`` for ``org/name`` or
    ``name`` hub ids.

    Raises:
        ValueError: an empty or malformed reference, or an unknown ``tiny-…`` name.
    """
    kind = kind_of_or_none(ref)
    if kind is None:
        raise ValueError(
            f"model reference {ref!r} is not a hub id (org/name), a local directory or a "
            f"tiny-… name ({', '.join(sorted(TINY_BUILDERS))})"
        )
    if kind == "tiny" and ref not in TINY_BUILDERS:
        raise ValueError(
            f"unknown tiny model {ref!r}: known tiny models are {', '.join(sorted(TINY_BUILDERS))}"
        )
    return kind


def cache_dir(cache: str | Path | None = None) -> Path:
    """Where tiny models are built: ``cache``, else ``$IEA_MODEL_CACHE``, else
    ``~/.cache/iea/models``."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("IEA_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iea" / "models"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.cache
def _source_digest(modules: tuple[str, ...]) -> str:
    """8 hex digits of the code of ``modules`` (found without importing them), read once per
    process, so one run keeps one identity even if the files change under it. The code is the
    parsed syntax tree without its string statements (docstrings, attribute docstrings):
    editing a comment, a docstring or the layout keeps the models, any other edit renames
    them. (Python versions may dump a tree differently: then the cache builds anew.)"""
    import ast
    import hashlib
    import importlib.util

    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"tiny-model recipe module {name!r} not found")
        tree = ast.parse(Path(spec.origin).read_bytes(), filename=spec.origin)
        h.update(name.encode() + b"\0" + ast.dump(_without_docstrings(tree)).encode())
    return h.hexdigest()[:8]


def _without_docstrings(tree):
    """``tree`` with every statement that is only a string constant removed (a body left
    empty gets ``pass``)."""
    import ast

    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [
                st
                for st in body
                if not (
                    isinstance(st, ast.Expr)
                    and isinstance(st.value, ast.Constant)
                    and isinstance(st.value.value, str)
                )
            ]
            setattr(node, field, kept or [ast.Pass()])
    return tree


def tiny_identity(name: str, *, seed: int = 0) -> str:
    """The folder name of tiny model ``name`` at ``seed``: what its weights are, for cache keys
    (``<name>-seed<seed>-v<TINY_VERSION>``, plus ``-<hash of the recipe's source>`` for the
    trained recipes)."""
    if name not in TINY_BUILDERS:
        raise ValueError(
            f"unknown tiny model {name!r}: known tiny models are {', '.join(sorted(TINY_BUILDERS))}"
        )
    spec = TINY_BUILDERS[name]
    tail = f"-{_source_digest(spec.sources)}" if spec.sources else ""
    return f"{name}-seed{seed}-v{TINY_VERSION}{tail}"


def _built(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "spec.json").is_file()


def is_built(name: str, *, seed: int = 0, cache: str | Path | None = None) -> bool:
    """True when tiny model ``name`` at ``seed`` is complete in the cache (builds are renamed
    into place, so a folder that exists is whole)."""
    return _built(tiny_path(name, seed=seed, cache=cache))


def tiny_path(name: str, *, seed: int = 0, cache: str | Path | None = None) -> Path:
    """``<cache>/<tiny_identity(name, seed)>`` (whether or not it is built yet)."""
    if name not in TINY_BUILDERS:
        raise ValueError(
            f"unknown tiny model {name!r}: known tiny models are {', '.join(sorted(TINY_BUILDERS))}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return cache_dir(cache) / tiny_identity(name, seed=seed)


def ensure_tiny(
    name: str,
    *,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    skip_busy: bool = False,
) -> Path | None:
    """Build the tiny model ``name`` for ``seed`` unless it is already in the cache; its path.

    One process builds a model at a time: the build holds an exclusive lock on
    ``<cache>/.locks/<identity>.lock`` (``fcntl.flock``, released when the process dies), and a
    process that waited for it finds the model built and loads it, so several processes
    preparing the same models (test workers, flows starting together) share the work instead
    of repeating it. Builds of different models share the machine's cores through
    ``cores // RECIPE_THREADS`` build slots (one on 2 cores): two builds of 2 threads each on 2
    cores took about twice as long as one after the other. The build goes to a temporary
    sibling directory that is renamed into place, so a directory that exists is always complete.

    Args:
        skip_busy: when another process holds this model's lock or every build slot, return
            None at once instead of waiting.

    Returns:
        The model's directory, or None (only with ``skip_busy``, when another process is
        building it or all slots are taken).
    """
    final = tiny_path(name, seed=seed, cache=cache)
    if _built(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    locks = final.parent / ".locks"  # kept: unlinking a lock file others wait on is a race
    locks.mkdir(exist_ok=True)
    with (
        _build_lock(locks / f"{final.name}.lock", wait=not skip_busy) as held,
        _build_slot(locks, wait=not skip_busy, enter=held) as slot,
    ):
        if not (held and slot):
            return None
        if _built(final):  # built by the process we waited for
            return final
        if progress is not None:
            minutes = TINY_BUILDERS[name].minutes
            about = f", {minutes[0]:g}-{minutes[1]:g} min on 2 CPU cores" if minutes else ""
            progress(f"building {name} (seed {seed}) into {final.parent}: once per cache{about}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            builder = _builder(name)
            with recipe_threads():
                if progress is not None and "log" in inspect.signature(builder).parameters:
                    builder(tmp, seed, log=progress)  # a trained recipe reports its steps
                else:
                    builder(tmp, seed)
                (tmp / BUILD_FILE).write_text(json.dumps(build_machine(), indent=2) + "\n")
            BUILD_COUNTS[name] += 1
            try:
                os.rename(tmp, final)
            except OSError:
                if not _built(final):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


BUILD_FILE = "built_on.json"
"""Written next to each built tiny model: the machine that built it (:func:`build_machine`)."""


def build_machine() -> dict[str, Any]:
    """What decides a trained recipe's weights besides its source and seed: the CPU (its model
    name and vector extensions: float sums split another way give other weights), torch's
    version and the build's thread count. A number measured with a tiny model traces back to
    its weights through this record."""
    import platform

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = sorted(f for f in value.split() if f.startswith(("avx", "fma", "amx")))
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_vector_flags": flags,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


RECIPE_THREADS = 2
"""Torch CPU threads every tiny-model build runs with, whatever the caller's setting: a
trained recipe's weights depend on how its sums are split over threads, so a fixed count gives
the same model on any machine with this CPU, from the demo, a test worker with one thread, or
a 16-core box (where a build is then no faster than on 2 cores)."""


@contextlib.contextmanager
def recipe_threads(n: int = RECIPE_THREADS):
    """Run the block with ``torch.set_num_threads(n)``, restoring the caller's count after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_SLOT = threading.local()
"""``held`` is 1 while this thread holds a build slot (a recipe that built another tiny model
would otherwise wait forever for the slot it holds)."""


@contextlib.contextmanager
def _build_slot(locks: Path, *, wait: bool, enter: bool = True):
    """Hold one of ``cores // RECIPE_THREADS`` build slots (``locks/slot-<i>.lock``); yields
    False when ``wait`` is off and every slot is held, or when ``enter`` is False."""
    if not enter:
        yield False
        return
    if getattr(_SLOT, "held", 0):  # a build inside a build: the outer one's slot covers it
        yield True
        return
    n = max(1, len(_cores()) // RECIPE_THREADS)
    while True:
        for i in range(n):
            with _build_lock(locks / f"slot-{i}.lock", wait=False) as held:
                if held:
                    _SLOT.held = 1
                    try:
                        yield True
                    finally:
                        _SLOT.held = 0
                    return
        if not wait:
            yield False
            return
        time.sleep(0.5)


def _cores() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return set(range(os.cpu_count() or 1))


@contextlib.contextmanager
def _build_lock(path: Path, *, wait: bool):
    """Hold an exclusive ``flock`` on ``path``; yields False when ``wait`` is off and another
    process holds it. Where ``fcntl`` does not exist (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield True
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _builder(name: str) -> Callable[[str | Path, int], Path]:
    import importlib

    module, _, function = TINY_BUILDERS[name].builder.partition(":")
    return getattr(importlib.import_module(module), function)


def prepare_tiny(
    refs: Iterable[str],
    *,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    skip_busy: bool = False,
) -> list[str]:
    """Build every ``tiny-…`` reference of ``refs`` that is not in the cache yet.

    Meant to run before a flow starts, so that a one-time build (``tiny-qwen3-fgca`` trains for
    about 90 s) happens up front with a message, not inside a task. Other references are
    ignored (they are loaded, or fail with :class:`ModelNotAvailable`, where they are used).
    A model another process is building is waited for (:func:`ensure_tiny`), or, with
    ``skip_busy``, left to that process: several processes calling this with ``skip_busy``
    build different models at the same time.

    Returns:
        The names that were built now by this process (empty when all were cached).
    """
    built = []
    for ref in dict.fromkeys(refs):
        if kind_of_or_none(ref) != "tiny" or ref not in TINY_BUILDERS:
            continue
        if _built(tiny_path(ref, seed=seed, cache=cache)):
            continue
        before = BUILD_COUNTS[ref]
        ensure_tiny(ref, seed=seed, cache=cache, progress=progress, skip_busy=skip_busy)
        if BUILD_COUNTS[ref] > before:
            built.append(ref)
    return built


def _locate(ref: str, kind: RefKind, seed: int, cache: str | Path | None) -> tuple[str, str]:
    """(what to pass to from_pretrained, where it looked — for error messages)."""
    if kind == "tiny":
        path = ensure_tiny(ref, seed=seed, cache=cache)
        return str(path), f"the tiny-model cache directory {path}"
    if kind == "local":
        path = Path(ref).expanduser()
        where = f"the local directory {path}"
        if not path.is_dir():
            raise ModelNotAvailable(ref, where, "no such directory")
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(ref, where, "no config.json in it")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
            raise ModelNotAvailable(ref, where, "no *.safetensors weights in it")
        return str(path), where
    repo_dir = hf_hub_cache() / ("models--" + ref.replace("/", "--"))
    mode = "offline" if hub_offline() else "then the hub, which was not reachable or lacks it"
    return ref, f"the Hugging Face cache {repo_dir} ({mode})"


@functools.cache
def _weights_digest(folder: str, stamp: tuple) -> str:
    """sha256 over a model folder's weight files (their names and bytes); ``stamp`` (sizes
    and mtimes) keys the per-process cache, so a folder is read once unless it changes."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def base_fingerprint(ref: str, *, seed: int = 0, cache: str | Path | None = None) -> str:
    """What the base reference ``ref`` loads here: ``sha256:<16 hex>`` of a tiny or local
    model's ``*.safetensors``, ``revision:<commit>`` of a hub id found in the Hugging Face
    cache, or ``unknown`` (a hub id not cached). An adapter saved on one base refuses to load
    on another (:func:`iea.models.finetune.load_trained`)."""
    kind = kind_of(ref)
    if kind in ("tiny", "local"):
        source, _ = _locate(ref, kind, seed, cache)
        files = sorted(Path(source).glob("*.safetensors"))
        stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return "sha256:" + _weights_digest(str(Path(source).resolve()), stamp)
    main = hf_hub_cache() / ("models--" + ref.replace("/", "--")) / "refs" / "main"
    return f"revision:{main.read_text().strip()}" if main.is_file() else "unknown"


def _load(
    ref: str,
    auto_model: str,
    auto_processor: str,
    want: str,
    *,
    device: str | torch.device,
    dtype: str | torch.dtype,
    trust_remote_code: bool,
    cache: str | Path | None,
    seed: int,
) -> tuple[Any, Any]:
    kind = kind_of(ref)
    if kind == "tiny" and TINY_BUILDERS[ref].kind != want:
        have = TINY_BUILDERS[ref].kind
        use = {"vlm": "load_vlm", "causal_lm": "load_causal_lm", "sam": "iea.models.sam.load_sam"}
        raise ValueError(f"{ref!r} is a {have} tiny model, not a {want}: use {use[have]}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source, where = _locate(ref, kind, seed, cache)
    import transformers  # here: importing it takes seconds, and the checks above need none of it

    model_cls = getattr(transformers, auto_model)
    proc_cls = getattr(transformers, auto_processor)
    placement = {"device_map": {"": str(dev)}} if dev.type == "cuda" else {}
    # Hub ids: the cache first (no network, no retries), then the hub unless offline.
    attempts = [{}] if kind != "hub" else [{"local_files_only": True}]
    if kind == "hub" and not hub_offline():
        attempts.append({"local_files_only": False})
    for k, attempt in enumerate(attempts):
        common = {"trust_remote_code": bool(trust_remote_code), **attempt}
        if kind == "hub":
            common["cache_dir"] = str(hf_hub_cache())
        try:
            processor = proc_cls.from_pretrained(source, **common)
            model = model_cls.from_pretrained(
                source, dtype=torch_dtype, use_safetensors=True, **placement, **common
            )
            break
        except OSError as e:  # EnvironmentError: missing files, hub unreachable, not cached
            if k + 1 < len(attempts):
                continue
            raise ModelNotAvailable(ref, where, str(e).strip().splitlines()[0]) from e
    if not placement:
        model.to(dev)
    model.eval()
    LOAD_COUNTS[ref] += 1
    return model, processor


def load_vlm(
    ref: str,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    cache: str | Path | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Load an image-text-to-text model and its processor.

    Args:
        ref: a hub id, a local directory or ``tiny-qwen3-vl``.
        device: ``auto``/``cpu``/``cuda[:N]`` (see :func:`resolve_device`).
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        trust_remote_code: let transformers run code shipped with the checkpoint.
        cache: tiny-model cache directory (default :func:`cache_dir`).
        seed: tiny models only: the weights' seed.

    Returns:
        ``(model, processor)``: the model in eval mode on ``device``; the processor loaded
        from the same place.

    Raises:
        ModelNotAvailable: weights, config or processor files not found (or hub unreachable).
        ValueError: a malformed reference, device or dtype.
    """
    return _load(
        ref,
        "AutoModelForImageTextToText",
        "AutoProcessor",
        "vlm",
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        cache=cache,
        seed=seed,
    )


def load_causal_lm(
    ref: str,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    cache: str | Path | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (``ref``: hub id, local directory or ``tiny-qwen3``).

    Same arguments, behaviour and errors as :func:`load_vlm`; returns ``(model, tokenizer)``.
    """
    return _load(
        ref,
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "causal_lm",
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        cache=cache,
        seed=seed,
    )
