"""The model's samplers through the executable store (issue 23): the report's simulated data and predictive draws
are read back compiled in a new process instead of traced again, and are the same draws as the plain call."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from inference import executable_store
from models import predictive


@pytest.fixture
def store(tmp_path):
    """JAX's cache directory (and so the executable store) in ``tmp_path`` for one test, then as it was."""
    from jax.experimental.compilation_cache.compilation_cache import reset_cache

    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    reset_cache()  # JAX reads the directory again: an earlier test's cache is not used here
    executable_store.clear_programs()
    try:
        yield tmp_path / executable_store.SUBDIR
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        reset_cache()  # JAX reads the restored config again: later tests in this process do not write here
        executable_store.clear_programs()


TRACES = []


@functools.partial(jax.jit, static_argnums=(1,))
def _scaled(x, factor):
    TRACES.append(factor)  # runs only while tracing
    return jnp.cumsum(x) * factor


def test_stored_call_reads_the_program_back_without_tracing(store):
    x = np.arange(5.0)
    TRACES.clear()
    first = executable_store.stored_call(_scaled, (1,), x, 3)
    assert TRACES == [3] and len(list(store.glob("*.pkl"))) == 1
    executable_store.clear_programs()  # as a new process: only the file is left
    again = executable_store.stored_call(_scaled, (1,), x, 3)
    assert TRACES == [3]  # read back, not traced
    np.testing.assert_array_equal(np.asarray(again), np.cumsum(x) * 3)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    executable_store.stored_call(_scaled, (1,), x, 4)  # another static value: another program
    assert TRACES == [3, 4] and len(list(store.glob("*.pkl"))) == 2


def test_stored_call_is_the_plain_call_where_the_store_is_off(monkeypatch):
    monkeypatch.setattr(executable_store, "store_dir", lambda: None)
    TRACES.clear()
    np.testing.assert_array_equal(np.asarray(executable_store.stored_call(_scaled, (1,), np.ones(3), 2)), [2.0, 4.0, 6.0])
    assert executable_store._PROGRAMS == {}


def test_samplers_draw_the_same_through_the_store(store):
    truth = models.seed_problem()
    key = jax.random.PRNGKey(7)
    draws = models.GMMParams(*(np.stack([np.asarray(a)] * 3) for a in truth))  # (3,) leading: three draws
    plain = (models.sample(key, truth, 40), models.sample_posterior_predictive(key, draws, 30),
             models.sample_posterior_predictive(key, truth, 30, num_replicates=4),
             models.sample_prior(key, 5, 20, 2, 3, concentration=2.0))
    seen = []

    def caller(program, static_argnums, *args):
        seen.append(program)
        return executable_store.stored_call(program, static_argnums, *args)

    for _ in range(2):  # compiled and kept, then read back from the files
        executable_store.clear_programs()
        with predictive.programs_called_by(caller):
            stored = (models.sample(key, truth, 40), models.sample_posterior_predictive(key, draws, 30),
                      models.sample_posterior_predictive(key, truth, 30, num_replicates=4),
                      models.sample_prior(key, 5, 20, 2, 3, concentration=2.0))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(stored)):
            assert a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(seen) == 8 and len(list(store.glob("*.pkl"))) == 4
    assert plain[2][0].shape == (4, 30, 2) and plain[1][0].shape == (3, 30, 2)
    # outside the block the plain jitted call again
    seen.clear()
    models.sample(key, truth, 40)
    assert seen == []


def test_the_last_runs_programs_are_prefetched_and_used(store):
    x = np.arange(4.0)
    TRACES.clear()
    executable_store._USED.clear()
    executable_store.stored_call(_scaled, (1,), x, 5)  # compiled and kept: recorded
    executable_store.remember_recent()
    record = store / executable_store.RECENT_FILE
    assert record.exists()
    executable_store.clear_programs()  # as a new process
    assert executable_store.prefetch_recent() == 1 and len(executable_store._PREFETCHED) == 1
    again = executable_store.stored_call(_scaled, (1,), x, 5)
    assert TRACES == [5] and executable_store._PREFETCHED == {}  # the prefetched program was taken, nothing traced
    np.testing.assert_array_equal(np.asarray(again), np.cumsum(x) * 5)
    # a record written under another environment (sources, versions, devices, flags) is not read
    text = record.read_text()
    record.write_text(text.replace(executable_store._environment_digest(), "0" * 64))
    executable_store.clear_programs()
    assert executable_store.prefetch_recent() == 0
    record.write_text("not json")
    assert executable_store.prefetch_recent() == 0


def _plain_then_stored(cache, mode: str) -> dict:
    """``tests/scale_scripts/plain_then_stored.py`` in a new process with ``cache`` as JAX's cache directory: its JSON."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "tests", "scale_scripts", "plain_then_stored.py")
    out = subprocess.run([sys.executable, script, str(cache), mode], capture_output=True, text=True, cwd=root,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_program_jax_read_from_its_cache_is_compiled_afresh_before_it_is_stored(tmp_path):
    """CI, session 13 (jax 0.12.0.1): a sampler called plainly in a process whose persistent cache held it came back
    from JAX's in-memory compile cache when ``stored_call`` compiled it, kernel-less; the file then failed at dispatch
    ("Function wrapped_reduce-window not found"; reproduced on jax 0.10.2 too). ``load_or_compile`` compiles with
    ``FRESH_OPTIONS``: the program read back runs and draws what the plain call drew."""
    run = functools.partial(_plain_then_stored, tmp_path)

    first = run("plain")  # writes JAX's persistent cache
    second = run("stored")  # reads it back, then keeps the program and reads that back
    assert second["files"] == 1
    assert first["plain"] == second["plain"] == second["kept"] == second["read_back"]


def test_a_stored_program_that_cannot_run_is_compiled_again(tmp_path):
    """A file that loads but fails at dispatch (kept without its kernels, as the code before FRESH_OPTIONS kept it:
    "Function ... not found") is removed and compiled afresh on its first run, with a RuntimeWarning (a note in the
    report); the draws are the plain call's, and the next process reads the new file."""
    run = functools.partial(_plain_then_stored, tmp_path)

    first = run("plain")
    poisoned = run("poisoned")
    assert poisoned["healed"] == first["plain"]
    assert len(poisoned["warnings"]) == 1 and "could not run" in poisoned["warnings"][0], poisoned["warnings"]
    assert poisoned["kept"] == poisoned["read_back"] == first["plain"] and poisoned["files"] == 1
    again = run("stored")
    assert again["kept"] == again["read_back"] == first["plain"]


def test_keys_and_pointwise_log_likelihood_through_the_store_are_the_plain_calls(store):
    """inference.random_keys: ``split_key`` / ``seed_key`` are ``jax.random.split`` / ``fold_in(PRNGKey(seed), 0)``
    bit for bit, compiled and kept, then read back; the draws' pointwise log-likelihood within
    ``programs_called_by(stored_call)`` is the plain call's, bit for bit (a narrow component far from the rows
    takes the exact path)."""
    from inference.random_keys import seed_key, split_key
    from models.density import draws_pointwise_log_likelihood
    from models.program_caller import programs_called_by

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3)) * 2.0 + 1e3
    weights = rng.dirichlet(np.ones(2), size=5)
    means = rng.normal(size=(5, 2, 3)) + 1e3
    scale_tril = np.tril(rng.normal(size=(5, 2, 3, 3)), -1) * 0.3 + np.eye(3) * rng.uniform(0.5, 1.5, size=(5, 2, 1, 1))
    means[1, 0] += 1e4
    scale_tril[1, 0] = np.eye(3) * 1e-3
    draws = models.GMMParams(weights, means, scale_tril)
    plain = np.concatenate([v for _, v in draws_pointwise_log_likelihood(draws, x, max_values=300)])
    assert np.isfinite(plain).all()
    for _ in range(2):  # compiled and kept, then read back from the files
        executable_store.clear_programs()
        for seed in (0, 7, 2**32 + 5):
            key = jax.random.PRNGKey(seed)
            np.testing.assert_array_equal(np.asarray(seed_key(seed)), np.asarray(jax.random.fold_in(key, 0)))
            for num in (2, 3):
                np.testing.assert_array_equal(np.asarray(split_key(key, num)), np.asarray(jax.random.split(key, num)))
        with programs_called_by(executable_store.stored_call):
            stored = np.concatenate([v for _, v in draws_pointwise_log_likelihood(draws, x, max_values=300)])
        np.testing.assert_array_equal(stored, plain)
    assert len(list(store.glob("*.pkl"))) == 5  # seed_key, split by 2 and by 3, the features, the table
    typed = jax.random.key(1)  # a typed key is split as JAX splits it
    assert jnp.issubdtype(split_key(typed, 2).dtype, jax.dtypes.prng_key)
