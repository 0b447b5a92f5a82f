"""The one declared NumPyro GMM and the map between its sites and GMMParams.

Forward sampling (``models.sample``) and prior / posterior predictive draws run this model through
``numpyro.infer.Predictive`` in :mod:`models.predictive`, which imports this module (never the reverse).

Sites
-----
weights   : (K,) ~ Dirichlet(concentration * 1)                    (absent when K == 1: the weight is 1)
means     : (K, D) ~ Normal(mean_loc, mean_scale)
scales    : (K, D) ~ LogNormal(log(scale_loc), scale_log_sd)   (per-dimension standard deviations)
corr_chol : (K, D, D) ~ LKJCholesky(D, lkj_concentration)         (absent when D == 1)
z         : (N,) ~ Categorical(weights), marked ``enumerate="parallel"``
x         : (N, D) ~ MultivariateNormal(means[z], scale_tril=diag(scales[z]) @ corr_chol[z])

Sample weights (``sample_weight``, (N,) >= 0): row n's log-likelihood counts ``w_n`` times, i.e.
``sum_n w_n log sum_k w_k N(x_n | theta_k)`` (integer weights = repeated rows). The weight must multiply
the *marginal* log density of a row, after z is summed out; NumPyro's funsor enumeration applies a
site's ``handlers.scale`` to the factor *inside* the sum over z (``log sum_z exp(w_n a_nz)`` instead of
``w_n log sum_z exp(a_nz)``), which is wrong for any weight other than 1. So a weighted model sums z out
analytically: ``x ~ MixtureSameFamily(Categorical(weights), MultivariateNormal(means, scale_tril))`` under
``handlers.scale(sample_weight)``, and has no ``z`` site (assignments then come from Bayes' rule,
``models.responsibilities``).

Missing values (NaN in ``x``, missing at random): row n contributes ``log sum_k w_k N(x_n,o | mu_k,o,
Sigma_k,oo)``, its observed sub-vector only. ``x`` is then scored by :class:`MaskedMultivariateNormal`
(z enumerated as above) or :class:`MaskedGaussianMixture` (weighted), from the missingness patterns
``missing = (observed (P, D), pattern (N,))`` found on the host (``models.missing.missing_patterns``) and
passed as arrays, so the potential stays jit-able. Without NaN (``missing`` None) nothing changes.
Forward sampling (``x`` None) always generates complete rows.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro import handlers

from .linalg import inverse_lower
from .missing import has_missing, masked_component_log_prob, missing_patterns
from .params import GMMParams
from .quadratic import log_prob_coefficients, quadratic_features

GLOBAL_SITES = ("weights", "means", "scales", "corr_chol")


class MultivariateNormal(dist.MultivariateNormal):
    """``numpyro.distributions.MultivariateNormal`` with a faster, equal ``log_prob``.

    NumPyro's log_prob solves ``L y = x - mu`` with a left-side batched triangular solve whose
    right-hand side is every data row; on XLA's CPU backend that solve is ~100x slower than whitening
    (measured: 26.6 ms vs 0.26 ms for K=3, D=5, N=5000). Here the whitening matrices ``W = L^{-1}`` come
    from a triangular solve against the identity (one small (D, D) solve per component, as
    ``models.density`` does) and the Mahalanobis term is one matmul. Same density, same sampler.
    """

    def log_prob(self, value):
        lower = self.scale_tril
        num_features = lower.shape[-1]
        whiten = inverse_lower(lower)
        white = jnp.matmul((value - self.loc)[..., None, :], jnp.swapaxes(whiten, -1, -2))[..., 0, :]
        log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * jnp.sum(white**2, axis=-1) - log_det - 0.5 * num_features * jnp.log(2 * jnp.pi)


def component_table(means, scale_tril, value) -> jnp.ndarray:
    """``log N(x_n | mu_k, Sigma_k)`` for every row and component, (N, K), as ONE matmul: the rows' quadratic
    features (N, F) times the (F, K) coefficients (:mod:`models.quadratic`, EM's E-step formula), so the
    value costs ``2 N F K`` FLOPs and its gradient one more GEMM of the same size (``features^T @ dtable``).

    Computed in float64 whatever the dtypes (returned in their common type): the expanded quadratic form
    loses ``~eps |W x|^2`` (W = L^{-1}) against ``~eps |W (x - mu)|^2`` for the whitened difference, so it is
    exact to rounding for data near the origin relative to the components' widths, which the NumPyro engines
    ensure by fitting standardised data (``inference.standardize``: mean 0, sd 1 per column); in float32 a
    narrow component far from the origin would lose its density (the hostile-data lesson, EM's too).
    """
    out = jnp.result_type(value, means)
    wide = jnp.promote_types(out, jnp.float64)
    params = GMMParams(jnp.ones(means.shape[:-1], wide), means.astype(wide), scale_tril.astype(wide))
    table = quadratic_features(value.astype(wide), True) @ log_prob_coefficients(params, True)
    return table.astype(out)


def pick_component(table, component) -> jnp.ndarray:
    """``table[n, component[..., n]]`` (``component`` broadcast with (N,)) from the (K, N) transpose: under
    enumeration ``component`` is ``arange(K)`` shaped (K, 1), the same for every row, and this is a gather of whole
    rows of the transpose (``jnp.take`` on axis 0: the transpose itself); a drawn ``component`` (..., N) picks per
    row by ``take_along_axis``. Measured in the gradient loop at (50,000, 8, 4): a select-and-sum over K
    (``where(component == k)``) cost 2x the whole gradient; the gathers' backward (a scatter-add) costs about
    nothing. Gathering whole rows also keeps rows split over devices apart (``inference.sharded_potential``): a
    per-row index there made XLA all-gather the (K, N) index every gradient."""
    num_rows = table.shape[0]
    component = jnp.asarray(component)
    shape = jnp.broadcast_shapes(component.shape, (num_rows,))
    if component.ndim == 0 or component.shape[-1] == 1:  # the same component(s) for every row
        return jnp.take(table.T, component.reshape(-1), axis=0).reshape(shape)
    index = jnp.broadcast_to(component, shape).reshape(-1, num_rows)
    return jnp.take_along_axis(table.T, index, axis=0).reshape(shape)


class ComponentNormal(dist.Distribution):
    """Component ``component[n]`` of a Gaussian mixture for complete rows: ``log N(x_n | mu_c, Sigma_c)``, equal to
    ``MultivariateNormal(means[component], scale_tril[component])`` (tested to 1e-12), but ``log_prob`` is the
    (N, K) table of every component at once (:func:`component_table`, one matmul) picked per row, so an
    enumerated ``z`` ((K, 1)) costs one GEMM forward and one backward. Sampling draws ``N(mu_c, Sigma_c)``.

    Parameters
    ----------
    means : (K, D); scale_tril : (K, D, D); component : (..., N) or (..., 1) int (``z``, enumerated or drawn).
    """

    arg_constraints = {}
    support = dist.constraints.real_vector

    def __init__(self, means, scale_tril, component, *, validate_args=None):
        self.means, self.scale_tril, self.component = means, scale_tril, component
        super().__init__(batch_shape=jnp.shape(component), event_shape=means.shape[-1:], validate_args=validate_args)

    def component_log_prob(self, value) -> jnp.ndarray:
        """``log N(x_n | mu_k, Sigma_k)`` (N, K) of ``value`` (N, D)."""
        return component_table(self.means, self.scale_tril, value)

    def log_prob(self, value):
        return pick_component(self.component_log_prob(value), self.component)

    def sample(self, key, sample_shape=()):
        return MultivariateNormal(self.means[self.component], scale_tril=self.scale_tril[self.component]).sample(key, sample_shape)


class _SummedOut:
    """z summed out of a per-row component table: ``log sum_k w_k p_k(x_n)``; draws pick k, then x."""

    def log_prob(self, value):
        return logsumexp(jnp.log(self.weights) + self.component_log_prob(value), axis=-1)

    def sample(self, key, sample_shape=()):
        pick, draw = jax.random.split(key)
        component = dist.Categorical(self.weights).sample(pick, sample_shape + self.batch_shape)
        return MultivariateNormal(self.means[component], scale_tril=self.scale_tril[component]).sample(draw)


class GaussianMixtureRows(_SummedOut, ComponentNormal):
    """The mixture of :class:`ComponentNormal` over its components with ``weights`` (K,), z summed out:
    ``log sum_k w_k N(x_n | mu_k, Sigma_k)`` per row from the same one-matmul table (the weighted model's rows;
    equal to ``MixtureSameFamily(Categorical(weights), MultivariateNormal(means, scale_tril))``)."""

    def __init__(self, weights, means, scale_tril, num_rows: int, *, validate_args=None):
        self.weights = weights
        super().__init__(means, scale_tril, jnp.zeros((num_rows,), jnp.int32), validate_args=validate_args)


class MaskedMultivariateNormal(dist.Distribution):
    """Component ``component[n]`` of a Gaussian mixture for rows with holes: ``log N(x_n,o | mu_c,o, Sigma_c,oo)``.

    Each row's missing entries (where its pattern is False) are marginalised out, i.e. only its observed
    sub-vector is scored, as Pyro's ``NanMaskedMultivariateNormal`` does with one sub-matrix per pattern
    on the host; here with fixed shapes, jit-able: the per-(pattern, component) tables of
    :func:`models.missing.pattern_tables` gathered per row (:func:`models.missing.masked_component_log_prob`).
    ``log_prob`` computes the (N, K) table and picks each row's component, so an enumerated ``z`` ((K, 1))
    costs one table. Sampling draws complete rows from ``N(mu_c, Sigma_c)``.

    Parameters
    ----------
    means : (K, D); scale_tril : (K, D, D).
    observed : (P, D) bool patterns; pattern : (N,) int, each row's pattern (:func:`models.missing.missing_patterns`).
    component : (..., N) int (``z``, enumerated or drawn).
    """

    arg_constraints = {}
    support = dist.constraints.real_vector

    def __init__(self, means, scale_tril, observed, pattern, component, *, validate_args=None):
        self.means, self.scale_tril, self.observed, self.pattern = means, scale_tril, observed, pattern
        self.component = component
        batch_shape = jnp.broadcast_shapes(jnp.shape(component), jnp.shape(pattern))
        super().__init__(batch_shape=batch_shape, event_shape=means.shape[-1:], validate_args=validate_args)

    def component_log_prob(self, value) -> jnp.ndarray:
        """``log N(x_n,o | mu_k,o, Sigma_k,oo)`` for every k, (N, K); ``value`` (N, D), NaN allowed where missing."""
        params = GMMParams(jnp.ones(self.means.shape[:-1], self.means.dtype), self.means, self.scale_tril)
        return masked_component_log_prob(params, value, self.pattern, self.observed)

    def log_prob(self, value):
        table = self.component_log_prob(value)
        rows = jnp.arange(table.shape[0])
        return table[rows, jnp.broadcast_to(self.component, self.batch_shape)]

    def sample(self, key, sample_shape=()):
        component = jnp.broadcast_to(self.component, self.batch_shape)
        return MultivariateNormal(self.means[component], scale_tril=self.scale_tril[component]).sample(key, sample_shape)


class MaskedGaussianMixture(_SummedOut, MaskedMultivariateNormal):
    """The mixture of :class:`MaskedMultivariateNormal` over its components with ``weights`` (K,), z summed
    out: ``log sum_k w_k N(x_n,o | mu_k,o, Sigma_k,oo)`` per row, batch (N,) (the weighted model's rows)."""

    def __init__(self, weights, means, scale_tril, observed, pattern, *, validate_args=None):
        self.weights = weights
        super().__init__(means, scale_tril, observed, pattern, jnp.zeros(jnp.shape(pattern), jnp.int32),
                         validate_args=validate_args)


def gmm_model(
    x=None,
    *,
    num_components: int = 2,
    num_features: int | None = None,
    num_samples: int | None = None,
    concentration: float = 1.0,
    mean_loc=0.0,
    mean_scale=10.0,
    scale_loc=1.0,
    scale_log_sd: float = 2.0,
    lkj_concentration: float = 1.0,
    sample_weight=None,
    missing=None,
    subsample_size: int | None = None,
):
    """NumPyro generative model of a Gaussian mixture.

    Parameters
    ----------
    x : (N, D) observed data or None to sample.
    num_components : K.
    num_features : D (required when ``x`` is None).
    num_samples : N (required when ``x`` is None).
    concentration : symmetric Dirichlet concentration of the weights.
    mean_loc, mean_scale : Normal prior of the means (scalars or (D,) arrays).
    scale_loc, scale_log_sd : LogNormal prior of the per-dimension standard deviations, median ``scale_loc``.
    lkj_concentration : LKJ prior of the correlation Cholesky factors (1 = uniform over correlations).
    sample_weight : (N,) non-negative row weights, or None (module docstring: z is then summed out analytically).
    missing : ``(observed (P, D) bool, pattern (N,) int)`` when ``x`` has NaN holes (module docstring), or
        None. Found here for a concrete ``x`` with NaN; inside a jitted program pass it (the engines do).
    subsample_size : minibatch SVI (``inference.numpyro_minibatch``): ``x`` is a batch of ``subsample_size`` rows
        of ``num_samples``; the data plate is ``plate("data", num_samples, subsample_size=subsample_size)``,
        which scales the batch's log-likelihood by ``num_samples / subsample_size``. The caller picks the rows
        (the plate's own index draw is unused: substitute ``{"data": jnp.arange(subsample_size)}`` to skip it).
        Not with ``sample_weight``.
    """
    if x is not None and subsample_size is not None:
        if num_samples is None or x.shape[0] != subsample_size or sample_weight is not None:
            raise ValueError("subsample_size needs num_samples (all rows), x of subsample_size rows, no sample_weight")
        num_features = x.shape[1]
    elif x is not None:
        num_samples, num_features = x.shape
        if missing is None and has_missing(x):
            found = missing_patterns(x)
            missing = (jnp.asarray(found.observed), jnp.asarray(found.index))
    if num_features is None or num_samples is None:
        raise ValueError("num_features and num_samples are required when x is None")
    dtype = x.dtype if x is not None else jnp.result_type(float)
    if num_components > 1:
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.full((num_components,), concentration, dtype)))
    else:  # one component: the weight is 1, not a random variable (a 1-simplex has no free coordinate)
        weights = jnp.ones((1,), dtype)
    # Component parameters carry K as an event dimension (not a plate): the only plate is "data",
    # so max_plate_nesting = 1 and K = 1 needs no special case in funsor's enumeration.
    shape = (num_components, num_features)
    means = numpyro.sample(
        "means", dist.Normal(jnp.broadcast_to(jnp.asarray(mean_loc, dtype), shape), jnp.asarray(mean_scale, dtype)).to_event(2)
    )
    scales = numpyro.sample(
        "scales",
        dist.LogNormal(jnp.broadcast_to(jnp.log(jnp.asarray(scale_loc, dtype)), shape), jnp.asarray(scale_log_sd, dtype)).to_event(2),
    )
    if num_features > 1:
        corr_chol = numpyro.sample(
            "corr_chol", dist.LKJCholesky(num_features, jnp.asarray(lkj_concentration, dtype)).expand([num_components]).to_event(1)
        )
    else:
        corr_chol = jnp.ones((num_components, 1, 1), dtype)
    scale_tril = scales[..., :, None] * corr_chol
    if sample_weight is not None:
        if x is None:
            raise ValueError("sample_weight weights observed rows; it needs x")
        if missing is None:
            mixture = GaussianMixtureRows(weights, means, scale_tril, num_samples)
        else:
            mixture = MaskedGaussianMixture(weights, means, scale_tril, *missing)
        weight = jnp.asarray(sample_weight, dtype)
        positive = weight > 0  # handlers.scale takes positive scales only: rows of weight 0 are masked out
        with numpyro.plate("data", num_samples), handlers.mask(mask=positive), handlers.scale(scale=jnp.where(positive, weight, 1.0)):
            numpyro.sample("x", mixture, obs=x)
        return
    with numpyro.plate("data", num_samples, subsample_size=subsample_size):
        if num_components == 1:
            # z is identically 0; enumerating a size-1 support is ambiguous with broadcasting in funsor
            z = numpyro.deterministic("z", jnp.zeros((subsample_size or num_samples,), jnp.int32))
            if missing is None:
                numpyro.sample("x", ComponentNormal(means, scale_tril, z), obs=x)
            else:
                numpyro.sample("x", MaskedMultivariateNormal(means, scale_tril, *missing, z), obs=x)
            return
        z = numpyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        if missing is None:
            numpyro.sample("x", ComponentNormal(means, scale_tril, z), obs=x)
        else:  # the rows' observed sub-vectors: missing entries marginalised (MAR)
            numpyro.sample("x", MaskedMultivariateNormal(means, scale_tril, *missing, z), obs=x)


@jax.jit
def params_from_sites(sites) -> GMMParams:
    """GMMParams from a dict of global site values (leading batch dims allowed)."""
    scales = sites["scales"]
    if "corr_chol" in sites:
        scale_tril = scales[..., :, None] * sites["corr_chol"]
    else:
        scale_tril = scales[..., :, None]
    weights = sites["weights"] if "weights" in sites else jnp.ones(sites["means"].shape[:-1], sites["means"].dtype)
    return GMMParams(weights, sites["means"], scale_tril)


@jax.jit
def sites_from_params(params: GMMParams) -> dict:
    """Global site values of ``gmm_model`` that reproduce ``params`` exactly.

    ``scales`` are the row norms of the Cholesky factor (the marginal standard deviations) and
    ``corr_chol = diag(1 / scales) @ scale_tril``, whose rows have unit norm as LKJCholesky requires.
    """
    scales = jnp.linalg.norm(params.scale_tril, axis=-1)
    sites = {"means": params.means, "scales": scales}
    if params.means.shape[-2] > 1:
        sites["weights"] = params.weights
    if params.means.shape[-1] > 1:
        sites["corr_chol"] = params.scale_tril / scales[..., :, None]
    return sites


def log_prior(params: GMMParams, **prior) -> jnp.ndarray:
    """Log prior density of ``params`` under ``gmm_model`` in the sites' own (constrained) space."""
    num_components, num_features = params.means.shape
    conditioned = handlers.condition(
        handlers.block(gmm_model, hide=["z", "x"]), data=sites_from_params(params)
    )
    trace = handlers.trace(handlers.seed(conditioned, jax.random.PRNGKey(0))).get_trace(
        num_components=num_components, num_features=num_features, num_samples=1, **prior
    )
    return sum(jnp.sum(site["fn"].log_prob(site["value"])) for name, site in trace.items() if name in GLOBAL_SITES)


__all__ = ["gmm_model", "ComponentNormal", "GaussianMixtureRows", "component_table", "MaskedMultivariateNormal", "MaskedGaussianMixture", "params_from_sites", "sites_from_params", "log_prior", "GLOBAL_SITES"]
