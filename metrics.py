"""How far predicted keypoints are from the labels: NME, failure rates, CED and its AUC.

NumPy only, so that training (validation NME), evaluation and benchmarks share one definition
without importing each other.

NME is the mean point-to-point error over the outer-eye-corner distance (points 36 and 45), the
usual normalisation for 68-point benchmarks such as 300-W.
"""

import numpy as np

# Point ranges of the face regions, for per-region errors and plots.
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
           "eyes": range(36, 48), "mouth": range(48, 68)}
AUC_LIMIT = 0.08


def nme_per_face(pred, gt):
    """Mean point-to-point error of each face over its outer-eye-corner distance (points 36, 45)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    interocular = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / interocular


def ced_auc(errors, limit=AUC_LIMIT, steps=1000):
    """Area under the cumulative error curve from 0 to `limit`, divided by `limit` (1 = perfect)."""
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = np.linspace(0, limit, steps + 1)
    fraction = (errors[None, :] <= thresholds[:, None]).mean(1)
    return float(np.trapezoid(fraction, thresholds) / limit)


def summarize(pred, gt):
    """Metrics for (N, 68, 2) predictions; a face with no prediction (NaN) is a detector miss.

    NME and per-region NME are over the faces that were found (NaN when none was); failure rates
    and AUC count a miss as a failure.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    found = ~np.isnan(pred).any(axis=(1, 2))
    errors = np.full(len(gt), np.inf)
    errors[found] = nme_per_face(pred[found], gt[found])
    nan = float("nan")
    if found.any():
        interocular = np.linalg.norm(gt[found, 36] - gt[found, 45], axis=-1)[:, None]
        point_errors = np.linalg.norm(pred[found] - gt[found], axis=-1) / interocular
        regions = {name: 100 * float(point_errors[:, list(idx)].mean()) for name, idx in REGIONS.items()}
    else:
        regions = {name: nan for name in REGIONS}
    return {
        "faces": int(len(gt)), "found": int(found.sum()),
        "nme": 100 * float(errors[found].mean()) if found.any() else nan,
        "failure_8": 100 * float((errors > 0.08).mean()),
        "failure_10": 100 * float((errors > 0.10).mean()),
        "auc_8": ced_auc(errors),
        "regions": regions,
        "errors": errors,
    }


def format_summary(name, m):
    """The metrics as two printable lines; "no face found" instead of NaN figures."""
    if m["found"] == 0:
        return f"{name}: no face found in {m['faces']} labelled images (no NME to report)"
    regions = "  ".join(f"{k} {v:.2f}" for k, v in m["regions"].items())
    return (f"{name}: NME {m['nme']:.2f}%  failure@8% {m['failure_8']:.2f}%  failure@10% "
            f"{m['failure_10']:.2f}%  AUC@8% {m['auc_8']:.3f}  faces found {m['found']}/{m['faces']}\n"
            f"  per-region NME (%): {regions}")
