"""``inference.sharded_potential``: the NumPyro potential with its rows split over devices equals one device."""

import json
import os
import subprocess
import sys

import jax
import pytest

from inference.dispatch import valid_options
from inference.sharded_potential import AUTO_MIN_ROWS, devices_used, row_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "scale_scripts", "sharded_potential.py")


def test_potential_gradient_and_map_on_1_to_4_host_devices_equal_one_device():
    """A subprocess with 4 forced host devices, N = 1003 (divisible by none of 2, 3, 4), K = 1 and 3, with and without
    weights (zeros among them): the potential and its gradient on 2, 3, 4 devices equal one device to 1e-10 relative,
    each gradient's program holds one all-reduce and no gather; MAP on 2 devices gives the 1-device MAP point, and
    the default (``devices=None``, few rows) is the 1-device fit bit for bit."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    diffs, collectives = report["diffs"], report["collectives"]
    assert len(diffs) == 3 * 3 * 2 + 4 and len(collectives) == 3 * 3
    assert diffs["map_default_vs_devices1_params"] == 0.0  # devices=None on 1,003 rows: the one-device program
    bad = {k: v for k, v in diffs.items() if not k.startswith("map_") and not v < 1e-10}
    assert not bad, bad
    bad_map = {k: v for k, v in diffs.items() if k.startswith("map_") and not v < 1e-8}
    assert not bad_map, bad_map
    assert all(counts == [1, 0, 0] for counts in collectives.values()), collectives


def test_one_device_is_the_program_of_before():
    """Few rows or one device: no mesh (the unwrapped program); a list of devices is honoured whatever the rows."""
    assert row_mesh(None, AUTO_MIN_ROWS - 1) is None
    assert row_mesh(jax.devices()[:1], 10 * AUTO_MIN_ROWS) is None
    assert devices_used(None) == [str(jax.devices()[0])]
    for method in ("map", "svi", "nuts"):
        assert "devices" in valid_options(method)
    with pytest.raises(ValueError, match="devices must be"):
        row_mesh(["cpu"], 100)



def test_large_data_programs_compile_without_ynn_fusions_and_compute_the_same():
    """At YNN_MAX_ROWS rows or more the NumPyro engines' programs are compiled with XLA's YNNPACK fusions off (a
    speed choice, ``compiler_options``); the potential and its gradient are the same to rounding as with them."""
    import jax.numpy as jnp
    import numpy as np

    import models
    from inference._numpyro_common import enumerated, make_model, model_sites, unconstrain_fn
    from inference.sharded_potential import YNN_MAX_ROWS, compile_on_mesh, compiler_options, potential_value_and_grad

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(YNN_MAX_ROWS, 3)))
    assert compiler_options((x[:YNN_MAX_ROWS - 1], None)) is None  # small data: XLA's defaults
    options = compiler_options((x, None))
    if jax.default_backend() == "cpu":
        assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}
    start = unconstrain_fn(2, 3)(model_sites(models.from_covariances(np.array([0.3, 0.7]), rng.normal(size=(2, 3)),
                                                                      np.stack([np.eye(3)] * 2)), x.dtype))
    grad = potential_value_and_grad(enumerated(make_model(2)), None)
    fn = lambda u, rows: grad(u, rows, None)  # noqa: E731
    default_program = jax.jit(fn).lower(start, x).compile()  # XLA's default options
    executable, _ = compile_on_mesh(fn, None, (start, x))
    if options is not None:
        assert "__ynn_fusion" in default_program.as_text() and "__ynn_fusion" not in executable.as_text()
    default, chosen = default_program(start, x), executable(start, x)
    np.testing.assert_allclose(chosen[0], default[0], rtol=1e-12)
    for name in start:
        np.testing.assert_allclose(chosen[1][name], default[1][name], rtol=1e-9, atol=1e-9 * abs(float(default[0])))
