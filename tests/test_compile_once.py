"""Programs that do not depend on N (issue 23): EM compiles once per row bucket, not once per row count.

References: the number of compiled EM executables (``inference.em._COMPILED``) and the fit with the
padding written out as zero-weight rows (padding must change nothing)."""

import re

import jax
import numpy as np
import pytest

from inference import em, fit
from inference.rows import row_bucket


def _data(n, seed=0):
    r = np.random.default_rng(seed)
    return np.concatenate([r.normal(-2, 1, (n // 2, 2)), r.normal(2, 0.7, (n - n // 2, 2))])


def test_cross_validation_folds_compile_one_em_program():
    """A 3-fold CV over one K: training folds of 333, 333 and 334 rows share one program."""
    x = _data(500, seed=1)
    folds = np.array_split(np.random.default_rng(0).permutation(500), 3)
    em._COMPILED.clear()
    compile_seconds = []
    for held_out in folds:
        train = np.setdiff1d(np.arange(500), held_out)
        result = fit("em", jax.random.PRNGKey(0), x[train], 2, n_init=2)
        compile_seconds.append(result.info["compile_seconds"])
        assert result.info["num_rows"] == len(train) and result.responsibilities.shape == (len(train), 2)
    assert len(em._COMPILED) == 1
    assert compile_seconds[0] > 0 and compile_seconds[1:] == [0.0, 0.0]


def test_a_sweep_over_sample_sizes_compiles_at_most_five_programs():
    em._COMPILED.clear()
    sizes = np.unique(np.geomspace(100, 10_000, 20).astype(int))
    for n in sizes:
        fit("em", jax.random.PRNGKey(0), _data(int(n)), 2, max_iters=5)
    assert len(sizes) == 20 and len(em._COMPILED) <= 5
    assert len(em._COMPILED) == len({row_bucket(int(n), 2, 8) for n in sizes})


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("init", ["kmeans++", "random_from_data", "kmeans"])
def test_padding_changes_no_result(method, init):
    """300 rows run in a 1024-row program; the same rows followed by 724 rows of weight 0 (the padding,
    written out) give the same fit to 1e-12."""
    x = _data(300, seed=2)
    filler = np.random.default_rng(3).normal(0, 5, (724, 2))
    a = fit(method, jax.random.PRNGKey(4), x, 2, init=init)
    b = fit(method, jax.random.PRNGKey(4), np.concatenate([x, filler]), 2, init=init,
            sample_weight=np.r_[np.ones(300), np.zeros(724)])
    assert a.info["compiled_rows"] == 1024 and b.info["compiled_rows"] == 1024
    for got, want in zip(b.params, a.params):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.trace["log_likelihood"], a.trace["log_likelihood"], rtol=1e-12)
    np.testing.assert_allclose(b.responsibilities[:300], a.responsibilities, rtol=1e-12, atol=1e-12)


def test_a_grid_over_k_compiles_one_em_program():
    """The README's GridSearchCV (K = 1..5, cv = 3, n_init = 2, 500 rows): 15 fits, one EM program (K padded
    to 8 component slots of which 8 - K have weight 0), where it compiled one per K before."""
    from sklearn.model_selection import GridSearchCV

    from inference import GaussianMixture

    em._COMPILED.clear()
    search = GridSearchCV(GaussianMixture(random_state=0, n_init=2), {"n_components": [1, 2, 3, 4, 5]}, cv=3)
    search.fit(_data(500, seed=5))
    assert len(em._COMPILED) == 1
    assert search.best_params_["n_components"] >= 2


def _same_fit(a, b, tol=1e-12):
    assert a.num_iters == b.num_iters and a.converged == b.converged
    for got, want in zip(a.params, b.params):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    scale = np.max(np.abs(b.trace["log_likelihood"]))  # kl = log-likelihood - elbo: relative to the terms
    for name in b.trace:
        np.testing.assert_allclose(a.trace[name], b.trace[name], rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(a.responsibilities, b.responsibilities, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_component_padding_changes_no_result(method, covariance_type):
    """K = 3 run in 8 component slots (5 of weight 0) equals the program compiled for exactly 3 components
    to 1e-12: parameters, every trace, responsibilities, iterations and flags (k-means init: k-means++,
    Lloyd and the closing M-step all see the padding; two starts)."""
    x = _data(400, seed=6)
    run = lambda pad: fit(method, jax.random.PRNGKey(7), x, 3, covariance_type=covariance_type, init="kmeans",
                          n_init=2, pad_components=pad)
    padded, exact = run(True), run(False)
    assert padded.info["component_slots"] == 8 and exact.info["component_slots"] == 3
    assert padded.params.means.shape == (3, 2) and padded.responsibilities.shape == (400, 3)
    _same_fit(padded, exact)
    events = "empty_cluster_events" if method == "hard_em" else "collapsed_components"
    assert padded.info[events] == exact.info[events]
    assert padded.info["snapshots"].means.shape[1:] == (3, 2)


def test_component_padding_keeps_hard_em_reseeding_to_real_components():
    """Hard EM started with a component far from every row: it empties, is re-seeded at the worst-explained
    row (one event), and the 5 padded slots, empty too, are never re-seeded: same fit as exactly K = 3."""
    from models.params import GMMParams

    x = _data(300, seed=8)
    start = GMMParams(np.full(3, 1 / 3), np.array([[-2.0, 0.0], [2.0, 0.0], [500.0, 500.0]]), np.stack([np.eye(2)] * 3))
    run = lambda pad: fit("hard_em", jax.random.PRNGKey(0), x, 3, init=start, pad_components=pad)
    padded, exact = run(True), run(False)
    assert padded.info["component_slots"] == 8
    assert exact.info["empty_cluster_events"] >= 1
    assert padded.info["empty_cluster_events"] == exact.info["empty_cluster_events"]
    _same_fit(padded, exact)


def test_component_slots_pad_only_small_complete_in_memory_data(tmp_path):
    """Padding K multiplies every pass's work, so it is used where compiling dominates: small complete data
    in memory. Large data, NaN holes and files run exactly K."""
    x = _data(500)
    assert em.component_slots(3, x) == 8 and em.component_slots(9, x) == 16 and em.component_slots(8, x) == 8
    assert em.component_slots(3, x, pad_components=False) == 3
    assert em.component_slots(2, np.zeros((200_000, 8))) == 2  # 262,144-row bucket x 8 x 45 features > PAD_MAX_WORK
    holes = x.copy()
    holes[0, 0] = np.nan
    assert em.component_slots(3, holes) == 3
    np.save(tmp_path / "x.npy", x)
    assert em.component_slots(3, str(tmp_path / "x.npy")) == 3
    result = fit("em", jax.random.PRNGKey(0), holes, 3, max_iters=3)
    assert result.info["component_slots"] == 3


def test_streamed_files_of_any_length_share_one_program(tmp_path):
    """The streamed fold reads a traced number of chunks: files of 3,000 and 70,000 rows (same columns,
    dtype and chunking) run the same executable; this is what makes the streamed memory test's warm-up
    on a small file cover the large one (tests/test_scale.py)."""
    for n in (3_000, 70_000):
        np.save(tmp_path / f"x{n}.npy", _data(n, seed=n))
    first = fit("em", jax.random.PRNGKey(0), str(tmp_path / "x3000.npy"), 2, max_iters=3, chunk_size=1024)
    second = fit("em", jax.random.PRNGKey(0), str(tmp_path / "x70000.npy"), 2, max_iters=3, chunk_size=1024)
    assert second.info["compile_seconds"] == 0.0 and second.info["num_rows"] == 70_000
    in_memory = fit("em", jax.random.PRNGKey(0), _data(70_000, seed=70_000), 2, max_iters=3, chunk_size=1024)
    np.testing.assert_allclose(second.trace["log_likelihood"], in_memory.trace["log_likelihood"], rtol=1e-10)
    assert first.info["compiled_rows"] is None


def test_svi_programs_have_no_host_callback_so_the_persistent_cache_keeps_them():
    """JAX does not write an executable with a host callback to its persistent compilation cache
    (``jax._src.compiler._cache_write``); SVI's progress bar used to be one (``jax.debug.callback``), so every
    new process recompiled SVI (16.6 s warm against 25 s cold on the seed problem). The bar now advances
    between host calls: none of SVI's (or MAP's) compiled programs may hold a callback."""
    from inference import _numpyro_common as common

    common.clear_compiled_cache()
    result = fit("svi", jax.random.PRNGKey(1), _data(300), 2, num_steps=400, check_every=100, progress=True, num_draws=50)
    assert result.num_iters > 0
    programs = {key[1]: executable for key, executable in common._COMPILED.items()}
    assert any(name.startswith("_build_svi_segment") for name in programs), sorted(programs)
    for name, executable in programs.items():  # a host callback is a custom call to *callback (not metadata)
        assert not re.search(r'custom_call_target="[^"]*callback', executable.as_text()), name


def test_a_new_process_neither_traces_nor_compiles_svi_again(tmp_path):
    """inference.executable_store: with JAX's persistent cache on and 2 host devices (as gmm-report sets them;
    a stored single-device program once came back spread over both), a second process
    loads SVI's (and its MAP start's), EM's and hard EM's compiled programs from disk: its compile time is a fraction of the
    first's (which traces, lowers and compiles) and its numbers are the same, bit for bit."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "tests", "scale_scripts", "warm_process.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # as gmm-report
    def run(cache, store):
        out = subprocess.run([sys.executable, script, str(cache)], capture_output=True, text=True, cwd=root,
                             timeout=600, env={**env, "GMM_EXECUTABLE_STORE": store})
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    # JAX's own cache first (store off): an executable JAX reads back from its cache serialises without its
    # kernels (a third process failed: "Function ... not found"), so such a program must never be stored
    first = [run(tmp_path / "jax_first", store) for store in ("0", "1", "1")]
    assert all(r["svi_means"] == first[0]["svi_means"] and r["svi_loss"] == first[0]["svi_loss"] for r in first)
    cold, warm = run(tmp_path, "1"), run(tmp_path, "1")
    assert os.listdir(tmp_path / "gmm-executables")
    # measured: 28.6 s cold, 1.8 s warm; with the store off (JAX's persistent cache only) 27.2 s and 7.1 s
    assert warm["svi_compile"] < 0.15 * cold["svi_compile"], (cold["svi_compile"], warm["svi_compile"])
    assert warm["svi_means"] == cold["svi_means"] and warm["svi_loss"] == cold["svi_loss"]
    # a program over a mesh of both host devices (MAP / SVI / NUTS from 20,000 rows) is stored and loaded too
    assert cold["map_devices"] == warm["map_devices"] and len(cold["map_devices"]) == 2
    assert warm["map_compile"] < 0.15 * cold["map_compile"], (cold["map_compile"], warm["map_compile"])
    assert warm["map_means"] == cold["map_means"] and warm["map_loss"] == cold["map_loss"]
    # EM and hard EM (in-memory rows on the default mesh of both devices): measured 2.9 / 3.0 s cold, 0.33 / 0.11 s
    # warm (a LAPACK warm-up lowering is part of the first load)
    for method in ("em", "hard_em"):
        assert warm[f"{method}_compile"] < 0.3 * cold[f"{method}_compile"], (method, cold[f"{method}_compile"], warm[f"{method}_compile"])
        assert warm[f"{method}_means"] == cold[f"{method}_means"] and warm[f"{method}_ll"] == cold[f"{method}_ll"]


def test_the_fast_compile_flags_start_jax_on_the_installed_jaxlib():
    """``gmm-report`` on a small simulated problem sets ``analysis.cli.fast_compile_flags()`` (with one host device
    per core) before JAX starts. XLA ends the process on a flag it does not know (jaxlib 0.12 dropped
    ``--xla_cpu_use_fusion_emitters``): the flags must start JAX on whatever jaxlib is installed, and the emitter
    switch is there exactly on jaxlib 0.10.x (where it halves the NumPyro engines' cold compiles)."""
    import os
    import subprocess
    import sys
    from importlib.metadata import version

    from analysis.cli import NO_FUSION_EMITTERS_FLAG, fast_compile_flags

    flags = fast_compile_flags()
    assert (NO_FUSION_EMITTERS_FLAG in flags) == version("jaxlib").startswith("0.10.")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; print(len(jax.devices()), float(jnp.ones(3).sum()))"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "3.0"]


def test_nuts_segment_alone_is_compiled_with_full_optimisation(monkeypatch):
    """The report's small problems compile at XLA optimisation level 0 (``analysis.cli.FAST_COMPILE_FLAG``); NUTS's
    segment, which runs thousands of steps, asks ``compiled_call`` for level 3 and its start does not; the option
    reaches the compiler (``compile_on_mesh``'s extra options) and keys a program of its own."""
    from inference import _numpyro_common, nuts_chains

    asked, compiled = [], []
    original_call, original_compile = _numpyro_common.compiled_call, _numpyro_common.compile_on_mesh

    def recording_call(build, static, *args, optimized=False, **kwargs):
        asked.append((build.__name__, optimized))
        return original_call(build, static, *args, optimized=optimized, **kwargs)

    def recording_compile(fn, mesh, args, extra_options=None):
        compiled.append(dict(extra_options or {}))
        return original_compile(fn, mesh, args, extra_options)

    monkeypatch.setattr(nuts_chains, "compiled_call", recording_call)
    monkeypatch.setattr(_numpyro_common, "compile_on_mesh", recording_compile)
    monkeypatch.setenv("GMM_EXECUTABLE_STORE", "0")
    _numpyro_common.clear_compiled_cache()
    x = _data(60, seed=6)
    fit("nuts", jax.random.PRNGKey(0), x, 2, num_warmup=20, num_samples=20, num_chains=1, laplace_mass=False)
    assert set(asked) == {("_build_chain_init", False), ("_build_chain_segment", True)}
    level = _numpyro_common.OPTIMIZED_OPTIONS["xla_backend_optimization_level"]
    assert sum(o.get("xla_backend_optimization_level") == level for o in compiled) == 1  # the segment, compiled once
    keys = [k for k in _numpyro_common._COMPILED if k[1].endswith("_build_chain_segment")]
    assert len(keys) == 1 and keys[0][-1] == "optimized"
