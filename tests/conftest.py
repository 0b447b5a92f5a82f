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
