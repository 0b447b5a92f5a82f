"""EM's E-step on in-memory rows with NaN holes at the speed of the complete program: rows grouped by pattern.

For one missingness pattern p and component k every quantity of :mod:`inference.missing_em`'s E-step is a
polynomial in ``x'`` (the row with 0 at its holes, centred):

* the log joint of the observed sub-vector is a quadratic, ``quadratic_features(x') . A_pk`` with ``A_pk``
  built from the pattern's whitening ``W_pk`` exactly as :func:`models.quadratic.log_prob_coefficients`
  builds it from a covariance (the observed block's precision ``W^T W``, masked);
* the completed row is affine, ``xhat = B_pk x' + b_pk`` with ``B = I + G W`` and ``b = fill - G offset``
  (:class:`models.missing.PatternTables`), so ``sum_n r_nk xhat`` and ``sum_n r_nk xhat xhat^T`` are
  ``B S1 + b S0`` and ``B S2 B^T + B S1 b^T + b S1^T B^T + S0 b b^T`` of the feature sums
  ``T_pk = sum_{n in p} r_nk quadratic_features(x'_n)`` (S0, S1, S2 its parts).

So a block of rows of ONE pattern costs the complete program's two GEMMs with that pattern's coefficients.
The host sorts each device's rows by pattern (:func:`pattern_plan`: a permutation, no copy of the data) and
pads every pattern's group to whole blocks of ``block`` rows (index -1: weight 0); a chunk of the fold is
``chunk / block`` blocks, gathered through the permutation, with one (K, F) coefficient gather per block,
not one (K, D, D) table gather per row (26x the complete program at (2e5, 8, 8), which this replaces). The
feature sums are accumulated per pattern, (P, K, F), and mapped through ``B, b`` once per E-step
(:func:`stats_from_pattern_sums`). Diag and spherical covariances have ``G = 0`` (``B = I``): their diagonal
second moments need only the diagonal features. Streamed rows keep the per-row E-step.

Ghahramani & Jordan (1994); Murphy, *Machine Learning: a Probabilistic Perspective*, 11.6.1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from models.quadratic import quadratic_features, upper_indices

from .missing_em import observed_table
from .rows import ROW_AXIS, to_compute
from .stats import weighted_posterior

MAX_BLOCK = 256  # rows per block of one pattern (padding <= (block - 1) rows per pattern and device)


# --------------------------------------------------------------------------- host side


def block_size(num_rows: int, num_patterns: int, chunk_size: int) -> int:
    """Rows per block: a power of two dividing ``chunk_size``, at most ``MAX_BLOCK``, small enough that the
    padding (about ``num_patterns * block / 2`` rows) stays near 1/16 of the rows."""
    target = max(1, num_rows // (8 * max(1, num_patterns)))
    block = 1
    while block * 2 <= min(target, MAX_BLOCK) and chunk_size % (block * 2) == 0:
        block *= 2
    return block


def pattern_plan(pattern: np.ndarray, keep: np.ndarray, share: int, num_devices: int, block: int, chunk: int):
    """The permutation that groups each device's rows by pattern.

    Parameters
    ----------
    pattern : (N,) int, each row's index into the program's code table.
    keep : (N,) bool, rows that carry weight (rows with nothing observed or weight 0 are left out).
    share : rows per device (device d holds rows ``d * share ..`` at the front of its block).
    num_devices, block, chunk : the mesh size, rows per block, rows per chunk (a multiple of ``block``).

    Returns
    -------
    order : (num_devices * L,) int32, local row index per slot (-1: padding), L a multiple of ``chunk``.
    block_pattern : (num_devices * L / block,) int32, the pattern of every block (0 for padding blocks).
    """
    orders, patterns = [], []
    for d in range(num_devices):
        lo, hi = min(d * share, pattern.size), min((d + 1) * share, pattern.size)
        local = np.flatnonzero(keep[lo:hi])
        groups = pattern[lo:hi][local]
        sort = np.argsort(groups, kind="stable")
        local, groups = local[sort], groups[sort]
        values, starts, counts = np.unique(groups, return_index=True, return_counts=True)
        padded = -(-counts // block) * block
        order = np.full(int(padded.sum()), -1, np.int64)
        where = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        for first, start, count in zip(where, starts, counts):
            order[first : first + count] = local[start : start + count]
        orders.append(order)
        patterns.append(np.repeat(values, padded // block))
    length = max(chunk, -(-max(o.size for o in orders) // chunk) * chunk)
    order = np.concatenate([np.concatenate([o, np.full(length - o.size, -1)]) for o in orders]).astype(np.int32)
    block_pattern = np.concatenate([np.concatenate([p, np.zeros(length // block - p.size, p.dtype)])
                                    for p in patterns]).astype(np.int32)
    return order, block_pattern


# --------------------------------------------------------------------------- device side


def pattern_coefficients(tables, codes_table, full_moment: bool):
    """(P, K, F) coefficients: ``quadratic_features(x') @ A_pk`` = log joint of the observed sub-vector."""
    num_features = tables.whiten.shape[-1]
    observed = observed_table(codes_table, num_features).astype(tables.whiten.dtype)[:, None, :]  # (P, 1, D)
    whiten = tables.whiten * observed[..., None, :]  # columns of the holes: x' is 0 there
    precision = jnp.swapaxes(whiten, -1, -2) @ whiten  # (P, K, D, D), 0 outside the observed block
    linear = jnp.einsum("pkij,pki->pkj", whiten, tables.offset)
    constant = tables.log_norm - 0.5 * jnp.sum(tables.offset**2, axis=-1)
    if full_moment:
        upper_i, upper_j = upper_indices(num_features)
        factor = jnp.asarray(np.where(upper_i == upper_j, 0.5, 1.0), whiten.dtype)
        quadratic = -(precision[..., upper_i, upper_j] * factor)
    else:
        quadratic = -0.5 * jnp.diagonal(precision, axis1=-2, axis2=-1)
    return jnp.concatenate([quadratic, linear, constant[..., None]], axis=-1)


def block_estep_chunk(coefficients, xc, wc, block_pattern, *, hard: bool, full_moment: bool):
    """One chunk of ``m`` blocks of ``b`` rows, every block of one pattern: xc (m * b, D) zero-filled and
    centred, wc (m * b,), block_pattern (m,). Returns ((m, K, F) feature sums, log_lik, sum_nk r log-joint
    (soft), worst_ll, worst_rows)."""
    num_blocks = block_pattern.shape[0]
    rows = xc.shape[0]
    features = quadratic_features(xc, full_moment).reshape(num_blocks, rows // num_blocks, -1)  # (m, b, F)
    coeff = coefficients[block_pattern]  # (m, K, F)
    num_components = coeff.shape[1]
    joint = jnp.einsum("mbf,mkf->mbk", features, coeff).reshape(rows, num_components)
    _, resp, _, log_lik, worst_ll, worst_rows = weighted_posterior(joint, wc, xc, hard)
    sums = jnp.einsum("mbk,mbf->mkf", resp.reshape(num_blocks, -1, num_components), features)
    return sums, log_lik, jnp.zeros((), xc.dtype), worst_ll, worst_rows


def block_pass(layout, data, chunk_fn, zero, args, merge):
    """Fold ``chunk_fn`` over every device's pattern-sorted blocks (``data.order``, ``data.block_pattern``),
    ``chunk_fn(args, x_chunk, w_chunk, block_pattern)`` returns a NamedTuple whose ``stats`` (m, K, F) are
    scatter-added into the accumulator's (P, K, F); devices combine by ``all_gather`` + ``merge`` in device
    order (sums, and hard EM's worst rows, which are not a sum)."""
    block = data.order.shape[0] // data.block_pattern.shape[0]
    chunk = layout.chunk_size // block * block
    per_chunk = chunk // block

    def fold(args, x_local, w_local, order, block_pattern, center):
        num_chunks = order.shape[0] // chunk

        def body(i, acc):
            idx = jax.lax.dynamic_slice_in_dim(order, i * chunk, chunk)
            pb = jax.lax.dynamic_slice_in_dim(block_pattern, i * per_chunk, per_chunk)
            valid = idx >= 0
            safe = jnp.where(valid, idx, 0)
            xc, wc = to_compute(x_local[safe], w_local[safe], center)
            xc = jnp.where(jnp.isnan(xc) | ~valid[:, None], 0.0, xc)
            wc = jnp.where(valid, wc, 0.0)
            part = chunk_fn(args, xc, wc, pb)
            return merge(acc, part._replace(stats=jnp.zeros_like(acc.stats).at[pb].add(part.stats)))

        return jax.lax.fori_loop(0, num_chunks, body, zero)

    if layout.mesh is None:
        return fold(args, data.x, data.w, data.order, data.block_pattern, data.center)

    def per_device(args, x_local, w_local, order, block_pattern, center):
        acc = fold(args, x_local, w_local, order, block_pattern, center)
        gathered = jax.lax.all_gather(acc, ROW_AXIS)
        out = jax.tree.map(lambda a: a[0], gathered)
        for d in range(1, layout.num_devices):
            out = merge(out, jax.tree.map(lambda a, d=d: a[d], gathered))
        return out

    rows = P(ROW_AXIS)
    run = jax.shard_map(per_device, mesh=layout.mesh, in_specs=(P(), rows, rows, rows, rows, P()), out_specs=P(),
                        check_vma=False)
    return run(args, data.x, data.w, data.order, data.block_pattern, data.center)


def stats_from_pattern_sums(tables, sums, full_moment: bool):
    """(counts (K,), sum_x (K, D), sum_xx (K, D, D) or (K, D), per_pattern (P, K)) of the completed rows
    (without the conditional covariances: :func:`inference.missing_em.finish_stats` adds them) from the
    per-pattern feature sums ``sums`` (P, K, F)."""
    num_features = tables.whiten.shape[-1]
    eye = jnp.eye(num_features, dtype=sums.dtype)
    gain_b = tables.gain @ tables.whiten  # (P, K, D, D)
    shift = tables.fill - jnp.einsum("pkij,pkj->pki", tables.gain, tables.offset)  # b (P, K, D)
    width = num_features * (num_features + 1) // 2 if full_moment else num_features
    s0 = sums[..., -1]  # (P, K)
    s1 = sums[..., width : width + num_features]  # (P, K, D)
    mapped = s1 + jnp.einsum("pkij,pkj->pki", gain_b, s1)  # B S1
    sum_x = jnp.sum(mapped + shift * s0[..., None], axis=0)
    if full_moment:
        upper_i, upper_j = upper_indices(num_features)
        upper = jnp.zeros(sums.shape[:2] + (num_features, num_features), sums.dtype).at[..., upper_i, upper_j].set(
            sums[..., :width])
        s2 = upper + jnp.swapaxes(upper, -1, -2) - upper * eye
        b_s2 = s2 + gain_b @ s2
        second = b_s2 + b_s2 @ jnp.swapaxes(gain_b, -1, -2)  # B S2 B^T
        cross = mapped[..., :, None] * shift[..., None, :]
        second = second + cross + jnp.swapaxes(cross, -1, -2) + s0[..., None, None] * shift[..., :, None] * shift[..., None, :]
    else:  # diag / spherical: G = 0, B = I
        second = sums[..., :width] + 2.0 * shift * s1 + s0[..., None] * shift**2
    return jnp.sum(s0, axis=0), sum_x, jnp.sum(second, axis=0), s0


def expected_joint(sums, coefficients):
    """``sum_nk r_nk log joint_nk`` from the feature sums (P, K, F) and the coefficients (P, K, F)."""
    return jnp.sum(jnp.where(sums != 0, sums * coefficients, 0.0))


__all__ = ["MAX_BLOCK", "block_size", "pattern_plan", "pattern_coefficients", "block_estep_chunk", "block_pass",
           "stats_from_pattern_sums", "expected_joint"]
