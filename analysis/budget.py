"""Before fitting: can the data identify each engine's model, and what will it cost? One job, :func:`plan_engines`.

Identifiability (effective points per component, ``points_per_component``)
---------------------------------------------------------------------------
What a Gaussian component needs is enough points for its own covariance, not fewer free parameters than rows
overall (sklearn and mclust fit full covariances at K = 3 to the 178 x 13 wine data, whose 314 parameters
exceed its rows): with N rows and K components, a component has about N / K points, and

* a full (or tied) covariance needs D + 1 of them (D points in general position span a (D-1)-dimensional
  set: the covariance would be singular), so ``N >= K (D + 1)``;
* a diagonal or spherical covariance needs 2 per component (one variance per column), ``N >= 2 K``;

the rule ``inference.diagnostics.degenerate_components`` applies to each fitted component afterwards. EM
adds ``reg_covar`` and the NumPyro engines' prior makes their posterior proper, so nothing breaks at the
boundary; beyond it the fit is not identified. K = 2, D = 50 on 60 rows (30 per component for the 51 a
full covariance needs) is such a shape: the likelihood is maximised by singular covariances, and NUTS on
its 2 651-dimensional posterior runs every trajectory to the maximum tree depth (what took 25 minutes).
There:

* MAP, SVI and NUTS (NumPyro's LKJ model) only have full covariances: they are skipped, with the reason in
  the report and in ``metrics.json`` ``failed`` (the bounded-time guard);
* EM and hard EM fall back to ``covariance_type="diag"`` (stated on stderr, in the report's notes, in the
  engine's ``covariance_type`` in ``metrics.json`` and in the manifest's engine options) unless the user chose
  a covariance type with ``--option em.covariance_type=...``: a choice is fitted as asked (EM's time is bounded
  by ``max_iters``), with a note when the rows cannot identify it;
* if no engine is left, the command stops with exit 2 and one line naming the fix: fewer columns (the
  largest D the rows allow), fewer components (``--num-components``), diagonal covariances.

Data streamed from disk (``--stream``, :mod:`analysis.streamed`): EM and hard EM read their rows in passes and
SVI reads them in minibatches (``inference.numpyro_minibatch``: its cost is that of its batches, plus a MAP start
on ``START_ROWS`` rows, one pre-pass over the file and, above ``START_ROWS`` rows, EM's passes from that start (at
most ``MINIBATCH_EM_PASSES``), ``MINIBATCH_NEWTON_PASSES`` Newton passes and one check pass); MAP and NUTS need every row in memory and are skipped the
same way (``plan_engines(..., streamed=reason)``: one note, the reason in ``metrics.json`` ``failed``), or, when
only they were asked for, exit 2 naming ``--methods em,hard_em,svi`` and ``--stream never``.

Cost (a rough model, measured on this project's 2-core CPU; expect a factor of 2-3 either way)
----------------------------------------------------------------------------------------------
One evaluation of the log-likelihood and its gradient costs ``t = 10 us + 3e-10 s x N K (D^2 + 4 D)``
(full covariances; ``N K 6 D`` for diagonal ones); measured 14 us at N=500, K=2, D=2, 0.11 ms at
N=60, K=2, D=50, 0.44 ms at N=2000, K=4, D=20, 1.3 ms at N=20000, K=2, D=10. Then, per engine, with
its options:

* EM / hard EM: compile 1.5 s + ``n_init x max_iters x t`` (the iteration cap: an upper bound);
* MAP: compile 6 s + ``n_init x num_steps x s`` (cap), ``s = 40 us + (t - 10 us)`` a step of one restart: a
  gradient's work plus ~4x a gradient's fixed cost (the enumerated ELBO and Adam; measured 50 us per restart-step
  on the seed problem, 3.8 ms at (50,000, 8, 4) where ``s`` is 5.8 ms; until session 9 the estimate was ``4 t``,
  which charged MAP 283 s and SVI 377 s there and skipped SVI under the default budget, for a MAP that took 4.7 s
  and an SVI that took 10.4 s);
* SVI: compile 8 s + ``num_steps x num_particles x s`` (cap; measured 62 us per particle-step on the seed problem,
  2.3 ms at (50,000, 8, 4)), plus MAP's cost when it cannot start from this report's MAP point;
* NUTS: compile 8 s + ``num_chains x (num_warmup + num_samples) x L x t`` (+ MAP as for SVI) with
  ``L = 8 p^(1/4)`` gradient evaluations per iteration (p free parameters; trajectories grow like
  d^(1/4) on well-conditioned posteriors; measured L ~ 20 at the seed problem and at K=3, D=5),
  capped at ``2^max_tree_depth``. An ill-conditioned posterior reaches the cap: then NUTS costs more.
  Under the Laplace metric (``laplace_mass``, by default above 100 parameters) ``L = 16``, a depth-4 tree:
  measured 7-12.6 leapfrog steps per draw from 1,000 to 50,000 rows at K = 4, D = 8 (``inference.robust_nuts``).
  At or below 100 parameters NUTS tries the Laplace metric and keeps it when the warm-ups look Gaussian
  (2x fewer steps at (5,000, 5, 3)); the estimate stays the adapted metric's, which a rejected trial exceeds
  by at most one chain's warm-up under the Laplace metric.

The budget is ``--max-seconds`` (default 600 s for ``--data``; none for the simulated seed problem):
while the total estimate exceeds it, the most expensive engine is skipped (stated); if even the
cheapest engine does not fit, exit 2 naming ``--max-seconds``.

Imports: the standard library and :mod:`analysis.errors` at module level; :mod:`models.criteria`
(which starts JAX) inside :func:`plan_engines`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.errors import ReportError

__all__ = ["plan_engines", "Plan", "estimate_seconds", "gradient_seconds", "step_seconds", "points_per_component",
           "identifiable", "DEFAULT_DATA_MAX_SECONDS", "SKIPPED"]

DEFAULT_DATA_MAX_SECONDS = 600.0
SKIPPED = "skipped: "  # prefix of a skipped engine's entry in metrics.json "failed"

NUMPYRO_METHODS = ("map", "svi", "nuts")
EM_METHODS = ("em", "hard_em")
STREAMING_METHODS = ("em", "hard_em", "svi")  # the engines that read a streamed file (svi: in minibatches)
MINIBATCH_ROWS = 4096  # inference.numpyro_minibatch's default batch_size
MINIBATCH_START_ROWS = 10_000  # inference.numpyro_minibatch.START_ROWS: the rows of its MAP start
MINIBATCH_EM_PASSES = 100  # inference.minibatch_check.EM_START_MAX_ITERS: EM's passes from that start, at most
MINIBATCH_NEWTON_PASSES = 4  # inference.minibatch_check.NEWTON_PASSES

# The engines' defaults this estimate assumes when an option is not given (inference's *_DEFAULTS).
_DEFAULTS = {
    "em": dict(max_iters=500, n_init=1, covariance_type="full"),
    "hard_em": dict(max_iters=500, n_init=1, covariance_type="full"),
    "map": dict(num_steps=3000, n_init=4),
    "svi": dict(num_steps=4000, num_particles=4, batch_size=MINIBATCH_ROWS),
    "nuts": dict(num_chains=2, num_warmup=500, num_samples=1000, max_tree_depth=10),
}
LAPLACE_STEPS = 16  # NUTS's leapfrog steps per iteration assumed under the Laplace metric (module docstring)
_GRADIENT_FIXED_SECONDS = 1e-5  # a gradient's cost that does not grow with the rows (gradient_seconds)
_COMPILE_SECONDS = {"em": 1.5, "hard_em": 1.5, "map": 6.0, "svi": 8.0, "nuts": 8.0}


def gradient_seconds(n: int, k: int, d: int, covariance_type: str = "full") -> float:
    """Seconds of one log-likelihood + gradient evaluation at N rows, K components, D columns."""
    per_row = d * d + 4 * d if covariance_type in ("full", "tied") else 6 * d
    return _GRADIENT_FIXED_SECONDS + 3e-10 * n * k * per_row


def step_seconds(n: int, k: int, d: int) -> float:
    """Seconds of one MAP restart-step or SVI particle-step (module docstring): one gradient's work, and ~4x its
    fixed cost."""
    return 4e-5 + (gradient_seconds(n, k, d) - _GRADIENT_FIXED_SECONDS)


def _option(options: dict, method: str, key: str):
    value = options.get(key, _DEFAULTS[method][key])
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(_DEFAULTS[method][key])


def estimate_seconds(method: str, n: int, k: int, d: int, options: dict, *, map_point: bool = True,
                     streamed: bool = False) -> float:
    """The rough cost model of the module docstring, in seconds, for ``method`` with ``options`` (``streamed``:
    SVI is minibatch SVI, 1 particle by default, from its own MAP start on a subsample, after a pre-pass)."""
    from models.criteria import num_parameters

    o = lambda key: _option(options, method, key)  # noqa: E731
    if method == "svi" and (streamed or options.get("batch_size") is not None):
        batch = min(n, o("batch_size"))
        particles = float(options.get("num_particles", 1))
        start = 0.0 if options.get("init", "map") != "map" else estimate_seconds(
            "map", min(n, MINIBATCH_START_ROWS), k, d, options.get("map_options") or {})
        read = n * d * 8 / 2e8  # one read of the file at ~200 MB/s
        steps = o("num_steps") if options.get("num_steps") is not None else max(o("num_steps"), n / batch + 400)
        passes = 0.0  # inference.minibatch_check: EM from the subsample's MAP, Newton passes, the final check
        if n > MINIBATCH_START_ROWS:
            passes = estimate_seconds("em", n, k, d, {"max_iters": MINIBATCH_EM_PASSES}) + MINIBATCH_NEWTON_PASSES * (
                gradient_seconds(n, k, d) + read)
        return (_COMPILE_SECONDS["svi"] + steps * particles * 4 * gradient_seconds(batch, k, d) + start + read + passes
                + gradient_seconds(n, k, d) + read)
    if method in EM_METHODS:
        cov = options.get("covariance_type", "full")
        return _COMPILE_SECONDS[method] + o("n_init") * o("max_iters") * gradient_seconds(n, k, d, cov)
    t = gradient_seconds(n, k, d)
    start = 0.0 if map_point or options.get("init", "map") != "map" else estimate_seconds("map", n, k, d, options.get("map_options") or {})
    if method == "map":
        return _COMPILE_SECONDS["map"] + o("n_init") * o("num_steps") * step_seconds(n, k, d)
    if method == "svi":
        return _COMPILE_SECONDS["svi"] + o("num_steps") * o("num_particles") * step_seconds(n, k, d) + start
    if method == "nuts":
        from inference.numpyro_nuts import uses_laplace_mass

        p = num_parameters(k, d, "full")  # NUTS's unconstrained parameters too
        laplace = uses_laplace_mass(options.get("laplace_mass", "auto"), p)
        steps = min(LAPLACE_STEPS if laplace else 8 * p**0.25, 2 ** o("max_tree_depth"))
        return _COMPILE_SECONDS["nuts"] + o("num_chains") * (o("num_warmup") + o("num_samples")) * steps * t + start
    raise ValueError(f"unknown method {method!r}")


@dataclass
class Plan:
    """What :func:`plan_engines` decided: the engines to fit with their (possibly changed) options,
    ``skipped`` {method: reason} (for metrics.json "failed"), ``notes`` (one line each, printed),
    ``estimates`` {method: seconds} of the engines kept."""

    methods: list
    options: dict
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    estimates: dict = field(default_factory=dict)


def points_per_component(d: int, covariance_type: str = "full") -> int:
    """Points a component needs for its covariance: D + 1 for a full or tied one, 2 for a diagonal or
    spherical one (the effective-points rule of ``inference.diagnostics.degenerate_components``)."""
    return d + 1 if covariance_type in ("full", "tied") else 2


def identifiable(n: int, d: int, k: int, covariance_type: str = "full") -> bool:
    """Whether N rows give K components about the points their covariance needs: ``N >= K x points``."""
    return n >= k * points_per_component(d, covariance_type)


def plan_engines(methods, options: dict, n: int, d: int, k: int, max_seconds: float | None,
                 streamed: str | None = None) -> Plan:
    """Decide which engines to fit on N x D data with K components (see the module docstring).

    ``streamed``: the data stay on disk, for this reason (one line): MAP and NUTS are skipped with it, SVI runs
    in minibatches (its estimate is of its batches).
    Raises ReportError (one line, exit 2) when no engine can be identified from the data, when only
    in-memory engines were asked for streamed data, or when even the cheapest one would run past
    ``max_seconds`` (None or inf: no budget).
    """
    options = {m: dict(options.get(m, {})) for m in methods}
    plan = Plan(methods=[], options=options)
    if streamed:
        in_memory = [m for m in methods if m not in STREAMING_METHODS]
        if len(in_memory) == len(methods):
            raise ReportError(f"{streamed}, and {', '.join(in_memory)} need every row in memory: use --methods "
                              "em,hard_em,svi (they stream; svi in minibatches), or --stream never (loads the file)")
        for m in in_memory:
            plan.skipped[m] = (f"{SKIPPED}{streamed}; {m} needs every row in memory (em, hard_em and svi stream; "
                               "--stream never loads the file)")
        if in_memory:
            plan.notes.append(f"{streamed}: {', '.join(in_memory)} skipped (they need every row in memory; em, "
                              "hard_em and svi (minibatch) stream)")
        methods = [m for m in methods if m in STREAMING_METHODS]
    full_ok, diag_ok = identifiable(n, d, k, "full"), identifiable(n, d, k, "diag")
    why_full = (f"full covariances for K={k}, D={d} need {points_per_component(d, 'full')} points per component "
                f"(D + 1), the {n} rows give about {n / k:.0f} (not identifiable)")
    fallback, unidentified_choice = [], []
    for m in methods:
        if m in NUMPYRO_METHODS:
            if not full_ok:
                plan.skipped[m] = f"{SKIPPED}{why_full}; this engine has full covariances only"
                continue
        else:
            given = options[m].get("covariance_type")
            if given is None and not full_ok and diag_ok:
                options[m]["covariance_type"] = "diag"
                fallback.append(m)
            elif given is None and not full_ok:
                raise ReportError(_fix(f"{m}: K={k} components need at least {2 * k} rows even with diagonal "
                                       f"covariances, got {n}", n, d, k))
            elif given is not None and not identifiable(n, d, k, given):
                unidentified_choice.append(f"{m} fits covariance_type={given!r} as asked, but {n} rows give about "
                                           f"{n / k:.0f} points per component for the {points_per_component(d, given)} "
                                           "it needs: expect degenerate components")
        plan.methods.append(m)
    unidentified = [m for m, why in plan.skipped.items() if why.startswith(f"{SKIPPED}{why_full}")]
    if plan.methods and (fallback or unidentified):
        parts = [f"{', '.join(fallback)} fit diagonal covariances instead"] if fallback else []
        parts += [f"{', '.join(unidentified)} skipped (full covariances only)"] if unidentified else []
        plan.notes.append(f"{why_full}: " + "; ".join(parts))
    plan.notes += unidentified_choice
    if not plan.methods:
        raise ReportError(_fix(f"{why_full}, and {', '.join(methods)} fit full covariances only", n, d, k,
                               "--methods em,hard_em (diagonal covariances)" if diag_ok else None))

    def estimates():
        return {m: estimate_seconds(m, n, k, d, options[m], map_point="map" in plan.methods, streamed=bool(streamed))
                for m in plan.methods}

    est = estimates()
    over = []
    budget = math.inf if max_seconds is None else float(max_seconds)
    while sum(est.values()) > budget:
        worst = max(est, key=est.get)
        if len(est) == 1:
            raise ReportError(f"{worst} is estimated at ~{est[worst]:.0f} s, over --max-seconds {budget:g}: "
                              f"raise --max-seconds, use fewer rows, or cap its iterations (--option {worst}."
                              f"{'max_iters' if worst in EM_METHODS else 'num_steps' if worst != 'nuts' else 'num_warmup'}=...)")
        plan.skipped[worst] = (f"{SKIPPED}estimated ~{est[worst]:.0f} s (a rough model), over the budget of "
                               f"--max-seconds {budget:g} s for all engines; raise --max-seconds to fit it")
        over.append(f"{worst} ~{est[worst]:.0f}s")
        plan.methods.remove(worst)
        est = estimates()
    if over:
        plan.notes.append(f"the engines' estimated cost exceeds --max-seconds {budget:g}: skipped {', '.join(over)} "
                          "(raise --max-seconds to fit them)")
    plan.estimates = est
    return plan


def _fix(message: str, n: int, d: int, k: int, diag_hint: str | None = None) -> str:
    """``message`` and the fixes the rows allow: fewer components, fewer columns (the largest K and D whose
    full covariances the rows identify), ``diag_hint``, more rows."""
    d_full = n // k - 1  # K (D + 1) <= N
    k_full = n // (d + 1)
    hints = [f"--num-components {k_full}"] if 1 <= k_full < k else []
    if 1 <= d_full < d:
        hints.append(f"at most {d_full} columns (full covariances, K={k})")
    if diag_hint:
        hints.append(diag_hint)
    hints.append("more rows")
    return f"{message}; use " + ", or ".join(hints)


def plan_report(args, methods, options: dict, data, k: int, progress) -> Plan:
    """:func:`plan_engines` for ``gmm-report``'s parsed ``args`` and the problem's data source ``data``
    (``analysis.problem.DataSource``: its ``shape`` (N, D), whether the default budget applies
    (``budgeted``: user data) and why the in-memory engines cannot run (``skip_reason()``: streamed)).
    The budget is ``args.max_seconds``, by default ``DEFAULT_DATA_MAX_SECONDS`` for ``--data`` and none for
    the seed problem; ``inf`` or 0 turns it off. Prints the estimate (a progress line) and every decision
    (one ``gmm-report: note:`` line each, shown even with ``--quiet``)."""
    import sys

    n, d = data.shape
    max_seconds = getattr(args, "max_seconds", None)
    if max_seconds is None and data.budgeted:
        max_seconds = DEFAULT_DATA_MAX_SECONDS
    if max_seconds is not None and (max_seconds <= 0 or math.isinf(max_seconds)):
        max_seconds = None
    plan = plan_engines(methods, options, int(n), int(d), int(k), max_seconds, streamed=data.skip_reason())
    total = sum(plan.estimates.values())
    progress("cost estimate (rough): " + ", ".join(f"{m} ~{s:.0f}s" for m, s in plan.estimates.items())
             + f"; total ~{total:.0f}s" + (f" (budget --max-seconds {max_seconds:g})" if max_seconds else ""))
    for line in plan.notes:
        print(f"gmm-report: note: {line}", file=sys.stderr, flush=True)
    return plan
