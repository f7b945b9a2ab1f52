"""Image metrics in the feature space of a small digits classifier (`FeatureNet`).

- Fréchet distance between Gaussians fitted to the features: the FID of Heusel et al., "GANs
  Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (NeurIPS 2017).
- Kernel distance (KID) of Bińkowski et al., "Demystifying MMD GANs" (ICLR 2018): the
  unbiased MMD² with a cubic polynomial kernel on the same features, free of FID's
  small-sample bias, with a jackknife standard error (`kernel_distance`).
- Improved precision and recall of Kynkäänniemi et al., "Improved Precision and Recall Metric
  for Assessing Generative Models" (NeurIPS 2019): k-NN balls around each sample as a manifold.

This is *not* Inception FID: the features are the penultimate activations of a small CNN
trained on the data set itself (`distill.metrics.feature_net`), so the numbers are comparable
only between runs that use the same feature net, never with published FIDs. Users with
Inception weights can compute the standard metric with torchmetrics'
`FrechetInceptionDistance` or with torch-fidelity instead.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.metrics.feature_net import FeatureNet

CHUNK_ELEMENTS = 2**22  # pairwise distances per chunk: 32 MB of float64


def _as_features(features: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name}: expected features (N, D) with N >= 2, got {features.shape}")
    return features


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding-error eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T


def frechet_distance(
    features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray
) -> float:
    """Fréchet distance between Gaussians fitted to features_a (N, D) and features_b (M, D).

    FID = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017), with unbiased
    sample covariances, in float64. Tr((S_a S_b)^(1/2)) is computed as the sum of the square
    roots of the eigenvalues of the symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2), which has the
    same spectrum as S_a S_b, so it is real and stable even for singular covariances (N < D).
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape} and {b.shape}")
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = float(np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0.0)).sum())
    value = mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * cross
    return max(value, 0.0)  # rounding can take an exact zero slightly below it



def kernel_distance(fake_features: torch.Tensor | np.ndarray, real_features: torch.Tensor | np.ndarray
                    ) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD² (U-statistic over all pairs) between
    fake_features (N, D) and real_features (M, D) with the cubic polynomial kernel
    k(x, y) = (x·y / D + 1)³, and its jackknife standard error over the fake rows (the
    reference is the same for every row of an evaluation, so the error is the samples' own
    noise given the reference). N >= 3, M >= 2."""
    a, b = _as_features(fake_features, "fake_features"), _as_features(real_features, "real_features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape} and {b.shape}")
    if len(a) < 3:
        raise ValueError(f"kernel_distance needs at least 3 fake rows for its error; got {len(a)}")
    d, n, m = a.shape[1], len(a), len(b)
    k_aa = (a @ a.T / d + 1.0) ** 3
    np.fill_diagonal(k_aa, 0.0)
    k_bb = (b @ b.T / d + 1.0) ** 3
    real_term = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    row_aa, row_ab = k_aa.sum(1), ((a @ b.T / d + 1.0) ** 3).mean(1)
    total_aa, total_ab = row_aa.sum(), row_ab.sum()
    value = total_aa / (n * (n - 1)) + real_term - 2.0 * total_ab / n
    # leave fake row i out: its kernel row and column leave the within-fake sum
    loo = ((total_aa - 2.0 * row_aa) / ((n - 1) * (n - 2)) + real_term
           - 2.0 * (total_ab - row_ab) / (n - 1))
    se = np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())
    return float(value), float(se)


def _knn_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point (N, D) to its k-th nearest other point -> (N,)."""
    radii = []
    step = max(1, CHUNK_ELEMENTS // points.shape[0])
    for start in range(0, points.shape[0], step):
        distances = torch.cdist(points[start : start + step], points)
        # the point itself is at distance 0, so the (k+1)-th smallest is the k-th neighbour
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each query (Q, D) lies in some ball |q - points_i| <= radii_i -> (Q,) bool."""
    inside = []
    step = max(1, CHUNK_ELEMENTS // points.shape[0])
    for start in range(0, queries.shape[0], step):
        distances = torch.cdist(queries[start : start + step], points)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(
    real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake vs real features.

    Each set's manifold is the union of balls around its samples with radius the distance to
    the sample's k-th nearest neighbour in the same set. precision = fraction of fake samples
    inside the real manifold (fidelity); recall = fraction of real samples inside the fake
    manifold (coverage). real_features: (N, D), fake_features: (M, D), both with more than k
    rows; pairwise distances are computed in float64 chunks, so 5000 x 5000 is cheap.
    """
    if real_features.ndim != 2 or fake_features.ndim != 2 or (
            real_features.shape[1] != fake_features.shape[1]):
        raise ValueError(f"expected features (N, D) and (M, D), got {tuple(real_features.shape)} "
                         f"and {tuple(fake_features.shape)}")
    if min(real_features.shape[0], fake_features.shape[0]) <= k:
        raise ValueError(f"need more than k={k} samples in each set, got "
                         f"{real_features.shape[0]} real and {fake_features.shape[0]} fake")
    real = real_features.detach().to(torch.float64)
    fake = fake_features.detach().to(device=real.device, dtype=torch.float64)
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean().item()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall}


def _check_images(images: torch.Tensor, net: FeatureNet, name: str) -> None:
    expected = (net.channels, net.size, net.size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"{name} images have shape {tuple(images.shape)}, but the feature net "
                         f"takes (N, {net.channels}, {net.size}, {net.size}) "
                         f"(size {net.size}x{net.size})")


@torch.no_grad()
def _features_and_predictions(
    net: FeatureNet, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N, C, H, W) -> features (N, D) float64 on CPU, predicted classes (N,)."""
    device = next(net.parameters()).device
    features, predictions = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device=device, dtype=torch.float32)
        hidden = net.features(batch)
        features.append(hidden.double().cpu())
        predictions.append(net.head(hidden).argmax(1).cpu())
    return torch.cat(features), torch.cat(predictions)


def image_metrics(
    fake: torch.Tensor, real: torch.Tensor, net: FeatureNet, fake_labels: torch.Tensor | None = None,
    batch_size: int = 1000, k: int = 3,
) -> dict[str, float]:
    """FID and improved precision/recall of fake vs real images in `net`'s feature space.

    fake: (N, C, H, W), real: (M, C, H, W), both in [-1, 1] at the net's channels and size
    (ValueError otherwise). Returns {"fid", "kid", "kid_se", "precision", "recall"} (kid_se:
    the standard error of the KID block estimate), plus "class_accuracy"
    (fraction of fake images the net classifies as their conditioning label) when
    fake_labels (N,) is given. This is FID in the feature space of a small classifier, not
    Inception FID: compare numbers only between runs that use the same feature net.
    """
    _check_images(fake, net, "fake")
    _check_images(real, net, "real")
    if fake_labels is not None and tuple(fake_labels.shape) != (fake.shape[0],):
        raise ValueError(f"fake_labels: expected shape ({fake.shape[0]},), "
                         f"got {tuple(fake_labels.shape)}")
    was_training = net.training
    net.eval()
    try:
        fake_features, fake_predictions = _features_and_predictions(net, fake, batch_size)
        real_features, _ = _features_and_predictions(net, real, batch_size)
    finally:
        net.train(was_training)
    kid, kid_se = kernel_distance(fake_features, real_features)
    metrics = {"fid": frechet_distance(fake_features, real_features), "kid": kid, "kid_se": kid_se,
               **precision_recall(real_features, fake_features, k=k)}
    if fake_labels is not None:
        correct = fake_predictions == fake_labels.detach().cpu().long()
        metrics["class_accuracy"] = correct.double().mean().item()
    return metrics
