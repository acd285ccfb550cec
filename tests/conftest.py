"""Test-wide setup: eight simulated CPU devices, and a compilation cache shared by the tests."""

import os
import tempfile

# Must happen before JAX initializes its backends (some test modules use JAX at collection,
# before `import sde_jax` would add its XLA CPU workaround: see sde_jax.runtime).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many tests (and the subprocesses some start) compile the same small networks: cache them.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sde_jax_test_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
