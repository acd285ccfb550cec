"""The benchmark runner's and the training-time estimate's pure parts (not the timings)."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import estimate, run, training


def test_step_flops_counts_a_matmul():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    assert training.step_flops(compiled) == pytest.approx(2 * 64 * 32 * 16, rel=0.01)


@pytest.mark.parametrize(
    ("kind", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),
        ("NVIDIA H100 PCIe", "float32", 378.0),
        ("NVIDIA H200", "float32", 495.0),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
        ("TPU v4", "float32", 275.0),
        ("cpu", "float32", None),
    ],
)
def test_peak_tflops(kind, dtype, peak):
    assert run.peak_tflops(kind, dtype) == peak


def test_peak_and_mfu_reject_bad_input():
    with pytest.raises(ValueError, match="dtype must be"):
        run.peak_tflops("NVIDIA H100", "float16")
    with pytest.raises(ValueError, match="step_s"):
        run.mfu(1e12, 0.0, 989.0)


def test_gpu_throughput_reports_images_per_second_and_mfu(monkeypatch):
    # The accelerator path on CPU: the measured step is replaced, the arithmetic is real.
    kind = jax.devices()[0].device_kind
    monkeypatch.setitem(run.PEAK_TFLOPS, kind, (4.0, 2.0))
    n = jax.device_count()

    def fake_measure(devices, size, repeats, batch, dtype):
        assert (devices, size, batch) == (n, "full", n * 128)
        return {"batch": batch, "step_s": 0.5, "flops": 0.25e12}

    monkeypatch.setattr(training, "measure", fake_measure)
    summary, details = run.gpu_throughput({"repeats": 1}, lambda message: None)
    values = {row[1]: row[2] for row in summary}
    assert values["images / s, float32"] == pytest.approx(n * 128 / 0.5)
    # 0.25 TFLOP per device in 0.5 s = 0.5 TFLOP/s, over a 2 (float32) or 4 (bf16) peak.
    assert values["MFU, float32"] == pytest.approx(0.25)
    assert values["MFU, bfloat16"] == pytest.approx(0.125)
    assert any("MFU" in line for line in details)


def test_markdown_table_and_report():
    lines = run.markdown_table(["a", "b"], [[1.23456, "x|y"], [float("nan"), True]])
    assert lines == ["| a | b |", "|---|---|", "| 1.23 | x\\|y |", "| n/a | True |"]
    machine = run.machine_description()
    assert machine["cores"] >= 1 and machine["jax"] == jax.__version__
    assert machine["backend"] == jax.default_backend() and machine["cpu"]
    text = run.report(machine, [["train step", "images / s", 12.5, ""]], {"T": ["x"]}, 90, "")
    assert "| train step | images / s | 12.5 |  |" in text
    assert "## T" in text and "in 1.5 min" in text and f"| jaxlib | {machine['jaxlib']} |" in text


def test_allreduce_bytes():
    assert estimate.allreduce_bytes(1000, 4) == 2 * 3 / 4 * 1000 * 4
    assert estimate.allreduce_bytes(1000, 1) == 0
    with pytest.raises(ValueError, match="devices"):
        estimate.allreduce_bytes(1000, 0)


def test_estimate_arithmetic():
    system = {"devices": 4, "peak_tflops": 100.0, "allreduce_gbps": (10.0, 100.0)}
    lo, hi = estimate.MFU_RANGE
    r = estimate.estimate(1e12, 10**9, system)
    compute_fast, compute_slow = 1e12 / (100e12 * hi), 1e12 / (100e12 * lo)
    comm_bytes = 2 * 3 / 4 * 4e9
    assert r["step_s"][0] == pytest.approx(max(compute_fast, comm_bytes / 100e9))
    assert r["step_s"][1] == pytest.approx(compute_slow + comm_bytes / 10e9)
    assert r["hours"][1] == pytest.approx(r["step_s"][1] * estimate.STEPS / 3600)


def test_train_step_flops_grow_with_the_batch():
    from configs.ve import cifar10_ncsnpp_continuous

    config = cifar10_ncsnpp_continuous.get_config("smoke")
    f2, params = estimate.train_step_flops(2, config)
    f4, same = estimate.train_step_flops(4, config)
    assert params == same > 0
    # The network's FLOPs scale with the batch; the optimizer's (per parameter) do not.
    two_images = f4 - f2
    fixed = f2 - two_images
    assert two_images > 0 and 0 < fixed < 0.1 * f2


def _loop_results():
    rows = {
        "forward": {"ms": 10.0, "nfe": None},
        "lax.scan": {"ms": 8.0, "nfe": None},
        "pc (reverse diffusion + langevin)": {"ms": 10.5, "nfe": 40},
        "likelihood solve (per evaluation)": {"ms": 15.0, "nfe": 100},
    }
    for row in rows.values():
        row["ratio"] = row["ms"] / 10.0
    network = {
        "rows": rows,
        "compile_s": {"forward": 2.0, "train step": 9.0},
        "likelihood": {
            "nfe": 100, "original_nfe": 98, "ms_per_nfe": 15.0, "augmented_ms": 20.0,
            "original_ms_per_nfe": 33.0, "compile_s": 5.0,
        },
        "forward_ms": 10.0,
    }  # fmt: skip
    fir_row = {"function": "upsample_2d", "slices_alone_ms": 0.2, "slices_loop_ms": 3.0}
    fir_row |= {"depthwise_alone_ms": 7.0, "depthwise_loop_ms": 150.0}
    return {
        "networks": {"ncsnpp_ve": network},
        "before_after": {"now": {"forward_ms": 9.0, "pc_ms_per_nfe": 7.0}},
        "fir": [fir_row],
        "num_steps": 20,
    }


def test_models_in_loops_summary():
    from benchmarks import models_in_loops as mil

    original = {"ncsnpp_ve": {"pc_sampler": {"ms_per_nfe": 14.0, "compile_s": 6.0}}}
    original["ncsnpp_ve"]["score_fn"] = {"ms_per_call_median": 20.0}
    rows = {row[1]: row for row in mil.summary_rows(_loop_results(), original)}
    worst = rows["NCSN++ (FIR), VE: per evaluation in loops and samplers / forward alone (max)"]
    # The worst loop is the sampler (1.05); the likelihood is compared with its own evaluation.
    assert worst[2] == pytest.approx(1.05) and worst[3].startswith("pc (reverse")
    assert "0.75" in worst[3]
    lik = rows["NCSN++ (FIR), VE: likelihood, original design / sde_jax, time per evaluation"]
    assert lik[2] == pytest.approx(33.0 / 15.0)
    vs = rows["NCSN++ (FIR), VE: PC sampler ms per evaluation, sde_jax / original score_sde"]
    assert vs[2] == pytest.approx(10.5 / 14.0)
    assert rows["NCSN++ (FIR), VE: slowest compile (s)"][2:] == [9.0, "train step"]
    text = "\n".join(mil.details(_loop_results(), original))
    assert "| upsample_2d | 0.2 | 3 | 7 | 150 |" in text and "2.20x ours at equal NFE" in text
