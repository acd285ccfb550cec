"""Sample quality metrics from Inception features: FID, Inception Score, KID.

The math only, on host arrays in float64 (numpy or JAX arrays are accepted); the features come
from :mod:`sde_jax.evaluation.inception` (pool3 features ``[N, 2048]`` and logits ``[N, 1008]``).

- Frechet Inception Distance (Heusel et al. 2017, arXiv:1706.08500) between the Gaussians
  fitted to two feature sets: :func:`frechet_distance`.
- Inception Score (Salimans et al. 2016, arXiv:1606.03498), ``exp(E_x KL(p(y|x) || p(y)))``
  over ``splits`` equal parts, as the original code: :func:`inception_score`.
- Kernel Inception Distance (Binkowski et al. 2018, arXiv:1801.01401), the unbiased MMD^2 with
  the cubic polynomial kernel, with TF-GAN's block estimator: :func:`kernel_inception_distance`.

Reference statistics of a data set (:class:`ReferenceStats`) are saved as ``.npz`` files that
load without unpickling (:func:`save_reference_stats`, :func:`load_reference_stats`).
"""

import dataclasses
import math
import os

import numpy as np
from jaxtyping import ArrayLike, Float

from sde_jax import validation

KID_SUBSET_SIZE = 10_000
"""Reference features kept for KID by :func:`compute_stats` (a random subset; TF-GAN's KID
draws its blocks from however many features it is given, so 10,000 reference features already
fill ten blocks of 1,000, and keep a CIFAR-10 stats file at ~80 MB instead of ~400 MB)."""

KID_MAX_BLOCK_SIZE = 1024
"""TF-GAN's default ``max_block_size`` of the KID block estimator."""


def _as_2d(name: str, x: ArrayLike) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {array.shape}.")
    return array


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The PSD square root of a symmetric matrix; negative round-off eigenvalues become 0."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    r"""``tr sqrt(sigma1 sigma2)`` for symmetric PSD matrices, commuting or not.

    ``sigma1 sigma2`` is not symmetric, but it is similar to the symmetric PSD matrix
    :math:`A = \sqrt{\Sigma_1} \Sigma_2 \sqrt{\Sigma_1}` (conjugate by :math:`\sqrt{\Sigma_1}`),
    so their square roots have the same eigenvalues and
    :math:`\mathrm{tr}\sqrt{\Sigma_1\Sigma_2} = \sum_i \sqrt{\lambda_i(A)}`: two symmetric
    eigendecompositions in float64, no general (Schur) matrix square root, and no complex parts.
    """
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    root1 = _symmetric_sqrt(s1)
    middle = root1 @ s2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))


def frechet_distance(
    mu1: Float[ArrayLike, " d"],
    sigma1: Float[ArrayLike, "d d"],
    mu2: Float[ArrayLike, " d"],
    sigma2: Float[ArrayLike, "d d"],
) -> float:
    r"""Frechet (2-Wasserstein) distance between two Gaussians.

    Between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`:

    .. math::
        \|\mu_1 - \mu_2\|^2 + \mathrm{tr}(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}).

    The FID when the moments are those of Inception pool3 features (Heusel et al. 2017, eq. 6).

    Args:
      mu1: mean ``[d]`` of the first Gaussian.
      sigma1: covariance ``[d, d]`` of the first (symmetric positive semi-definite).
      mu2: mean ``[d]`` of the second.
      sigma2: covariance ``[d, d]`` of the second.

    Returns:
      The distance, a float (float64 arithmetic; tiny negative round-off is clipped to 0).

    Raises:
      ValueError: if the shapes do not fit together.
    """
    m1, m2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = m1.shape[0] if m1.ndim == 1 else None
    if d is None or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            "frechet_distance needs mu1, mu2 of shape [d] and sigma1, sigma2 of shape [d, d], "
            f"got {m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}."
        )
    diff = m1 - m2
    distance = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2)
    return float(max(distance, 0.0))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits: Float[ArrayLike, "n classes"], splits: int = 10) -> tuple[float, float]:
    r"""Inception Score :math:`\exp(E_x KL(p(y|x) \| p(y)))` (Salimans et al. 2016).

    As the original code: the ``N`` examples are cut in ``splits`` consecutive parts (part
    ``i`` is ``[i N // splits, (i + 1) N // splits)``), :math:`p(y)` is the mean of
    :math:`p(y|x)` over a part, and the result is the mean and the (population) standard
    deviation of the ``splits`` scores. ``splits=1`` is TF-GAN's ``classifier_score_from_logits``.
    Softmax and KL are computed in float64 from the logits.

    Args:
      logits: ``[N, classes]`` classifier logits, for the Inception network the 1008 logits
        without the softmax bias, as the original code and TF-GAN (see
        :func:`sde_jax.evaluation.inception.make_feature_fn`).
      splits: number of parts, ``1 <= splits <= N``.

    Returns:
      ``(mean, std)`` of the per-part scores.

    Raises:
      ValueError: for logits that are not 2-D or a bad ``splits``.
    """
    logits = _as_2d("logits", logits)
    n = logits.shape[0]
    splits = validation.integer("splits", splits, minimum=1, maximum=n)
    log_p = _log_softmax(logits)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        p = np.exp(part)
        log_q = np.log(p.mean(axis=0))
        # p log(p / q), with 0 where p underflows to 0 (then q may be 0 too).
        kl = np.where(p > 0, p * (part - log_q), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def _block_bounds(n: int, n_blocks: int) -> np.ndarray:
    """TF-GAN's split of ``n`` rows into ``n_blocks`` consecutive blocks, the larger ones last."""
    size = n // n_blocks
    plus_one = n - size * n_blocks
    sizes = [size] * (n_blocks - plus_one) + [size + 1] * plus_one
    return np.concatenate([[0], np.cumsum(sizes)])


def kernel_inception_distance_and_stderr(
    features1: Float[ArrayLike, "n d"],
    features2: Float[ArrayLike, "m d"],
    max_block_size: int = KID_MAX_BLOCK_SIZE,
) -> tuple[float, float]:
    r"""KID and the standard error of its estimate, computed as TF-GAN does.

    With the kernel :math:`k(x, y) = (x^\top y / d + 1)^3`, each block estimates
    :math:`\mathrm{MMD}^2` without bias (Binkowski et al. 2018, eq. 4):

    .. math::
        \frac{\sum_{i \ne j} k(x_i, x_j)}{m(m-1)} + \frac{\sum_{i \ne j} k(y_i, y_j)}{n(n-1)}
        - \frac{2}{mn} \sum_{i, j} k(x_i, y_j).

    Blocks (TF-GAN's ``kernel_classifier_distance_and_std_from_activations``, the block
    estimator of arXiv:1307.1954): ``B = ceil(max(N, M) / max_block_size)``; each set is cut
    into ``B`` consecutive blocks of sizes ``floor(N / B)`` or one more (the larger ones last);
    block ``b`` of one set is paired with block ``b`` of the other. The KID is the mean of the
    ``B`` block estimates (so it is unbiased) and the standard error is their sample standard
    deviation over ``sqrt(B)`` (NaN for one block). As in TF-GAN, both sets should be in random
    order. Computed in float64.

    Args:
      features1: ``[N, d]`` features of one set (e.g. the reference data).
      features2: ``[M, d]`` features of the other set (e.g. samples).
      max_block_size: the largest block, TF-GAN's default 1024.

    Returns:
      ``(kid, stderr)``.

    Raises:
      ValueError: for features that are not 2-D or differ in ``d``, a bad ``max_block_size``,
        or blocks with fewer than 2 rows.
    """
    x, y = _as_2d("features1", features1), _as_2d("features2", features2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"features1 and features2 must have the same dimension, got {x.shape} and {y.shape}."
        )
    max_block_size = validation.integer("max_block_size", max_block_size, minimum=2)
    n_blocks = math.ceil(max(len(x), len(y)) / max_block_size)
    if min(len(x), len(y)) < 2 * n_blocks:
        raise ValueError(
            f"KID needs at least 2 rows per block: {n_blocks} block(s) of features1 {x.shape} "
            f"and features2 {y.shape}; pass more features or a larger max_block_size."
        )
    bounds_x, bounds_y = _block_bounds(len(x), n_blocks), _block_bounds(len(y), n_blocks)
    estimates = []
    for b in range(n_blocks):
        xb = x[bounds_x[b] : bounds_x[b + 1]]
        yb = y[bounds_y[b] : bounds_y[b + 1]]
        m, n = len(xb), len(yb)
        k_xx, k_yy = _polynomial_kernel(xb, xb), _polynomial_kernel(yb, yb)
        estimates.append(
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
            - 2 * _polynomial_kernel(xb, yb).mean()
        )
    estimates = np.asarray(estimates)
    stderr = np.std(estimates, ddof=1) / np.sqrt(n_blocks) if n_blocks > 1 else np.nan
    return float(estimates.mean()), float(stderr)


def kernel_inception_distance(
    features1: Float[ArrayLike, "n d"],
    features2: Float[ArrayLike, "m d"],
    max_block_size: int = KID_MAX_BLOCK_SIZE,
) -> float:
    """The KID of :func:`kernel_inception_distance_and_stderr`, without the standard error."""
    return kernel_inception_distance_and_stderr(features1, features2, max_block_size)[0]


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Statistics of a data set's Inception pool3 features, what FID and KID compare against.

    Attributes:
      mu: ``[d]`` float64 mean.
      sigma: ``[d, d]`` float64 covariance (``ddof=1``, as TTUR and pytorch-fid).
      kid_features: ``[k, d]`` float32 features for KID, a random subset in random order.
      num_examples: how many examples the mean and covariance are over.
    """

    mu: np.ndarray
    sigma: np.ndarray
    kid_features: np.ndarray
    num_examples: int

    def __post_init__(self):
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if (
            d < 1
            or self.sigma.shape != (d, d)
            or self.kid_features.ndim != 2
            or self.kid_features.shape[1] != d
        ):
            raise ValueError(
                "ReferenceStats needs mu [d], sigma [d, d] and kid_features [k, d], got "
                f"{self.mu.shape}, {self.sigma.shape}, {self.kid_features.shape}."
            )


def compute_stats(
    pool3_features: Float[ArrayLike, "n d"],
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> ReferenceStats:
    """Mean, covariance and a random KID subset of a feature set.

    Args:
      pool3_features: ``[N, d]`` features, ``N >= 2``.
      kid_subset_size: features kept for KID: a uniformly random subset of
        ``min(N, kid_subset_size)`` rows, shuffled (TF-GAN's KID blocks assume random order).
      seed: seed of the subset.

    Returns:
      The :class:`ReferenceStats`.

    Raises:
      ValueError: for fewer than 2 examples or a bad ``kid_subset_size``.
    """
    features = _as_2d("pool3_features", pool3_features)
    if len(features) < 2:
        raise ValueError(f"compute_stats needs at least 2 examples, got {len(features)}.")
    kid_subset_size = validation.integer("kid_subset_size", kid_subset_size, minimum=2)
    rng = np.random.default_rng(seed)
    subset = rng.permutation(len(features))[:kid_subset_size]
    return ReferenceStats(
        mu=features.mean(axis=0),
        sigma=np.cov(features, rowvar=False),
        kid_features=features[subset].astype(np.float32),
        num_examples=len(features),
    )


def save_reference_stats(path: str | os.PathLike, stats: ReferenceStats) -> None:
    """Writes ``stats`` to ``path`` (``.npz``; plain arrays, loadable without pickle)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(
            f,
            mu=stats.mu,
            sigma=stats.sigma,
            kid_features=stats.kid_features,
            num_examples=np.int64(stats.num_examples),
        )


def load_reference_stats(path: str | os.PathLike) -> ReferenceStats:
    """Reads a file written by :func:`save_reference_stats` (never unpickles).

    Raises:
      FileNotFoundError: if ``path`` does not exist, saying how to make the file.
      ValueError: if the file lacks a key or the shapes do not fit together.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no reference statistics at {path!r}; compute them with `sde-jax fid-stats "
            "--config=... --inception=WEIGHTS.npz --output=STATS.npz`."
        )
    with np.load(path, allow_pickle=False) as f:
        missing = {"mu", "sigma", "kid_features", "num_examples"} - set(f.files)
        if missing:
            raise ValueError(f"{path!r} is not a reference stats file: lacks {sorted(missing)}.")
        return ReferenceStats(
            mu=f["mu"].astype(np.float64),
            sigma=f["sigma"].astype(np.float64),
            kid_features=f["kid_features"].astype(np.float32),
            num_examples=int(f["num_examples"]),
        )


def sample_quality(
    pool3: Float[ArrayLike, "n d"],
    logits: Float[ArrayLike, "n classes"],
    reference: ReferenceStats,
    splits: int = 10,
) -> dict[str, float]:
    """FID, Inception Score and KID of samples against a data set's reference statistics.

    Args:
      pool3: ``[N, 2048]`` pool3 features of the samples (``N >= 2``).
      logits: ``[N, 1008]`` logits of the samples.
      reference: the data set's :class:`ReferenceStats`.
      splits: Inception Score splits (10, as the original code).

    Returns:
      ``{'fid', 'inception_score', 'inception_score_std', 'kid'}`` as floats.

    Raises:
      ValueError: for shapes that do not fit the reference, or too few samples.
    """
    features = _as_2d("pool3", pool3)
    if features.shape[1] != reference.mu.shape[0]:
        raise ValueError(
            f"pool3 has {features.shape[1]} features, the reference {reference.mu.shape[0]}."
        )
    if len(features) < 2:
        raise ValueError(f"sample_quality needs at least 2 samples, got {len(features)}.")
    mu, sigma = features.mean(axis=0), np.cov(features, rowvar=False)
    score, score_std = inception_score(logits, splits)
    return {
        "fid": frechet_distance(mu, sigma, reference.mu, reference.sigma),
        "inception_score": score,
        "inception_score_std": score_std,
        "kid": kernel_inception_distance(reference.kid_features, features),
    }
