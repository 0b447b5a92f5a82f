"""Minibatch SVI (issue 24, part 4): the batch ELBO is an unbiased estimate of the full ELBO; its posterior agrees
with full-batch SVI; a streamed .npy runs SVI in gmm-report instead of skipping it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inference
import models
from analysis.cli import main
from inference.numpyro_minibatch import BatchReader, fit_minibatch_svi, minibatch_loss
from inference.standardize import Standardizer
from models.gmm import sites_from_params


def _seed_data(n, seed=1):
    x, _ = models.sample(jax.random.PRNGKey(seed), models.to_numpy(models.seed_problem()), n)
    return np.array(x, np.float64)  # a writable copy


def test_minibatch_elbo_is_an_unbiased_estimate_of_the_full_elbo():
    n, k, b, reps = 1000, 2, 100, 200
    x = _seed_data(n)
    x = (x - x.mean(axis=0)) / x.std(axis=0)  # the engines' standardised units
    # fixed guide parameters: locations at a point near the fit, scales 0.05 (unconstrained space)
    from inference._numpyro_common import site_supports, to_unconstrained

    truth = models.to_numpy(models.seed_problem())
    point = models.GMMParams(truth.weights, (truth.means - 0.1) / 1.2, truth.scale_tril / 1.2)
    unconstrained = to_unconstrained(sites_from_params(point), site_supports(k, 2))
    params = {f"{name}_auto_loc": jnp.asarray(v) for name, v in unconstrained.items()}
    params.update({f"{name}_auto_scale": jnp.full_like(jnp.asarray(v), 0.05) for name, v in unconstrained.items()})
    loss = jax.jit(lambda key, xb: minibatch_loss(key, params, xb, n, k))
    keys = jax.random.split(jax.random.PRNGKey(0), reps)
    # B = N: every row, scale 1 -- exactly the full loss
    np.testing.assert_allclose(float(loss(keys[0], x)), float(minibatch_loss(keys[0], params, jnp.asarray(x), n, k)),
                               rtol=1e-12)
    reader = BatchReader(x, n, Standardizer(np.zeros(2), np.ones(2)), b, seed=7)
    full = np.array([float(loss(key, x)) for key in keys])
    batch = np.array([float(loss(key, reader.batch())) for key in keys])
    diff = batch - full  # the same key: the same guide draw, so only the batch differs
    se = diff.std(ddof=1) / np.sqrt(reps)
    assert abs(diff.mean()) <= 3 * se, (diff.mean(), se)
    assert abs(batch.mean() - full.mean()) <= 3 * np.hypot(batch.std(ddof=1), full.std(ddof=1)) / np.sqrt(reps)
    # the scale matters: without N / B the batch loss would be ~B / N of the full one
    assert abs(batch.mean() / full.mean() - 1) < 0.05


def test_minibatch_posterior_agrees_with_full_batch_svi():
    n = 20_000
    x = _seed_data(n, seed=2)
    key = jax.random.PRNGKey(3)
    full = inference.fit("svi", key, x, 2, progress=False, num_draws=2000)
    mini = inference.fit("svi", key, x, 2, batch_size=1000, num_draws=2000, progress=False)
    assert mini.info["minibatch"]["batch_size"] == 1000 and not mini.info["minibatch"]["streamed"]
    assert mini.converged, mini.info["warnings"]
    # the two fits' labels are their own: put mini's components in full's order (closest means)
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(full.params.means[:, None, :] - mini.params.means[None, :, :], axis=-1)
    perm = linear_sum_assignment(cost)[1]
    for name in ("weights", "means", "scale_tril"):
        a, b = np.asarray(getattr(full.samples, name))[0], np.asarray(getattr(mini.samples, name))[0][:, perm]
        sd = a.std(axis=0)
        keep = sd > 0  # (the upper triangle of scale_tril is 0)
        gap = np.abs(a.mean(axis=0) - b.mean(axis=0))[keep] / sd[keep]
        assert gap.max() < 3.0, (name, gap.max())
        ratio = b.std(axis=0)[keep] / sd[keep]
        assert np.all((ratio > 0.7) & (ratio < 1.3)), (name, ratio)
        print(name, "max |mean gap| / sd", gap.max(), "sd ratio", ratio.min(), ratio.max())


def test_streamed_npy_runs_minibatch_svi_in_the_report(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 6.0]])
    x = centres[rng.integers(0, 3, 3000)] + rng.normal(size=(3000, 3))
    path = tmp_path / "blobs.npy"
    np.save(path, x)
    out = tmp_path / "r"
    code = main(["--data", str(path), "--stream", "always", "-k", "3", "--methods", "em,svi,nuts", "--out", str(out),
                 "--quiet", "--option", "svi.num_steps=600", "--option", "svi.batch_size=256",
                 "--option", "svi.num_draws=100", "--option", "svi.map_options={'num_steps': 500, 'n_init': 2}"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "nuts skipped" in err and "svi" not in err.split("skipped")[0].split("note:")[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["engines"]) == {"em", "svi"} and set(metrics["failed"]) == {"nuts"}
    card, em = metrics["engines"]["svi"], metrics["engines"]["em"]
    # all 3,000 rows scored at SVI's estimate: within a few nats of EM's maximum
    assert card["log_likelihood"] <= em["log_likelihood"] + 1.0
    assert card["log_likelihood"] > em["log_likelihood"] - 30.0
    assert sorted(card["cluster_sizes"]) == sorted(em["cluster_sizes"]) or \
        np.abs(np.sort(card["cluster_sizes"]) - np.sort(em["cluster_sizes"])).max() <= 30
    page = (out / "report.html").read_text()
    assert "minibatch" in page and (out / "svi.nc").exists()


def test_minibatch_svi_takes_missing_values_from_a_streamed_file(tmp_path):
    """NaN cells (15%, missing completely at random): the pre-pass finds the patterns, each batch is scored on its
    observed entries; the fit lands on the seed truth (after sorting the components)."""
    x = _seed_data(4000, seed=4)
    x[np.random.default_rng(5).random(x.shape) < 0.15] = np.nan
    x = x[~np.isnan(x).all(axis=1)]
    path = tmp_path / "holes.npy"
    np.save(path, x)
    r = fit_minibatch_svi(jax.random.PRNGKey(0), str(path), 2, batch_size=256, num_steps=1000, num_draws=100,
                          progress=False)
    truth = models.to_numpy(models.seed_problem())
    order, true_order = np.argsort(r.params.means[:, 0]), np.argsort(truth.means[:, 0])
    np.testing.assert_allclose(r.params.means[order], truth.means[true_order], atol=0.15)
    np.testing.assert_allclose(r.params.weights[order], truth.weights[true_order], atol=0.05)
    assert np.isfinite(r.trace["log_likelihood"]).all() and np.isfinite(r.trace["elbo"]).all()
    assert r.responsibilities.shape == (0, 2) and r.info["minibatch"]["streamed"]  # a file: no N x K in memory
    with pytest.raises(ValueError, match="inf"):
        bad = x.copy()
        bad[7, 0] = np.inf
        fit_minibatch_svi(jax.random.PRNGKey(0), bad, 2, batch_size=256, num_steps=10, progress=False)


def test_the_warning_advises_more_steps_only_while_rows_are_unseen():
    """A guide that did not converge before seeing N rows is told to raise num_steps or batch_size; one that saw every
    row and still moved is not (on 25,000,000 rows from a subsample's MAP neither helped: README), and both name the
    failed conditions."""
    from inference.numpyro_minibatch import _warnings

    chunk = dict(rows_seen=16_384_000, gradient_z=9.2, location_drift=0.73, scale_drift=0.14, loss_steady=True)
    unseen = _warnings(False, 4000, chunk, 0.25, 4096, 25_000_000)
    seen = _warnings(False, 10_000, dict(chunk, rows_seen=40_960_000), 0.25, 4096, 25_000_000)
    assert len(unseen) == len(seen) == 1
    assert "raise num_steps or batch_size" in unseen[0] and "16,384,000 rows of 25,000,000" in unseen[0]
    assert "raise num_steps" not in seen[0] and "it saw every row" in seen[0] and "N / batch_size = 6,104" in seen[0]
    for text in (unseen[0], seen[0]):
        assert "9.2 standard errors" in text and "0.73 of their posterior sd" in text
    assert _warnings(True, 4000, chunk, 0.25, 4096, 25_000_000) == []
