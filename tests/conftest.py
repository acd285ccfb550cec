"""Test-wide setup: eight simulated CPU devices, so sharded code paths run everywhere."""

import os

# Must happen before JAX initializes its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
