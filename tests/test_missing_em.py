"""EM and hard EM on data with NaN holes (missing at random; ``inference.missing_em``).

References no one here wrote: scipy.stats for the observed-data log-likelihood (each row's own observed
sub-vector), an independent per-row numpy EM (Ghahramani & Jordan 1994: conditional means and covariances
by ``np.linalg.solve``), ``scipy.optimize`` on the observed-data likelihood, the complete-data fit (the
same rows before the holes were made), the in-memory fit (streamed) and the 1-device fit (sharded)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import models
from inference import fit
from inference.em import _COMPILED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COVARIANCE_TYPES = ["full", "diag", "spherical", "tied"]


def blobs(rng, n=(300, 300, 300)):
    return np.concatenate([rng.normal(size=(n[0], 3)) + [4, 0, 0], rng.normal(size=(n[1], 3)) * [1, 2, 0.5],
                           rng.normal(size=(n[2], 3)) - 3])


def with_holes(rng, x, fraction=0.2, all_missing=(5,)):
    x = x.copy()
    x[rng.random(x.shape) < fraction] = np.nan
    x[list(all_missing)] = np.nan
    return x


def brute_log_lik(params, x):
    """sum_n log sum_k w_k N(x_n,o | mu_k,o, Sigma_k,oo) by scipy, row by row."""
    covs = np.asarray(models.covariances(params))
    total = 0.0
    for row in x:
        o = ~np.isnan(row)
        if not o.any():
            continue
        terms = [np.log(w) + multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
                 for w, m, c in zip(params.weights, params.means, covs)]
        total += logsumexp(terms)
    return total


def reference_em(x, params, iters, covariance_type, reg=1e-6):
    """An independent EM with missing values, one row at a time (np.linalg.solve, no tables)."""
    w, mu, cov = (np.array(params.weights), np.array(params.means), np.array(models.covariances(params)))
    x = x[~np.isnan(x).all(axis=1)]
    num_rows, num_features = x.shape
    for _ in range(iters):
        logp = np.zeros((num_rows, len(w)))
        xhat = np.zeros((num_rows, len(w), num_features))
        cc = np.zeros((num_rows, len(w), num_features, num_features))
        for n, row in enumerate(x):
            o, m = ~np.isnan(row), np.isnan(row)
            for k in range(len(w)):
                s_oo, s_mo = cov[k][np.ix_(o, o)], cov[k][np.ix_(m, o)]
                logp[n, k] = np.log(w[k]) + multivariate_normal(mu[k, o], s_oo).logpdf(row[o])
                xhat[n, k] = row
                xhat[n, k, m] = mu[k, m] + s_mo @ np.linalg.solve(s_oo, row[o] - mu[k, o])
                cc[n, k][np.ix_(m, m)] = cov[k][np.ix_(m, m)] - s_mo @ np.linalg.solve(s_oo, s_mo.T)
        r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
        nk = r.sum(axis=0)
        w, mu = nk / nk.sum(), np.einsum("nk,nkd->kd", r, xhat) / nk[:, None]
        dev = xhat - mu[None]
        cov = (np.einsum("nk,nki,nkj->kij", r, dev, dev) + np.einsum("nk,nkij->kij", r, cc)) / nk[:, None, None]
        if covariance_type == "diag":
            cov = np.stack([np.diag(np.diag(c)) for c in cov])
        elif covariance_type == "spherical":
            cov = np.stack([np.eye(num_features) * np.trace(c) / num_features for c in cov])
        elif covariance_type == "tied":
            cov = np.broadcast_to(np.einsum("k,kij->ij", nk, cov) / nk.sum(), cov.shape).copy()
        cov = cov + reg * np.eye(num_features)
    return w, mu, cov


def first_start(x, covariance_type="full"):
    """A fixed start: three rows' observed values (column means elsewhere), the data's covariance."""
    pick = [0, len(x) * 4 // 9, len(x) * 8 // 9]
    rows = np.where(np.isnan(x[pick]), np.nanmean(x, axis=0), x[pick])
    cov = np.diag(np.nanvar(x, axis=0))
    if covariance_type == "spherical":
        cov = np.eye(3) * np.trace(cov) / 3
    return models.from_covariances(np.full(3, 1 / 3), rows, np.stack([cov] * 3))


@pytest.fixture
def holes(rng):
    x = blobs(rng)
    return x, with_holes(rng, x)


@pytest.mark.parametrize("method", ["em", "hard_em"])
def test_final_log_likelihood_is_the_observed_data_one(holes, method):
    """EM's last trace value == models.log_likelihood (NaN marginalised) == scipy, row by row, to 1e-10."""
    _, xm = holes
    res = fit(method, jax.random.PRNGKey(0), xm, 3, tol=0.0, max_iters=30)
    ours, ref = res.trace["log_likelihood"][-1], brute_log_lik(res.params, xm)
    assert ours == pytest.approx(float(models.log_likelihood(res.params, xm)), rel=1e-10)
    assert ours == pytest.approx(ref, rel=1e-10)
    assert res.info["missing"] == {"cells": int(np.isnan(xm).sum()), "rows_with_missing": int(np.isnan(xm).any(1).sum()),
                                   "rows_all_missing": int(np.isnan(xm).all(1).sum()), "patterns": res.info["missing"]["patterns"]}
    assert res.info["missing"]["patterns"] == len({tuple(r) for r in np.isnan(xm)})
    assert any("every value missing" in line for line in res.info["warnings"])
    resp = np.asarray(models.responsibilities(res.params, xm)) if method == "em" else None
    if resp is not None:  # the final responsibilities are those of the observed data
        np.testing.assert_allclose(res.responsibilities, resp, atol=1e-12)
        np.testing.assert_allclose(res.responsibilities[5], res.params.weights, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_soft_em_is_monotone_with_holes_and_matches_a_per_row_numpy_em(holes, covariance_type):
    """40 iterations from a fixed start: the log-likelihood never decreases, KL >= 0, and the parameters after
    4 iterations (a snapshot) equal the per-row numpy EM's."""
    _, xm = holes
    start = first_start(xm, covariance_type=covariance_type)
    res = fit("em", jax.random.PRNGKey(0), xm, 3, covariance_type=covariance_type, init=start, tol=0.0, max_iters=40)
    ll = res.trace["log_likelihood"]
    assert np.all(np.diff(np.r_[res.info["initial_log_likelihood"], ll]) >= -1e-9 * np.abs(ll[-1]))
    assert np.all(res.trace["kl"] >= -1e-8 * np.abs(ll[-1]))  # KL = log p(x_o) - ELBO >= 0
    at = list(res.info["snapshot_iters"]).index(4)
    ours = models.GMMParams(*(np.asarray(a[at]) for a in res.info["snapshots"]))
    w, mu, cov = reference_em(xm, start, 4, covariance_type)
    np.testing.assert_allclose(ours.weights, w, rtol=1e-9)
    np.testing.assert_allclose(ours.means, mu, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(models.covariances(ours)), cov, rtol=1e-8, atol=1e-11)


def test_hard_em_assignments_and_counts(holes):
    _, xm = holes
    res = fit("hard_em", jax.random.PRNGKey(0), xm, 3, tol=0.0, max_iters=30)
    joint = np.asarray(models.missing.observed_component_log_prob(res.params, xm))
    z = joint.argmax(axis=1)
    np.testing.assert_array_equal(res.responsibilities, np.eye(3)[z])
    # converged assignments: the last M-step's weights are the counts of the rows with something observed
    seen = ~np.isnan(xm).all(axis=1)
    np.testing.assert_allclose(res.params.weights, np.bincount(z[seen], minlength=3) / seen.sum(), rtol=1e-12)


def test_one_component_equals_direct_maximisation(rng):
    """K = 1, 2-D, 30% of column 1 missing: EM's fixed point is scipy.optimize's maximum of the observed-data
    likelihood."""
    x = rng.multivariate_normal([1.0, -2.0], [[2.0, 1.2], [1.2, 1.5]], size=150)
    x[rng.random(150) < 0.3, 1] = np.nan
    x[rng.random(150) < 0.1, 0] = np.nan
    x = x[~np.isnan(x).all(axis=1)]
    res = fit("em", jax.random.PRNGKey(0), x, 1, tol=1e-14, max_iters=2000, reg_covar=0.0)

    patterns = {o: (~np.isnan(x) == np.array(o)).all(axis=1) for o in {tuple(r) for r in ~np.isnan(x)}}

    def neg(theta):  # scipy's density of each pattern's rows on their observed columns
        chol = np.array([[np.exp(theta[2]), 0.0], [theta[3], np.exp(theta[4])]])
        cov = chol @ chol.T
        return -sum(multivariate_normal(theta[:2][list(o)], cov[np.ix_(o, o)]).logpdf(x[rows][:, list(o)]).sum()
                    for o, rows in patterns.items())

    best = minimize(neg, np.r_[np.nanmean(x, axis=0), 0.0, 0.0, 0.0], method="BFGS", options={"gtol": 1e-9}).x
    chol = np.array([[np.exp(best[2]), 0.0], [best[3], np.exp(best[4])]])
    np.testing.assert_allclose(res.params.means[0], best[:2], atol=1e-5)
    np.testing.assert_allclose(np.asarray(models.covariances(res.params))[0], chol @ chol.T, atol=1e-5)
    assert -res.trace["log_likelihood"][-1] == pytest.approx(neg(best), abs=1e-8)
    assert neg(best) == pytest.approx(-brute_log_lik(res.params, x), abs=1e-8)


def test_complete_data_runs_the_complete_program_and_holes_equal_it(rng):
    """No NaN: the complete program (Layout.missing False, no info["missing"]). One all-NaN row added: the
    holes program, whose fit of the same information equals the complete one to 1e-10."""
    x = blobs(rng)
    plain = fit("em", jax.random.PRNGKey(0), x, 3, tol=0.0, max_iters=15)
    assert "missing" not in plain.info and "missing=False" in str(list(_COMPILED)[-1][0])
    extra = fit("em", jax.random.PRNGKey(0), np.r_[x, np.full((1, 3), np.nan)], 3, tol=0.0, max_iters=15)
    assert extra.info["missing"]["rows_all_missing"] == 1 and "missing=True" in str(list(_COMPILED)[-1][0])
    for a, b in zip(extra.params, plain.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(extra.trace["log_likelihood"], plain.trace["log_likelihood"], rtol=1e-10)
    np.testing.assert_allclose(extra.trace["elbo"], plain.trace["elbo"], rtol=1e-10)
    np.testing.assert_allclose(extra.responsibilities[:-1], plain.responsibilities, atol=1e-10)


def test_rows_with_one_observed_column_and_a_column_missing_in_one_component(rng):
    """Column 2 is missing in every row of component 0 and in no other; a third of the rows observe one
    column only. EM runs, never decreases, its trace is the observed-data likelihood, and the means of the
    observed columns are recovered. (Missingness tied to a component is not at random: the weights move a
    little, since EM does not read the holes as a hint of component 0.)"""
    x = blobs(rng)
    xm = x.copy()
    xm[:300, 2] = np.nan
    single = rng.choice(np.arange(300, 900), 200, replace=False)
    for n in single:
        xm[n, np.arange(3) != rng.integers(3)] = np.nan
    res = fit("em", jax.random.PRNGKey(0), xm, 3, tol=0.0, max_iters=60)
    ll = res.trace["log_likelihood"]
    assert np.all(np.diff(ll) >= -1e-9 * abs(ll[-1])) and ll[-1] == pytest.approx(brute_log_lik(res.params, xm), rel=1e-10)
    ref = fit("em", jax.random.PRNGKey(0), x, 3)
    cost = np.abs(res.params.means[:, None, :2] - ref.params.means[None, :, :2]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].max() < 0.5
    np.testing.assert_allclose(res.params.weights[rows], ref.params.weights[cols], atol=0.06)
    assert np.isfinite(np.asarray(models.covariances(res.params))).all()


@pytest.mark.parametrize("method", ["em", "hard_em"])
def test_streamed_npy_with_holes_equals_in_memory(holes, tmp_path, method):
    _, xm = holes
    np.save(tmp_path / "x.npy", xm)
    opts = dict(tol=0.0, max_iters=12, n_init=2, chunk_size=128)
    mem = fit(method, jax.random.PRNGKey(3), xm, 3, **opts)
    streamed = fit(method, jax.random.PRNGKey(3), str(tmp_path / "x.npy"), 3, **opts)
    assert streamed.info["streamed"] and streamed.info["missing"] == mem.info["missing"]
    for a, b in zip(streamed.params, mem.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(streamed.trace["log_likelihood"], mem.trace["log_likelihood"], rtol=1e-10)
    seen = ~np.isnan(xm).all(axis=1)
    np.testing.assert_allclose(streamed.info["final_counts"], mem.responsibilities[seen].sum(axis=0), rtol=1e-10)


def test_sample_weights_with_holes(rng):
    x = blobs(rng, (60, 50, 40))
    xm = with_holes(rng, x, 0.2, ())
    opts = dict(tol=0.0, max_iters=10, init=first_start(xm))
    plain = fit("em", jax.random.PRNGKey(0), xm, 3, **opts)
    tiny = fit("em", jax.random.PRNGKey(0), xm, 3, sample_weight=np.full(len(xm), 1e-6), **opts)
    for a, b in zip(tiny.params, plain.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tiny.trace["log_likelihood"], plain.trace["log_likelihood"], rtol=1e-10)
    counts = rng.integers(0, 4, size=len(xm))
    counts[0] = 1
    weighted = fit("em", jax.random.PRNGKey(0), xm, 3, sample_weight=counts.astype(float), **opts)
    repeated = fit("em", jax.random.PRNGKey(0), np.repeat(xm, counts, axis=0), 3, **opts)
    for a, b in zip(weighted.params, repeated.params):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("init", ["random_from_data", "kmeans++", "kmeans"])
def test_initialisers_and_checks_do_not_read_nan(holes, init):
    _, xm = holes
    res = fit("em", jax.random.PRNGKey(0), xm.astype(np.float32), 3, init=init, n_init=2, max_iters=50)
    start = [np.asarray(a[0]) for a in res.info["snapshots"]]
    assert all(np.isfinite(a).all() for a in start) and np.isfinite(res.info["data_covariance"]).all()
    assert res.info["degenerate_components"] == [] and res.params.means.dtype == np.float32
    assert res.trace["log_likelihood"][-1] == pytest.approx(max(res.info["log_likelihood_per_init"]), rel=1e-6)


def test_bad_missing_data_one_line_errors():
    with pytest.raises(ValueError, match="column 1 has no observed value"):
        fit("em", jax.random.PRNGKey(0), np.array([[0.0, np.nan], [1.0, np.nan], [2.0, np.nan]]), 2)
    with pytest.raises(ValueError, match="inf"):
        fit("em", jax.random.PRNGKey(0), np.array([[0.0, np.nan], [1.0, np.inf], [2.0, 1.0]]), 2)


def test_sharded_with_holes_equals_single_device():
    """1, 2, 3, 4 host devices (subprocess, tests/scale_scripts/missing_sharded.py): equal to 1e-10."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "scale_scripts", "missing_sharded.py")],
                         capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(diffs) == 9 and all(v < 1e-10 for v in diffs.values()), diffs


# --------------------------------------------------------------------------- what the holes cost, and the workarounds' bias

TRUTH = models.from_covariances(
    np.array([0.3, 0.3, 0.4]), np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0]]),
    np.array([[[1.0, 0.6, 0.3], [0.6, 1.0, 0.6], [0.3, 0.6, 1.0]], [[1.0, -0.5, 0.0], [-0.5, 1.0, 0.4], [0.0, 0.4, 1.5]],
              [[1.5, 0.5, 0.5], [0.5, 1.0, -0.3], [0.5, -0.3, 1.0]]]))


def z_scores(params, ref, num_rows):
    """|params - ref| in units of the truth's sampling standard errors at ``num_rows`` rows: weights
    sqrt(w(1-w)/N), means sqrt(S_jj / n_k), covariances sqrt((S_ii S_jj + S_ij^2) / n_k); components aligned."""
    truth_cov = np.asarray(models.covariances(TRUTH))
    cost = ((np.asarray(params.means)[:, None] - np.asarray(TRUTH.means)[None]) ** 2).sum(-1)
    perm = linear_sum_assignment(cost)[1]
    order = np.argsort(perm)
    n_k = np.asarray(TRUTH.weights) * num_rows
    w_se = np.sqrt(TRUTH.weights * (1 - TRUTH.weights) / num_rows)
    dv = np.diagonal(truth_cov, axis1=1, axis2=2)
    cov_se = np.sqrt((dv[:, :, None] * dv[:, None, :] + truth_cov**2) / n_k[:, None, None])
    ref_order = np.argsort(linear_sum_assignment(((np.asarray(ref.means)[:, None] - np.asarray(TRUTH.means)[None]) ** 2).sum(-1))[1])
    pick = lambda p, o: (np.asarray(p.weights)[o], np.asarray(p.means)[o], np.asarray(models.covariances(p))[o])
    (w, mu, cov), (rw, rmu, rcov) = pick(params, order), pick(ref, ref_order)
    return {"weights": float(np.max(np.abs(w - rw) / w_se)),
            "means": float(np.max(np.abs(mu - rmu) / np.sqrt(dv / n_k[:, None]))),
            "covariances": float(np.max(np.abs(cov - rcov) / cov_se))}


def bias_experiment(mechanism, num_rows=3000, seed=0):
    """Complete-data EM, EM with the holes, listwise deletion, column-mean imputation: each fit's largest
    |z| against the truth and against the complete-data fit of the same rows. MCAR: every cell missing with
    probability 0.2. MAR: column 0 always observed; columns 1 and 2 missing with probability 0.45 where
    x_0 > 1, 0.05 elsewhere (about 20% of their cells)."""
    x, _ = models.sample(jax.random.PRNGKey(seed), TRUTH, num_rows)
    x = np.asarray(x)
    rng = np.random.default_rng(seed)
    xm = x.copy()
    if mechanism == "MCAR":
        xm[rng.random(x.shape) < 0.2] = np.nan
    else:
        prob = np.where(x[:, :1] > 1.0, 0.45, 0.05)
        hole = rng.random((num_rows, 2)) < prob
        xm[:, 1:][hole] = np.nan
    opts = dict(init=TRUTH, tol=1e-10, max_iters=1000)
    data = {"complete data": x, "EM with the holes": xm, "listwise deletion": xm[~np.isnan(xm).any(axis=1)],
            "column-mean imputation": np.where(np.isnan(xm), np.nanmean(xm, axis=0), xm)}
    fits = {name: fit("em", jax.random.PRNGKey(0), d, 3, **opts) for name, d in data.items()}
    out = {"cells missing": float(np.isnan(xm).mean()), "rows kept by listwise deletion": len(data["listwise deletion"])}
    for name, res in fits.items():
        out[name] = {"vs truth": z_scores(res.params, TRUTH, num_rows),
                     "vs complete fit": z_scores(res.params, fits["complete data"].params, num_rows)}
    return out


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR"])
def test_holes_recover_the_complete_fit_where_deletion_and_mean_imputation_are_biased(mechanism):
    """N = 3000, 3 components in 3-D, ~20% of cells missing. Largest |z| (parameter difference over its
    sampling standard error at N rows): EM with the holes stays within 3 of the complete-data fit; column-
    mean imputation is off by more than 10 (every covariance shrinks, the imputed rows sit between the
    clusters); listwise deletion is unbiased under MCAR (only less precise) but biased under MAR."""
    out = bias_experiment(mechanism)
    print(f"\n{mechanism}: {out['cells missing']:.1%} of cells missing, listwise deletion keeps "
          f"{out['rows kept by listwise deletion']} of 3000 rows; largest |z| (weights / means / covariances)")
    for name in ("complete data", "EM with the holes", "listwise deletion", "column-mean imputation"):
        row = "  ".join(f"{k}: " + " / ".join(f"{v:5.1f}" for v in out[name][k].values()) for k in ("vs truth", "vs complete fit"))
        print(f"  {name:24s} {row}")
    assert max(out["EM with the holes"]["vs complete fit"].values()) < 3.0
    assert max(out["column-mean imputation"]["vs complete fit"].values()) > 10.0
    if mechanism == "MAR":
        assert max(out["listwise deletion"]["vs complete fit"].values()) > 10.0


# --------------------------------------------------------------------------- rows grouped by pattern (inference.missing_blocks)


@pytest.mark.parametrize("covariance_type,method", [("full", "em"), ("diag", "em"), ("spherical", "hard_em"), ("tied", "em")])
def test_pattern_blocks_equal_the_per_row_e_step(rng, monkeypatch, covariance_type, method):
    """In memory, the E-step runs on rows grouped by pattern (per-pattern quadratic coefficients, feature sums
    mapped through the affine completion); streamed rows keep the per-row table lookups. Both, from the same
    start, give the same fit to 1e-10 (weighted rows, 5 columns, ~30 patterns, blocks of 4 rows)."""
    import inference.em_rows as em_rows

    x = np.concatenate([rng.normal(size=(300, 5)) + 3, rng.normal(size=(300, 5)) * [1, 2, 0.5, 1, 1], rng.normal(size=(300, 5)) - 3])
    x[rng.random(x.shape) < 0.25] = np.nan
    w = rng.uniform(0.0, 2.0, size=len(x))
    opts = dict(covariance_type=covariance_type, sample_weight=w, tol=0.0, max_iters=12)
    blocks = fit(method, jax.random.PRNGKey(2), x, 3, **opts)
    monkeypatch.setattr(em_rows, "_pattern_plan", lambda *a, **k: (None, None))
    per_row = fit(method, jax.random.PRNGKey(2), x, 3, **opts)
    for a, b in zip(blocks.params, per_row.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for key in blocks.trace:
        np.testing.assert_allclose(blocks.trace[key], per_row.trace[key], rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(blocks.responsibilities, per_row.responsibilities, atol=1e-10)


def test_pattern_plan_groups_every_kept_row_once():
    """Each device's kept rows appear once, grouped by pattern in whole blocks; padding is -1."""
    from inference.missing_blocks import pattern_plan

    pattern = np.array([2, 0, 1, 2, 2, 0, 1, 1, 3, 0, 2])
    keep = np.ones(pattern.size, bool)
    keep[4] = False
    order, block_pattern = pattern_plan(pattern, keep, share=6, num_devices=2, block=2, chunk=4)
    length = order.size // 2
    for d in range(2):
        local = order[d * length:(d + 1) * length]
        rows = local[local >= 0] + d * 6
        assert sorted(rows.tolist()) == [r for r in range(d * 6, min(d * 6 + 6, 11)) if keep[r]]
        blocks = local.reshape(-1, 2)
        pats = block_pattern[d * length // 2:(d + 1) * length // 2]
        for blk, p in zip(blocks, pats):
            assert all(pattern[r + d * 6] == p for r in blk if r >= 0)


def test_several_host_devices_do_not_deadlock_in_lapack():
    """jaxlib's batched LAPACK kernels split a big batch over XLA's intra-op pool and wait: on several host
    devices this deadlocked (gdb: every pool thread in BlockingCounter::Wait under lapack_dtrsm_ffi) for
    complete-data EM at D = 32, K = 8 and for the pattern tables at D = 8, K = 8. models.linalg keeps every
    call small. Subprocess, 2 host devices, each fit must finish (equal to 1 device)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "scale_scripts", "lapack_deadlock.py")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(diffs) == 3 and all(v < 1e-8 for v in diffs.values()), diffs
