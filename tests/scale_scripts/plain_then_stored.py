"""Run twice with the same argv[1] (a cache directory): the model's sampler called plainly (the first process writes
JAX's persistent cache, the second reads it back), then in the second (argv[2] == "stored") through the executable
store: kept, forgotten, read back from its file and run. argv[2] == "poisoned": first a program kept the way the code
before the fix kept it (without its kernels), read back and run (healed). Prints one JSON line of the draws' sums."""

import json
import pathlib
import sys
import warnings

import jax

jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # as analysis.cli.enable_compilation_cache
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import numpy as np  # noqa: E402

import models  # noqa: E402
from inference import executable_store  # noqa: E402
from models import predictive  # noqa: E402

truth, key = models.seed_problem(), jax.random.PRNGKey(7)
out = {"plain": [float(np.asarray(a).sum()) for a in jax.tree.leaves(models.sample(key, truth, 40))]}
if sys.argv[2] == "poisoned":
    # the code before the fix: no FRESH_OPTIONS, so JAX's in-memory cache hands back the program it read from its
    # persistent cache, which is kept without its kernels; the next read-back must notice and compile it again
    fresh_options = executable_store.FRESH_OPTIONS
    executable_store.FRESH_OPTIONS = {}
    with predictive.programs_called_by(executable_store.stored_call):
        models.sample(key, truth, 40)
    executable_store.FRESH_OPTIONS = fresh_options
    executable_store.clear_programs()
    with warnings.catch_warnings(record=True) as caught, predictive.programs_called_by(executable_store.stored_call):
        warnings.simplefilter("always")
        out["healed"] = [float(np.asarray(a).sum()) for a in jax.tree.leaves(models.sample(key, truth, 40))]
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
if sys.argv[2] in ("stored", "poisoned"):
    for name in ("kept", "read_back"):
        executable_store.clear_programs()
        with predictive.programs_called_by(executable_store.stored_call):
            out[name] = [float(np.asarray(a).sum()) for a in jax.tree.leaves(models.sample(key, truth, 40))]
    out["files"] = len(list(pathlib.Path(executable_store.store_dir()).glob("*.pkl")))
print(json.dumps(out))
