"""Compiled NumPyro-engine and EM programs kept on disk, so that a new process neither traces nor compiles them again.

JAX's persistent compilation cache skips XLA's compile in a new process, but not the tracing and lowering
that come first: for the enumerated NumPyro model that is most of the cost (measured on the seed problem,
warm cache: SVI 5.3 s of tracing + lowering against 1.05 s of cached compiles; MAP 2.2 s against 0.2 s; EM and
hard EM's in-memory programs 2.9 / 3.0 s -> 0.33 / 0.11 s loaded from here, ``inference.em``).
Here a compiled program is serialised (``jax.experimental.serialize_executable``) beside JAX's own cache,
under a key of: the builder, its static options, the arguments' tree and shapes, the versions of
jax / jaxlib / numpyro / funsor / numpy, the device kind and count, x64, ``XLA_FLAGS``, and a hash of every source file of
``models`` and ``inference`` (an edit to the model or an engine changes the key: no stale program).

On only where JAX's persistent cache is on (``jax_compilation_cache_dir`` set, as the command-line tools
do), on the CPU, for single-device programs and programs over a mesh of host devices (the rows split, from
20,000 rows; loaded onto the same devices, the key names their ids); ``GMM_EXECUTABLE_STORE=0`` turns it off.
At (50,000, 8, 4) on 2 host devices MAP's compile went from 10.8 s to 0.6 s in a second process. jaxlib loads its
LAPACK function pointers lazily, when a program using them is first lowered: a deserialised program that
calls them before that crashes the process (segmentation fault, seen), so :func:`load` lowers a small
Cholesky first. A file that cannot be read
or loaded is ignored (the program is compiled as usual), one that loads but fails on its first run is removed and
the program compiled again (``_FirstRunChecked``); writes are atomic (a temporary file, renamed).

Loading is itself ~0.18 s a program at optimisation level 0 (the default report loads 14): :func:`remember_recent`
records which programs a run used (``recent-programs.json``, with the environment's digest) and the next run's
:func:`prefetch_recent` deserialises them on a background thread, which releases the GIL, while the main thread
samples and fits. :func:`stored_call` keeps any jitted function's program here (the report's samplers).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import os
import pickle
import tempfile

import jax

from inference.compiled_cache import remember_compiled

SUBDIR = "gmm-executables"


@functools.lru_cache(maxsize=1)
def _environment() -> str:
    """The versions, device and source hash every key includes (computed once per process)."""
    import importlib.metadata as metadata

    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("models", "inference"):
        folder = os.path.join(root, package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + f.read())
    versions = []
    for dist in ("jax", "jaxlib", "numpyro", "funsor", "numpy"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}=?")
    device = jax.devices()[0]
    return (f"{digest.hexdigest()}|{'|'.join(versions)}|{device.platform}|{device.device_kind}|{jax.device_count()}"
            f"|x64={jax.config.jax_enable_x64}|threefry={getattr(jax.config, 'jax_threefry_partitionable', None)}"
            f"|XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")


def store_dir() -> str | None:
    """Where programs are kept: ``<jax_compilation_cache_dir>/gmm-executables``, or None (store off)."""
    base = getattr(jax.config, "jax_compilation_cache_dir", None)
    if (not base or os.environ.get("GMM_EXECUTABLE_STORE", "1") == "0" or jax.devices()[0].platform != "cpu"
            or getattr(jax.config, "jax_default_device", None) is not None):
        return None
    return os.path.join(os.fspath(base), SUBDIR)


def _path(key) -> str | None:
    where = store_dir()
    if where is None:
        return None
    name = hashlib.sha256(f"{_environment()}||{key!r}".encode()).hexdigest()
    return os.path.join(where, name + ".pkl")


@functools.lru_cache(maxsize=1)
def _lapack_ready() -> None:
    """Lower (not run) a Cholesky: jaxlib initialises its LAPACK kernels then (``prepare_lapack_call``)."""
    import jax.numpy as jnp

    jax.jit(jnp.linalg.cholesky).lower(jnp.eye(2))


def signature(args) -> tuple:
    """The tree and every leaf's shape and dtype of ``args``: with the static options, what a program is compiled for
    (a repr-stable part of a store key; ``inference._numpyro_common.compiled_call`` and :func:`stored_call`)."""
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(args)
    return (tree, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))


def _device_ids(devices) -> tuple:
    return tuple(int(d.id) for d in (jax.devices()[:1] if devices is None else devices))


def _deserialize(path: str, device_ids: tuple):
    from jax.experimental.serialize_executable import deserialize_and_load

    _lapack_ready()
    with open(path, "rb") as f:
        payload, in_tree, out_tree = pickle.load(f)
    by_id = {int(d.id): d for d in jax.devices()}
    # one device: the default one (deserialize_and_load would spread it over every device: 2 host devices
    # made it expect 2 shards per argument)
    return deserialize_and_load(payload, in_tree, out_tree, execution_devices=[by_id[i] for i in device_ids])


def load(key, devices=None):
    """The stored executable for ``key`` (a repr-stable tuple), or None; ``devices``: the devices it runs on (a
    mesh's, in its order), default the first one. One that :func:`prefetch_recent` is loading is waited for."""
    path = _path(key)
    if path is None:
        return None
    entry = (os.path.basename(path), _device_ids(devices))
    future = _PREFETCHED.pop(entry, None)
    executable = None
    if future is not None:
        try:
            executable = future.result()
        except Exception:  # loaded again below, or compiled
            executable = None
    if executable is None:
        if not os.path.exists(path):
            return None
        try:
            executable = _deserialize(path, entry[1])
        except Exception:  # a damaged or foreign file: compile as usual
            return None
    _USED.append(entry)
    return executable


# --------------------------------------------------------------------------- prefetching a run's programs

RECENT_FILE = "recent-programs.json"
RECENT_MAX = 64
_USED: collections.deque = collections.deque(maxlen=4 * RECENT_MAX)  # (file name, device ids) loaded or kept here
_PREFETCHED: dict = {}  # (file name, device ids) -> Future of the executable


def _environment_digest() -> str:
    return hashlib.sha256(_environment().encode()).hexdigest()


def prefetch_recent() -> int:
    """Start deserialising, on one background thread, the programs that the last run calling :func:`remember_recent`
    under this same environment used (a report's engines, in the order they ran); :func:`load` then waits for its
    program instead of reading it. Deserialising releases the GIL (measured: the default report's three largest
    programs, 1.5 s, overlapped a pure-Python loop of 1.3 s in 1.33 s), so the loading runs beside the sampling and
    the first fits. Returns how many were started (0: the store is off, no record, another environment)."""
    where = store_dir()
    if where is None or _PREFETCHED:
        return 0
    try:
        with open(os.path.join(where, RECENT_FILE)) as f:
            recent = json.load(f)
        if recent.get("environment") != _environment_digest():
            return 0
        known = {int(d.id) for d in jax.devices()}
        entries = [(str(name), tuple(int(i) for i in ids)) for name, ids in recent["programs"]]
    except Exception:  # no record yet, or an unreadable one
        return 0
    entries = [e for e in dict.fromkeys(entries) if set(e[1]) <= known and os.path.exists(os.path.join(where, e[0]))]
    if not entries:
        return 0
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="gmm-prefetch")
    for entry in entries:
        _PREFETCHED[entry] = pool.submit(_deserialize, os.path.join(where, entry[0]), entry[1])
    pool.shutdown(wait=False)
    return len(entries)


def _drop_prefetched() -> None:
    for future in _PREFETCHED.values():
        future.cancel()
    _PREFETCHED.clear()


def remember_recent() -> None:
    """Record the programs this process loaded or kept (the last ``RECENT_MAX``) for the next :func:`prefetch_recent`,
    and drop prefetched programs nobody asked for. Failures are ignored."""
    _drop_prefetched()
    where = store_dir()
    if where is None or not _USED:
        return
    programs = [[name, list(ids)] for name, ids in dict.fromkeys(_USED)][-RECENT_MAX:]
    try:
        os.makedirs(where, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"environment": _environment_digest(), "programs": programs}, f)
        os.replace(tmp, os.path.join(where, RECENT_FILE))
    except Exception:
        return


_CACHE_HITS = [0]  # JAX's persistent-cache hits seen in this process (jax.monitoring)


def _on_event(event, *args, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _CACHE_HITS[0] += 1


@functools.lru_cache(maxsize=1)
def _listening() -> None:
    jax.monitoring.register_event_listener(_on_event)


@contextlib.contextmanager
def fresh_compile():
    """Around the compile of a program that will be stored; yields ``{"fresh": bool, "options": dict}``, "fresh" set
    on exit.

    An executable that JAX itself read back from its persistent cache serialises without its compiled kernels
    (a later process failed with ``NOT_FOUND: Function iota_convert_fusion not found``; reproduced on jax 0.10
    and 0.12), so only fresh compiles may be stored: JAX's cache is switched off meanwhile (config, then
    ``reset_cache`` so that JAX reads the config again; both again on exit), and a cache hit seen by
    ``jax.monitoring`` still vetoes the store. The compile inside must also pass :data:`FRESH_OPTIONS` (as
    :func:`load_or_compile` does): JAX's in-memory compile cache would otherwise hand back a program compiled
    earlier in this process, perhaps read from the persistent cache then."""
    state = {"fresh": False, "options": {}}  # options: what the compile inside must add (FRESH_OPTIONS when storing)
    if store_dir() is None or not _fresh_options_accepted():
        yield state
        return
    from jax.experimental.compilation_cache.compilation_cache import reset_cache

    _listening()
    hits = _CACHE_HITS[0]
    before = jax.config.jax_enable_compilation_cache
    # JAX decides once whether its cache is on (compilation_cache.is_cache_used) and ignores later config
    # changes until reset_cache(): without the reset a program JAX had cached before was read back here,
    # vetoed, and so never stored (MAP at 50,000 rows traced and lowered in every process, 3-4 s)
    jax.config.update("jax_enable_compilation_cache", False)
    reset_cache()
    state["options"] = dict(FRESH_OPTIONS)
    try:
        yield state
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        reset_cache()
    state["fresh"] = _CACHE_HITS[0] == hits


# An XLA option at its default value: no effect on the program, but a key that no compile outside fresh_compile
# uses. JAX's in-memory compile cache (pxla._cached_compilation, keyed by the lowered module, which the tracing and
# lowering caches share between calls, and by the compiler options) then compiles afresh. Without it a jitted
# sampler called plainly in a process whose persistent cache held it, then through stored_call, was stored
# kernel-less; the next read-back failed at dispatch ("Function slice_bitcast_fusion.6 not found", jax 0.12.0.1;
# CI's "wrapped_reduce-window not found").
FRESH_OPTIONS = {"xla_embed_ir_in_executable": False}


@functools.lru_cache(maxsize=1)
def _fresh_options_accepted() -> bool:
    """Whether this jaxlib compiles with :data:`FRESH_OPTIONS` (if not, nothing is stored: freshness unknown)."""
    try:
        jax.jit(lambda a: a + 1).lower(jax.numpy.zeros(2)).compile(compiler_options=dict(FRESH_OPTIONS))
        return True
    except Exception:  # noqa: BLE001 - any refusal: store nothing
        return False


def save(key, executable) -> str | None:
    """Keep ``executable`` (a ``jax.stages.Compiled``) for ``key``: the file written, or None (store off, or a failure,
    which is ignored)."""
    path = _path(key)
    if path is None:
        return None
    try:
        from jax.experimental.serialize_executable import serialize

        blob = pickle.dumps(serialize(executable))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except Exception:
        return None
    return path


def load_or_compile(key, compile, devices=None):
    """``(executable, loaded)``: the stored executable for ``key`` (``loaded`` True), else ``compile(options)`` (a
    ``jax.stages.Compiled``; ``options``: XLA options to add to the program's own), stored when it was a fresh
    compile. ``key`` None: ``compile({})``, nothing read or kept (JAX's own persistent cache stays on for it).
    ``devices`` as in :func:`load`."""
    if key is None:
        return compile({}), False
    executable = load(key, devices)
    if executable is not None:
        return _FirstRunChecked(executable, key, compile, devices), True
    return _compile_and_save(key, compile, devices), False


def _compile_and_save(key, compile, devices):
    with fresh_compile() as compiled:  # only fresh compiles are stored (see there)
        executable = compile(compiled["options"])
    path = save(key, executable) if compiled["fresh"] else None
    if path is not None:
        _USED.append((os.path.basename(path), _device_ids(devices)))
    return executable


class _FirstRunChecked:
    """A program read from the store whose first run is waited for: one that loads but cannot run (a file written
    without its kernels fails only at dispatch, "Function ... not found": session 13's CI) is removed from the store
    and compiled afresh, and the call runs again, once (the programs are pure: nothing is donated). Later calls go
    straight to the program."""

    def __init__(self, executable, key, compile, devices):
        self._executable, self._retry = executable, (key, compile, devices)

    def __call__(self, *args):
        if self._retry is None:
            return self._executable(*args)
        key, compile, devices = self._retry
        try:
            out = jax.block_until_ready(self._executable(*args))
        except jax.errors.JaxRuntimeError as error:
            path = _path(key)
            try:
                if path is not None:
                    os.remove(path)
            except OSError:
                pass
            import warnings

            warnings.warn(f"a stored program could not run ({' '.join(str(error).split())[:160]}); it was removed and "
                          "compiled again", RuntimeWarning, stacklevel=2)
            self._executable = _compile_and_save(key, compile, devices)
            out = self._executable(*args)
        self._retry = None
        return out


_PROGRAMS: dict = {}  # stored_call's executables in this process, by signature


def stored_call(program, static_argnums: tuple, *args):
    """``program(*args)`` for a ``jax.jit`` function ``program`` with these ``static_argnums``, its executable read
    from the store (or compiled and kept) once per static values and argument shapes, and kept for the process.

    The caller for ``models.predictive.programs_called_by``: the report's simulated data and predictive draws. With
    the store off (:func:`store_dir` None) it is ``program(*args)``."""
    if store_dir() is None:
        return program(*args)
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    key = (getattr(program, "__module__", ""), getattr(program, "__qualname__", repr(program)),
           tuple(args[i] for i in static_argnums), signature(dynamic))
    executable = _PROGRAMS.get(key)
    if executable is None:
        executable, _ = load_or_compile(("stored_call",) + key, lambda options: program.lower(*args).compile(compiler_options=options or None))
        remember_compiled(_PROGRAMS, key, executable)
    return executable(*dynamic)


def clear_programs() -> None:
    """Forget :func:`stored_call`'s executables and the prefetched ones of this process (tests)."""
    _PROGRAMS.clear()
    _drop_prefetched()


__all__ = ["SUBDIR", "store_dir", "signature", "load", "fresh_compile", "save", "load_or_compile", "FRESH_OPTIONS", "stored_call", "clear_programs",
           "prefetch_recent", "remember_recent", "RECENT_FILE"]
