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
``result_`` (the FitResult, with the aligned posterior draws in ``result_.samples`` for svi / nuts) and
``trace_`` (its per-iteration traces). ArviZ is the analysis layer's: the InferenceData of a fit is
``analysis.arviz_io.to_inference_data(estimator.result_, X)`` (inference never imports analysis).

BIC / AIC and the free-parameter count are :mod:`models.criteria`'s (functions of the parameters and
the data, shared with ``analysis.selection``).

Layout: this module is the estimator (sklearn's constructor, ``fit`` and the fitted attributes);
``inference.sklearn_params`` converts and checks sklearn-shaped parameters; ``inference.prediction``
holds the jitted prediction programs (``predict``, ``predict_proba``, ``score_samples``).

Missing values: NaN in ``X`` marks a missing entry (sklearn's ``allow_nan`` tag), marginalised under missing at
random in ``fit`` and scored by the observed entries' density in ``predict`` / ``predict_proba`` /
``score_samples`` / ``score`` (``inference.prediction``); ``impute(X)`` fills the holes. inf is refused.

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

import time
import warnings
from numbers import Integral, Real

import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from models import criteria
from models.missing import impute
from models.params import GMMParams

from .prediction import point_scores, posterior_scores
from .sklearn_params import (check_means, check_precisions, check_weights, initializer, key_from, m_step_from_resp,
                             sklearn_covariances, sklearn_precisions, sklearn_precisions_cholesky, tril_from_precisions,
                             validate)
from .stats import COVARIANCE_TYPES

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
        X = validate(self, X, ensure_min_samples=2)
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
            result = self._run(method, key_from(rng), X, init, 1, covariance_type, engine_options, warm=True)
        elif self._needs_built_init():
            # separate fits, the highest lower bound wins (sklearn's rule). Each restart draws from
            # rng in sklearn's order: init_params="random" with n_init=1 starts at sklearn's point.
            result, best = None, -np.inf
            for _ in range(self.n_init):
                init = self._built_init(rng, X, covariance_type)
                candidate = self._run(method, key_from(rng), X, init, 1, covariance_type, engine_options)
                bound = self._lower_bounds(candidate, X)[-1]
                if result is None or bound > best:
                    result, best = candidate, bound
        else:
            key = key_from(rng)
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
            check_weights(self.weights_init, self.n_components)
        if self.means_init is not None:
            check_means(self.means_init, self.n_components, num_features)
        if self.precisions_init is not None:
            check_precisions(self.precisions_init, covariance_type, self.n_components, num_features)

    def _given_parts(self):
        return {name: value for name, value in (("weights", self.weights_init), ("means", self.means_init),
                                                ("precisions", self.precisions_init)) if value is not None}

    def _needs_built_init(self) -> bool:
        return self.init_params == "random" or bool(self._given_parts())

    def _built_init(self, rng, X, covariance_type) -> GMMParams:
        """An initial GMMParams: ``init_params``'s initialiser (or random responsibilities + one
        M-step), with the user's ``weights_init`` / ``means_init`` / ``precisions_init`` in place.
        Missing entries (NaN) are filled with their column's mean for this starting point only."""
        if np.isnan(X).any():
            X = np.where(np.isnan(X), np.nan_to_num(np.nanmean(X, axis=0)), X).astype(X.dtype)
        given = self._given_parts()
        num_components, num_features = self.n_components, X.shape[1]
        reg_covar = jnp.asarray(self.reg_covar, X.dtype)
        if len(given) == 3:
            weights, means = np.asarray(given["weights"], np.float64), np.asarray(given["means"], np.float64)
            tril = tril_from_precisions(np.asarray(given["precisions"], np.float64), covariance_type, num_components, num_features)
            return GMMParams(weights, means, tril)
        if self.init_params == "random":
            resp = rng.uniform(size=(X.shape[0], num_components))
            resp /= resp.sum(axis=1, keepdims=True)
            base = m_step_from_resp(covariance_type)(jnp.asarray(resp, X.dtype), jnp.asarray(X), reg_covar)
        else:
            base = initializer(num_components, INIT_PARAMS[self.init_params], covariance_type)(key_from(rng), jnp.asarray(X), reg_covar)
        weights, means, tril = (np.asarray(a, np.float64) for a in base)
        if "weights" in given:
            weights = np.asarray(given["weights"], np.float64)
        if "means" in given:
            means = np.asarray(given["means"], np.float64)
        if "precisions" in given:
            tril = tril_from_precisions(np.asarray(given["precisions"], np.float64), covariance_type, num_components, num_features)
        return GMMParams(weights, means, tril)

    def _run(self, method, key, X, init, n_init, covariance_type, engine_options, warm=False):
        """One call of ``inference.fit`` with the constructor arguments mapped onto ``method``'s options."""
        from .dispatch import fit

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
        self.covariances_ = sklearn_covariances(params.scale_tril, covariance_type)
        self.precisions_cholesky_ = sklearn_precisions_cholesky(params.scale_tril, covariance_type)
        self.precisions_ = sklearn_precisions(self.precisions_cholesky_, covariance_type)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.num_iters)
        self.lower_bounds_ = self._lower_bounds(result, X)
        self.lower_bound_ = float(self.lower_bounds_[-1])
        self._covariance_type_fitted = covariance_type

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN = missing at random, marginalised (models.missing); inf is refused
        return tags

    def _validated(self, X):
        check_is_fitted(self)
        return validate(self, X, reset=False)

    def impute(self, X):
        """``X`` with each missing entry (NaN) replaced by its conditional expectation given the row's observed
        entries under the fitted mixture, ``sum_k p(k | x_o) E[x_m | x_o, k]`` (:func:`models.impute`); observed
        entries unchanged, in ``X``'s dtype."""
        X = self._validated(X)
        return X.copy() if not np.isnan(X).any() else np.asarray(impute(self.result_.params, X), X.dtype)

    @staticmethod
    def _scores(params: GMMParams, X):
        """(log responsibilities, pointwise log-likelihood) of X as numpy (``inference.prediction``)."""
        return point_scores(params, X)

    def _posterior(self, X):
        samples = self.result_.samples
        if samples is None:
            raise ValueError(f"posterior=True needs posterior draws (method 'svi' or 'nuts'), not {self.method!r}")
        return posterior_scores(samples, X)

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

        x, z = sample(key_from(check_random_state(self.random_state)), GMMParams(*(jnp.asarray(a) for a in self.result_.params)), int(n_samples))
        return np.asarray(x), np.asarray(z)

    # ------------------------------------------------------------------ criteria

    def _total_log_likelihood(self, X) -> float:
        """``log L`` of validated ``X`` by the bucketed prediction program (``score`` and ``predict``'s: no
        compile per row count, as ``models.criteria.bic`` of the raw array would)."""
        return float(np.sum(self._scores(self.result_.params, X)[1], dtype=np.float64))

    def bic(self, X):
        """sklearn's BIC ``-2 log L + p log N`` (lower is better), :func:`models.criteria.bic_of`."""
        X = self._validated(X)
        return criteria.bic_of(self._total_log_likelihood(X), X.shape[0], len(self.weights_), X.shape[1],
                               self._covariance_type_fitted)

    def aic(self, X):
        """sklearn's AIC ``-2 log L + 2 p`` (lower is better), :func:`models.criteria.aic_of`."""
        X = self._validated(X)
        return criteria.aic_of(self._total_log_likelihood(X), len(self.weights_), X.shape[1],
                               self._covariance_type_fitted)

    def _n_parameters(self) -> int:
        """Free parameters (sklearn's ``_n_parameters``), :func:`models.criteria.num_parameters`."""
        check_is_fitted(self)
        return criteria.num_parameters(self.n_components, self.n_features_in_, self._covariance_type_fitted)
