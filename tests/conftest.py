import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import models  # noqa: E402,F401  (x64 on)


def random_params(rng: np.random.Generator, num_components: int, num_features: int, condition: float = 10.0):
    """Random GMMParams with covariances of a given condition number."""
    weights = rng.dirichlet(np.full(num_components, 2.0))
    means = rng.normal(scale=3.0, size=(num_components, num_features))
    covs = []
    for _ in range(num_components):
        q, _ = np.linalg.qr(rng.normal(size=(num_features, num_features)))
        eig = np.geomspace(1.0, 1.0 / condition, num_features) * rng.uniform(0.5, 2.0)
        covs.append((q * eig) @ q.T)
    return models.from_covariances(weights, means, np.array(covs))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def seed_data():
    """The seed notebook's problem at n = 5000: (truth, x, z)."""
    truth = models.seed_problem()
    x, z = models.sample(jax.random.PRNGKey(0), truth, 5000)
    return truth, np.asarray(x), np.asarray(z)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled XLA program after each test module.

    The engines cache their compiled executables for the life of the process (a second fit compiles
    nothing). A whole test session compiles hundreds of programs for many shapes and priors, and each
    holds JIT code mappings: the process hit the kernel's vm.max_map_count (65,530 here) and LLVM
    failed with "Cannot allocate memory" / a segfault inside a compile. Users' processes compile a
    handful of programs; the test session releases them per module instead.
    """
    yield
    import gc

    from inference import _numpyro_common, em, executable_store

    _numpyro_common.clear_compiled_cache()
    for cached in (_numpyro_common.make_model, _numpyro_common.site_supports, _numpyro_common.unconstrain_fn):
        cached.cache_clear()
    em._COMPILED.clear()
    executable_store.clear_programs()
    jax.clear_caches()
    gc.collect()
