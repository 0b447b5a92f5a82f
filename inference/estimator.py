"""``GaussianMixture``: a scikit-learn estimator over :func:`inference.fit` for all five engines.

A thin layer: the estimator validates input the way sklearn does, maps sklearn's constructor
arguments onto the engine's options, calls ``inference.fit`` once and exposes the FitResult under
sklearn's attribute names. It runs no EM of its own.

Argument mapping (sklearn name -> engine option)
-----------------------------------------------
======================  ==========================================================================
``n_components``        ``num_components``
``covariance_type``     em / hard_em: ``covariance_type``. map / svi / nuts: the NumPyro model has
                        full covariances only; anything but "full" raises ``ValueError``.
``tol``, ``max_iter``,  em / hard_em: ``tol`` (same criterion as sklearn: change of the mean
``reg_covar``           per-sample log-likelihood), ``max_iters``, ``reg_covar``. Ignored by
                        map / svi / nuts (their stopping rules are other quantities: set them in
                        ``engine_options``, e.g. ``num_steps``, ``tol``, ``num_samples``).
``init_params``         "kmeans" / "k-means++" / "random_from_data" -> the engines' own
                        initialisers ("kmeans" / "kmeans++" / "random_from_data", ``inference.init``,
                        compiled with the fit); "random" -> random responsibilities followed by one
                        M-step (``inference.stats.m_step``), built here as an initial GMMParams.
                        For svi / nuts the initialiser starts the MAP run they start from
                        (``map_options``).
``n_init``              ``n_init`` (vmapped restarts inside one program; for svi / nuts the MAP
                        start's ``n_init``). With "random" or a partial ``*_init`` the restarts are
                        separate fits and the highest ``lower_bound_`` wins, as in sklearn.
``weights_init``,       Combined into one initial GMMParams (``init=``). Parts not given come from
``means_init``,         ``init_params``'s initialiser, as sklearn does. ``precisions_init`` has
``precisions_init``     sklearn's shape for the covariance type.
``random_state``        ``check_random_state(random_state).randint(2**31 - 1)`` seeds
                        ``jax.random.PRNGKey``: an int gives the same key every time, a RandomState
                        advances, None draws from NumPy's global state.
``warm_start``          A refit starts from the previous fit's parameters (``init=`` that GMMParams,
                        ``n_init`` = 1; svi / nuts skip the MAP start). Unlike sklearn the
                        first iteration does not compare against the previous ``lower_bound_``, so
                        a warm refit runs at least two EM iterations.
``verbose``             0: silent. >= 1: one summary line per fit; >= 2: the lower bound every
                        ``verbose_interval`` iterations (em / hard_em). svi / nuts progress bars
                        are on when ``verbose`` >= 1 (unless ``engine_options`` sets ``progress``).
``max_iter``            >= 1 (sklearn also takes 0, meaning "return the initial parameters"; the
                        engines always run at least one iteration, so 0 fails parameter validation).
``method``              "em" | "hard_em" | "map" | "svi" | "nuts".
``engine_options``      dict of further engine options (e.g. ``chunk_size`` for EM,
                        ``num_warmup``/``num_samples``/``num_chains`` for NUTS). Options that the
                        constructor arguments above already set are refused.
======================  ==========================================================================

Fitted attributes: sklearn's ``weights_, means_, covariances_, precisions_, precisions_cholesky_,
converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, feature_names_in_`` plus
``result_`` (the FitResult), ``trace_`` (its per-iteration traces) and, for svi / nuts,
``posterior_`` (ArviZ InferenceData of the aligned draws, built on first access by
``analysis.arviz_io.to_inference_data``; the estimator keeps a reference to the training data for it,
so a pickled svi / nuts estimator carries its data; the InferenceData itself is not pickled).

BIC / AIC come from ``analysis.selection`` (the project's one sklearn-checked parameter count),
imported inside the methods: inference never imports analysis at module import time.

``lower_bound_``: em / hard_em: sklearn's, the mean per-sample log-likelihood at the last E-step,
i.e. log p(x | theta_{T-1}) / N from the engine's trace (``lower_bounds_`` =
``[initial, log_likelihood[:-1]] / N``). map / svi / nuts: the mean log-likelihood of the training
data at the point estimate.

For svi / nuts the point estimate is the posterior mean of the aligned draws (the engine's
``params``); ``predict_proba(X, posterior=True)`` averages the responsibilities over the draws,
``score_samples(X, posterior=True)`` is the log posterior predictive density
``log mean_s p(x | theta_s)``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from numbers import Integral, Real

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from models.density import component_log_prob
from models.params import GMMParams

from .stats import COVARIANCE_TYPES, chunk_moments, m_step, needs_full_moment

__all__ = ["GaussianMixture"]

METHODS = ("em", "hard_em", "map", "svi", "nuts")
POINT_ONLY_COVARIANCE = ("map", "svi", "nuts")  # the NumPyro model has full covariances
INIT_PARAMS = {"kmeans": "kmeans", "k-means++": "kmeans++", "random_from_data": "random_from_data", "random": None}
# options that constructor arguments set, per engine (engine_options may not repeat them)
_MAPPED = {
    "em": ("covariance_type", "reg_covar", "tol", "max_iters", "init", "n_init"),
    "hard_em": ("covariance_type", "reg_covar", "tol", "max_iters", "init", "n_init"),
    "map": ("init", "n_init"),
    "svi": ("init",),
    "nuts": ("init",),
}


# --------------------------------------------------------------------------- jitted helpers


def _key_from(rng: np.random.RandomState):
    """A JAX PRNG key from one draw of a NumPy RandomState (sklearn's ``random_state``)."""
    return jax.random.PRNGKey(int(rng.randint(np.iinfo(np.int32).max)))


def _bucket(num_rows: int) -> int:
    """Padded row count for prediction programs: powers of two up to 2**16, then multiples of
    2**16, so that predicting on many batch sizes compiles O(log N) programs, not one per N."""
    if num_rows <= 1 << 16:
        return max(8, 1 << (num_rows - 1).bit_length())
    return -(-num_rows // (1 << 16)) * (1 << 16)


@jax.jit
def _point_scores(params: GMMParams, x):
    """(log responsibilities (N, K), pointwise log-likelihood (N,)) at one parameter point."""
    joint = component_log_prob(params, x)
    point_ll = logsumexp(joint, axis=1)
    return joint - point_ll[:, None], point_ll


@jax.jit
def _posterior_scores(draws: GMMParams, x):
    """Over S draws (leading dim): (mean responsibilities (N, K), log mean_s p(x_n | theta_s) (N,))."""
    num_draws = draws.weights.shape[0]
    init = (jnp.zeros((x.shape[0], draws.weights.shape[-1]), x.dtype), jnp.full((x.shape[0],), -jnp.inf, x.dtype))

    def body(carry, params):
        resp_sum, lse = carry
        log_resp, point_ll = _point_scores(params, x)
        return (resp_sum + jnp.exp(log_resp), jnp.logaddexp(lse, point_ll)), None

    (resp_sum, lse), _ = jax.lax.scan(body, init, draws)
    return resp_sum / num_draws, lse - jnp.log(num_draws)


@functools.lru_cache(maxsize=None)
def _initializer(num_components: int, method: str, covariance_type: str):
    """Jitted ``inference.init.initialize`` for one (K, method, covariance type)."""
    from .init import initialize

    return jax.jit(lambda key, x, reg_covar: initialize(key, x, num_components, method, covariance_type, reg_covar))


@functools.lru_cache(maxsize=None)
def _m_step_from_resp(covariance_type: str):
    """Jitted M-step of ``inference.stats`` on given responsibilities (sklearn's ``init_params="random"``)."""
    full = needs_full_moment(covariance_type)
    return jax.jit(lambda resp, x, reg_covar: m_step(chunk_moments(resp, x, full), covariance_type, reg_covar, x.shape[0]))


def _validate(estimator, X, **kwargs):
    """sklearn's ``validate_data`` (float64 / float32 kept), its ValueError / TypeError on one line:
    the same type and wording, without the array dump some messages carry."""
    try:
        return validate_data(estimator, X, dtype=[np.float64, np.float32], **kwargs)
    except (ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        one_line = " ".join(line for line in lines if line and not line.startswith(("[", "array=")))
        if one_line == str(exc) or type(exc) not in (ValueError, TypeError):
            raise
        raise type(exc)(one_line) from None


# --------------------------------------------------------------------------- parameter conversions


def _tril_from_precisions(precisions, covariance_type: str, num_components: int, num_features: int) -> np.ndarray:
    """(K, D, D) lower Cholesky factors of the covariances from sklearn-shaped precisions."""
    eye = np.eye(num_features)
    if covariance_type == "full":
        return np.linalg.cholesky(np.linalg.inv(precisions))
    if covariance_type == "tied":
        return np.broadcast_to(np.linalg.cholesky(np.linalg.inv(precisions)), (num_components, num_features, num_features)).copy()
    if covariance_type == "spherical":
        precisions = np.broadcast_to(np.asarray(precisions)[:, None], (num_components, num_features))
    return (1.0 / np.sqrt(precisions))[:, :, None] * eye


def _sklearn_covariances(scale_tril: np.ndarray, covariance_type: str) -> np.ndarray:
    """sklearn's ``covariances_`` from (K, D, D) Cholesky factors: full (K, D, D), tied (D, D),
    diag (K, D), spherical (K,)."""
    cov = scale_tril @ np.swapaxes(scale_tril, -1, -2)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return cov[0]
    diag = np.diagonal(cov, axis1=-2, axis2=-1).copy()
    return diag if covariance_type == "diag" else diag.mean(axis=1)


def _sklearn_precisions_cholesky(scale_tril: np.ndarray, covariance_type: str) -> np.ndarray:
    """sklearn's ``precisions_cholesky_``: ``inv(L).T`` (full, tied) or ``1 / sqrt(cov)`` (diag, spherical)."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(_sklearn_covariances(scale_tril, covariance_type))
    eye = np.eye(scale_tril.shape[-1], dtype=scale_tril.dtype)
    inv = np.linalg.solve(scale_tril, np.broadcast_to(eye, scale_tril.shape))  # L^{-1}
    prec_chol = np.swapaxes(inv, -1, -2)
    return prec_chol if covariance_type == "full" else prec_chol[0]


def _sklearn_precisions(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("diag", "spherical"):
        return prec_chol**2
    return prec_chol @ np.swapaxes(prec_chol, -1, -2)


# --------------------------------------------------------------------------- checks of user inits


def _check_shape(param, shape, name):
    if param.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}")


def _check_weights(weights, num_components):
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(weights, (num_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            f"The parameter 'weights' should be in the range [0, 1], but got max value {weights.max():.5f}, "
            f"min value {weights.min():.5f}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {weights.sum():.5f}")
    return weights


def _check_means(means, num_components, num_features):
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(means, (num_components, num_features), "means")
    return means


def _check_precisions(precisions, covariance_type, num_components, num_features):
    precisions = check_array(precisions, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=covariance_type == "full")
    shape = {
        "full": (num_components, num_features, num_features),
        "tied": (num_features, num_features),
        "diag": (num_components, num_features),
        "spherical": (num_components,),
    }[covariance_type]
    _check_shape(precisions, shape, f"{covariance_type} precision")
    if covariance_type in ("diag", "spherical"):
        if np.any(precisions <= 0.0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
        return precisions
    matrices = precisions if covariance_type == "full" else precisions[None]
    for p in matrices:
        if not (np.allclose(p, p.T) and np.all(np.linalg.eigvalsh(p) > 0.0)):
            raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    return precisions


# --------------------------------------------------------------------------- the estimator


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by one of this project's engines, with scikit-learn's interface.

    Parameters are scikit-learn's ``GaussianMixture``'s (same names, defaults and meaning for
    ``method="em"``), plus ``method`` and ``engine_options``; see the module docstring for how
    each maps onto :func:`inference.fit`.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV
    >>> search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3, 4]}, cv=5)
    >>> search.fit(X).best_params_["n_components"]   # picked by held-out mean log-likelihood
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_PARAMS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions(set(METHODS))],
        "engine_options": [dict, None],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        method="em",
        engine_options=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.method = method
        self.engine_options = engine_options

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Fit the mixture with ``method`` (``inference.fit``) and set the fitted attributes.

        Parameters
        ----------
        X : array-like (n_samples, n_features); float32 stays float32 for em / hard_em.
        y : ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        X = _validate(self, X, ensure_min_samples=2)
        num_rows, num_features = X.shape
        if num_rows < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, n_samples = {num_rows}"
            )
        method = self.method
        covariance_type = "full" if method in POINT_ONLY_COVARIANCE else self.covariance_type
        if method in POINT_ONLY_COVARIANCE and self.covariance_type != "full":
            raise ValueError(f"method={method!r} fits full covariances only; got covariance_type={self.covariance_type!r}")
        engine_options = dict(self.engine_options or {})
        clash = sorted(set(engine_options) & set(_MAPPED[method]))
        if clash:
            raise ValueError(f"engine_options must not set {clash} for method={method!r}: use the estimator's own arguments")
        self._check_initial_parameters(num_features)

        rng = check_random_state(self.random_state)
        warm = self.warm_start and hasattr(self, "converged_")
        start = time.perf_counter()
        if warm:
            init = GMMParams(*self.result_.params)
            result = self._run(method, _key_from(rng), X, init, 1, covariance_type, engine_options, warm=True)
        elif self._needs_built_init():
            # separate fits, the highest lower bound wins (sklearn's rule). Each restart draws from
            # rng in sklearn's order: init_params="random" with n_init=1 starts at sklearn's point.
            result, best = None, -np.inf
            for _ in range(self.n_init):
                init = self._built_init(rng, X, covariance_type)
                candidate = self._run(method, _key_from(rng), X, init, 1, covariance_type, engine_options)
                bound = self._lower_bounds(candidate, X)[-1]
                if result is None or bound > best:
                    result, best = candidate, bound
        else:
            key = _key_from(rng)
            result = self._run(method, key, X, INIT_PARAMS[self.init_params], self.n_init, covariance_type, engine_options)
        self._set_fitted(result, X, covariance_type)
        if self.verbose:
            self._print_summary(time.perf_counter() - start)
        if not self.converged_:
            warnings.warn(self._not_converged_message(), ConvergenceWarning)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then the labels of ``X`` under the fitted model (equal to ``fit(X).predict(X)``)."""
        return self.fit(X, y).predict(X)

    def _check_initial_parameters(self, num_features):
        covariance_type = self.covariance_type
        if self.weights_init is not None:
            _check_weights(self.weights_init, self.n_components)
        if self.means_init is not None:
            _check_means(self.means_init, self.n_components, num_features)
        if self.precisions_init is not None:
            _check_precisions(self.precisions_init, covariance_type, self.n_components, num_features)

    def _given_parts(self):
        return {name: value for name, value in (("weights", self.weights_init), ("means", self.means_init),
                                                ("precisions", self.precisions_init)) if value is not None}

    def _needs_built_init(self) -> bool:
        return self.init_params == "random" or bool(self._given_parts())

    def _built_init(self, rng, X, covariance_type) -> GMMParams:
        """An initial GMMParams: ``init_params``'s initialiser (or random responsibilities + one
        M-step), with the user's ``weights_init`` / ``means_init`` / ``precisions_init`` in place."""
        given = self._given_parts()
        num_components, num_features = self.n_components, X.shape[1]
        reg_covar = jnp.asarray(self.reg_covar, X.dtype)
        if len(given) == 3:
            weights, means = np.asarray(given["weights"], np.float64), np.asarray(given["means"], np.float64)
            tril = _tril_from_precisions(np.asarray(given["precisions"], np.float64), covariance_type, num_components, num_features)
            return GMMParams(weights, means, tril)
        if self.init_params == "random":
            resp = rng.uniform(size=(X.shape[0], num_components))
            resp /= resp.sum(axis=1, keepdims=True)
            base = _m_step_from_resp(covariance_type)(jnp.asarray(resp, X.dtype), jnp.asarray(X), reg_covar)
        else:
            base = _initializer(num_components, INIT_PARAMS[self.init_params], covariance_type)(_key_from(rng), jnp.asarray(X), reg_covar)
        weights, means, tril = (np.asarray(a, np.float64) for a in base)
        if "weights" in given:
            weights = np.asarray(given["weights"], np.float64)
        if "means" in given:
            means = np.asarray(given["means"], np.float64)
        if "precisions" in given:
            tril = _tril_from_precisions(np.asarray(given["precisions"], np.float64), covariance_type, num_components, num_features)
        return GMMParams(weights, means, tril)

    def _run(self, method, key, X, init, n_init, covariance_type, engine_options, warm=False):
        """One call of ``inference.fit`` with the constructor arguments mapped onto ``method``'s options."""
        from . import fit

        options = dict(engine_options)
        if method in ("em", "hard_em"):
            options.update(covariance_type=covariance_type, reg_covar=float(self.reg_covar), tol=float(self.tol),
                           max_iters=int(self.max_iter), init=init, n_init=int(n_init))
        elif method == "map":
            options.update(init=init, n_init=int(n_init))
        else:
            options.setdefault("progress", bool(self.verbose))
            if warm:
                options["init"] = init
            else:
                map_options = dict(options.get("map_options") or {})
                map_options.update(init=init, n_init=int(n_init))
                options.update(init="map", map_options=map_options)
        return fit(method, key, X, int(self.n_components), **options)

    def _lower_bounds(self, result, X) -> np.ndarray:
        """sklearn's ``lower_bounds_`` for em / hard_em; the point estimate's mean log-likelihood otherwise."""
        num_rows = X.shape[0]
        if result.method in ("em", "hard_em"):
            before = np.concatenate([[result.info["initial_log_likelihood"]], np.asarray(result.trace["log_likelihood"])[:-1]])
            return before / num_rows
        return np.array([float(np.mean(self._scores(result.params, X)[1]))])

    def _set_fitted(self, result, X, covariance_type):
        params = GMMParams(*(np.asarray(a) for a in result.params))
        self.result_ = result
        self.trace_ = result.trace
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = _sklearn_covariances(params.scale_tril, covariance_type)
        self.precisions_cholesky_ = _sklearn_precisions_cholesky(params.scale_tril, covariance_type)
        self.precisions_ = _sklearn_precisions(self.precisions_cholesky_, covariance_type)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.num_iters)
        self.lower_bounds_ = self._lower_bounds(result, X)
        self.lower_bound_ = float(self.lower_bounds_[-1])
        self._covariance_type_fitted = covariance_type
        self._posterior_x = X if result.samples is not None else None
        self.__dict__.pop("_posterior_cache", None)

    def _not_converged_message(self) -> str:
        if self.method == "nuts":
            reasons = "; ".join(self.result_.info.get("warnings", [])) or "see result_.info"
            return (f"NUTS did not meet its convergence conditions ({reasons}). Try more num_warmup / "
                    "num_samples in engine_options, or check the number of components.")
        if self.method in ("map", "svi"):
            return (f"{self.method} stopped at num_steps before its loss tolerance was met. Try more num_steps "
                    "in engine_options.")
        return ("Best performing initialization did not converge. Try different init parameters, or increase "
                "max_iter, tol, or check for degenerate data.")

    def _print_summary(self, seconds: float):
        print(f"{type(self).__name__}(method={self.method!r}): converged={self.converged_}, n_iter={self.n_iter_}, "
              f"lower bound {self.lower_bound_:.5f}, {seconds:.3f} s")
        if self.verbose >= 2 and self.method in ("em", "hard_em"):
            for i in range(0, len(self.lower_bounds_), self.verbose_interval):
                print(f"  Iteration {i + 1}\t lower bound {self.lower_bounds_[i]:.5f}")

    # ------------------------------------------------------------------ predictions

    def _validated(self, X):
        check_is_fitted(self)
        return _validate(self, X, reset=False)

    @staticmethod
    def _scores(params: GMMParams, X):
        """(log responsibilities, pointwise log-likelihood) of X as numpy, on a padded row bucket."""
        num_rows = X.shape[0]
        padded = np.zeros((_bucket(num_rows), X.shape[1]), X.dtype)
        padded[:num_rows] = X
        log_resp, point_ll = _point_scores(GMMParams(*(jnp.asarray(a) for a in params)), jnp.asarray(padded))
        return np.asarray(log_resp)[:num_rows], np.asarray(point_ll)[:num_rows]

    def _posterior(self, X):
        samples = self.result_.samples
        if samples is None:
            raise ValueError(f"posterior=True needs posterior draws (method 'svi' or 'nuts'), not {self.method!r}")
        num_rows = X.shape[0]
        draws = GMMParams(*(jnp.asarray(np.reshape(a, (-1,) + np.shape(a)[2:])) for a in samples))
        padded = np.zeros((_bucket(num_rows), X.shape[1]), np.result_type(X.dtype, np.asarray(samples.weights).dtype))
        padded[:num_rows] = X
        resp, point_ll = _posterior_scores(draws, jnp.asarray(padded))
        return np.asarray(resp)[:num_rows], np.asarray(point_ll)[:num_rows]

    def predict_proba(self, X, posterior: bool = False):
        """Responsibilities (n_samples, n_components) at the point estimate; with ``posterior=True``
        (svi / nuts) their average over the posterior draws."""
        X = self._validated(X)
        if posterior:
            return self._posterior(X)[0]
        return np.exp(self._scores(self.result_.params, X)[0])

    def predict(self, X, posterior: bool = False):
        """Component labels: argmax of :meth:`predict_proba`."""
        X = self._validated(X)
        if posterior:
            return np.argmax(self._posterior(X)[0], axis=1)
        return np.argmax(self._scores(self.result_.params, X)[0], axis=1)

    def score_samples(self, X, posterior: bool = False):
        """Log density of each row at the point estimate; with ``posterior=True`` (svi / nuts) the log
        posterior predictive density ``log mean_s p(x | theta_s)``."""
        X = self._validated(X)
        if posterior:
            return self._posterior(X)[1]
        return self._scores(self.result_.params, X)[1]

    def score(self, X, y=None):
        """Mean per-sample log-likelihood (what GridSearchCV maximises)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the fitted mixture by running ``models.gmm_model`` forward.

        Returns ``(X (n_samples, n_features), y (n_samples,) component labels)``. The key comes from
        ``random_state`` as in :meth:`fit`; rows are in the model's order, not grouped by component.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one sample.")
        from models.predictive import sample

        x, z = sample(_key_from(check_random_state(self.random_state)), GMMParams(*(jnp.asarray(a) for a in self.result_.params)), int(n_samples))
        return np.asarray(x), np.asarray(z)

    # ------------------------------------------------------------------ criteria and posterior

    def bic(self, X):
        """sklearn's BIC ``-2 log L + p log N`` (lower is better), from ``analysis.selection``."""
        X = self._validated(X)
        from analysis import selection  # analysis is above inference: imported only when asked

        return float(selection.bic(self.result_, X, self._covariance_type_fitted))

    def aic(self, X):
        """sklearn's AIC ``-2 log L + 2 p`` (lower is better), from ``analysis.selection``."""
        X = self._validated(X)
        from analysis import selection

        return float(selection.aic(self.result_, X, self._covariance_type_fitted))

    @property
    def posterior_(self):
        """ArviZ InferenceData of the aligned posterior draws (svi / nuts), built on first access."""
        check_is_fitted(self)
        if self.result_.samples is None:
            raise AttributeError(f"posterior_ exists for method 'svi' or 'nuts', not {self.method!r}")
        cached = self.__dict__.get("_posterior_cache")
        if cached is None:
            from analysis import arviz_io  # the one module that imports ArviZ

            cached = self.__dict__["_posterior_cache"] = arviz_io.to_inference_data(self.result_, self._posterior_x)
        return cached

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_posterior_cache", None)
        return state

    def _n_parameters(self) -> int:
        """Free parameters (sklearn's ``_n_parameters``), from ``analysis.selection.num_parameters``."""
        check_is_fitted(self)
        from analysis import selection

        return selection.num_parameters(self.n_components, self.n_features_in_, self._covariance_type_fitted)
