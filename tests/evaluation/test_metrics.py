"""FID, Inception Score and KID against independent computations (scipy, direct sums)."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats

from sde_jax.evaluation import metrics


def random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d)) * scale
    return a @ a.T + 0.1 * np.eye(d)


def frechet_scipy(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general (Schur) matrix square root of s1 @ s2."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean.real))


@pytest.mark.parametrize("d", [1, 3, 16])
def test_frechet_distance_matches_scipy_for_non_commuting_covariances(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
    if d > 1:
        assert not np.allclose(s1 @ s2, s2 @ s1)  # the case a naive sqrt(s1) sqrt(s2) gets wrong
    expected = frechet_scipy(mu1, s1, mu2, s2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # JAX arrays are accepted too.
    got = metrics.frechet_distance(jnp.asarray(mu1), jnp.asarray(s1), jnp.asarray(mu2), s2)
    assert got == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, d", [(2000, 64), (100, 256)])
def test_fid_of_a_set_against_itself_is_zero(n, d):
    # (100, 256): a rank-deficient covariance, as FID on fewer images than 2048 features.
    features = np.random.default_rng(1).normal(size=(n, d)) * np.linspace(0.1, 5, d)
    stats = metrics.compute_stats(features)
    distance = metrics.frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)
    assert abs(distance) < 1e-6 * np.trace(stats.sigma)
    other = metrics.compute_stats(features + 0.1)
    shift = metrics.frechet_distance(stats.mu, stats.sigma, other.mu, other.sigma)
    # Equal covariances: |mean shift|^2. Rank-deficient covariances leave round-off
    # eigenvalues ~eps |sigma|^2 whose square roots add up to ~1e-8 of the trace.
    assert shift == pytest.approx(0.01 * d, abs=1e-7 * np.trace(stats.sigma))


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma1"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_inception_score_of_uniform_logits_is_one():
    mean, std = metrics.inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("classes", [2, 10, 1008])
def test_inception_score_of_confident_balanced_logits_is_the_number_of_classes(classes):
    labels = np.arange(10 * classes) % classes  # every class equally often in each split
    logits = 100.0 * np.eye(classes)[labels]
    mean, std = metrics.inception_score(logits, splits=10)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0, abs=1e-6)


def test_inception_score_matches_scipy_entropy_per_split():
    logits = np.random.default_rng(2).normal(size=(103, 7)) * 3
    splits = 4
    scores = []
    for i in range(splits):
        part = scipy.special.softmax(logits[i * 103 // splits : (i + 1) * 103 // splits], axis=1)
        q = part.mean(axis=0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(p, q) for p in part])))
    mean, std = metrics.inception_score(logits, splits=splits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_rejects_bad_splits():
    with pytest.raises(ValueError, match="splits"):
        metrics.inception_score(np.zeros((5, 3)), splits=10)


def kid_direct(x, y):
    """The unbiased MMD^2 of one block with explicit sums over pairs."""
    d = x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_direct_computation_in_one_block():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(5, 4)) + 0.5
    kid, stderr = metrics.kernel_inception_distance_and_stderr(x, y)
    assert kid == pytest.approx(kid_direct(x, y), rel=1e-10)
    assert np.isnan(stderr)  # one block: no spread to estimate from
    assert metrics.kernel_inception_distance(x, y) == kid


def test_kid_blocks_as_tf_gan():
    # max(7, 6) / 3 -> 3 blocks; 7 rows as 2, 2, 3 (the larger last), 6 rows as 2, 2, 2.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(6, 3))
    blocks = [
        kid_direct(x[0:2], y[0:2]),
        kid_direct(x[2:4], y[2:4]),
        kid_direct(x[4:7], y[4:6]),
    ]
    kid, stderr = metrics.kernel_inception_distance_and_stderr(x, y, max_block_size=3)
    assert kid == pytest.approx(np.mean(blocks), rel=1e-10)
    assert stderr == pytest.approx(np.std(blocks, ddof=1) / np.sqrt(3), rel=1e-10)


def test_kid_is_unbiased():
    """Mean over many draws of two samples of one distribution is 0 within its standard error;
    the biased estimator (diagonal kept) fails the same test, so the test has power."""
    rng = np.random.default_rng(5)
    draws, n, d = 4000, 6, 3
    x = rng.normal(size=(draws, n, d)) * [1.0, 2.0, 0.5]
    y = rng.normal(size=(draws, n, d)) * [1.0, 2.0, 0.5]
    estimates = np.array(
        [metrics.kernel_inception_distance(a, b) for a, b in zip(x, y, strict=True)]
    )
    standard_error = estimates.std(ddof=1) / np.sqrt(draws)
    assert abs(estimates.mean()) < 4 * standard_error

    def biased(a, b):
        k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
        return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()

    biased_estimates = np.array([biased(a, b) for a, b in zip(x, y, strict=True)])
    assert biased_estimates.mean() > 4 * biased_estimates.std(ddof=1) / np.sqrt(draws)


def test_kid_rejects_too_few_rows_per_block():
    with pytest.raises(ValueError, match="2 rows per block"):
        metrics.kernel_inception_distance(np.zeros((9, 2)), np.zeros((3, 2)), max_block_size=4)


def test_reference_stats_round_trip_without_pickle(tmp_path):
    features = np.random.default_rng(6).normal(size=(50, 8))
    stats = metrics.compute_stats(features, kid_subset_size=20, seed=1)
    np.testing.assert_allclose(stats.mu, features.mean(axis=0))
    np.testing.assert_allclose(stats.sigma, np.cov(features.T))
    assert stats.kid_features.shape == (20, 8) and stats.num_examples == 50
    # The KID subset is made of distinct rows of the features, in random order.
    rows = {tuple(r) for r in features.astype(np.float32)}
    assert all(tuple(r) in rows for r in stats.kid_features)
    assert len({tuple(r) for r in stats.kid_features}) == 20

    path = tmp_path / "sub" / "stats.npz"
    metrics.save_reference_stats(path, stats)
    loaded = metrics.load_reference_stats(path)
    for field in ("mu", "sigma", "kid_features"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(stats, field))
    assert loaded.num_examples == 50


def test_load_reference_stats_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="sde-jax fid-stats"):
        metrics.load_reference_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        metrics.load_reference_stats(tmp_path / "other.npz")
    # An object array would need unpickling: refused, never executed.
    np.savez(
        tmp_path / "pickled.npz",
        mu=np.zeros(2),
        sigma=np.eye(2),
        kid_features=np.array([object()], dtype=object),
        num_examples=2,
    )
    with pytest.raises(ValueError, match="allow_pickle"):
        metrics.load_reference_stats(tmp_path / "pickled.npz")


def test_sample_quality_of_the_reference_set_itself():
    rng = np.random.default_rng(7)
    pool3 = rng.normal(size=(300, 16))
    logits = rng.normal(size=(300, 10))
    reference = metrics.compute_stats(pool3)
    result = metrics.sample_quality(pool3, logits, reference)
    assert set(result) == {"fid", "inception_score", "inception_score_std", "kid"}
    assert all(isinstance(v, float) for v in result.values())
    assert result["fid"] < 1e-8
    assert (result["inception_score"], result["inception_score_std"]) == pytest.approx(
        metrics.inception_score(logits, splits=10)
    )
    assert result["kid"] == pytest.approx(
        metrics.kernel_inception_distance(reference.kid_features, pool3)
    )
    shifted = metrics.sample_quality(pool3 + 1.0, logits, reference)
    assert shifted["fid"] == pytest.approx(16.0, rel=1e-6) and shifted["kid"] > 0
