"""The evaluation report of a bundle: four PNG plots and a small ``report.html`` that shows them,
the test metrics, and each feature's transform (which, why, clip) with the validation PR AUC of
the model fitted with and without the transforms; with per-segment thresholds, each segment's
threshold and its test precision and recall at it and at the global threshold.
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

PLOTS = {
    "pr_curve.png": "Precision-recall curve (test)",
    "roc_curve.png": "ROC curve (test)",
    "score_distribution.png": "Score distribution by class (test)",
    "threshold_curves.png": "Precision and recall against threshold (test)",
}


def render(
    y: np.ndarray,
    scores: np.ndarray,
    metrics: dict[str, Any],
    version: str,
    transforms: dict[str, Any] | None = None,
    optimum: dict[str, Any] | None = None,
    behaviour: dict[str, Any] | None = None,
    segments: dict[str, Any] | None = None,
) -> dict[str, bytes]:
    """File name -> bytes for the plots, ``report.html`` and nothing else.

    ``transforms``: the manifest's ``training.transforms`` (rule, used, validation_pr_auc, features).
    ``optimum``: the manifest's ``training.optimum`` (the fit's objective against the reference optimum).
    ``behaviour``: the manifest's ``training.behaviour`` (the feature spec's lift and each of its features).
    ``segments``: the manifest's ``training.segments`` (per-segment thresholds and their test metrics).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    threshold = float(metrics["threshold"])
    precision, recall, pr_thresholds = precision_recall_curve(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    out: dict[str, bytes] = {}

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(recall, precision, lw=1.5, label=f"PR AUC (AP) = {metrics['pr_auc']:.3f}")
    ax.axhline(y.mean(), color="grey", ls=":", lw=1, label=f"fraud rate = {y.mean():.4f}")
    ax.plot([metrics["recall"]], [metrics["precision"]], "o", color="C3", label=f"threshold {threshold:.6g}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"Precision-recall, {version}")
    ax.legend(loc="lower left")
    out["pr_curve.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(fpr, tpr, lw=1.5, label=f"ROC AUC = {metrics['roc_auc']:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {version}")
    ax.legend(loc="lower right")
    out["roc_curve.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0, 1, 51).tolist()
    ax.hist(s[y == 0], bins=bins, density=True, alpha=0.6, label=f"genuine ({int((y == 0).sum())})")
    ax.hist(s[y == 1], bins=bins, density=True, alpha=0.6, label=f"fraud ({int(y.sum())})")
    ax.axvline(threshold, color="C3", ls="--", lw=1, label=f"threshold {threshold:.6g}")
    ax.set_yscale("log")
    ax.set(xlabel="score", ylabel="density (log scale)", title="Scores by class")
    ax.legend(loc="upper center")
    out["score_distribution.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(pr_thresholds, precision[:-1], label="precision")
    ax.plot(pr_thresholds, recall[:-1], label="recall")
    ax.axvline(threshold, color="C3", ls="--", lw=1, label=f"threshold {threshold:.6g}")
    ax.set(xlabel="threshold", ylabel="value", xlim=(0, 1), ylim=(0, 1.02), title="Precision and recall by threshold")
    ax.legend(loc="lower left")
    out["threshold_curves.png"] = _png(fig)
    plt.close("all")

    out["report.html"] = _html(metrics, version, transforms, optimum, behaviour, segments).encode("utf-8")
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _clip(clip: list[float | None] | None) -> str:
    if clip is None:
        return "none"
    return "[" + ", ".join("none" if v is None else f"{v:.6g}" for v in clip) + "]"


def _transforms_html(transforms: dict[str, Any] | None) -> str:
    if not transforms:
        return ""
    val = transforms["validation_pr_auc"]
    margin = transforms.get("loss_margin", 0.0)
    used = (
        f"kept (dropped only when they lose by more than {margin:g})"
        if transforms["used"]
        else f"dropped (they lose by more than {margin:g}): every feature is served as identity"
    )
    rows = "\n".join(
        f"<tr><td>{html.escape(f['name'])}</td><td>{html.escape(f['kind'])}</td>"
        f"<td>{html.escape(f['reason'])}</td><td>{html.escape(_clip(f['clip']))}</td></tr>"
        for f in transforms["features"]
    )
    return f"""<h2>Feature transforms</h2>
<p>Validation PR AUC with the transforms {val["with"]:.4f}, without {val["without"]:.4f}:
transforms {html.escape(used)}.
Rule (training split only): {html.escape(transforms["rule"])}.</p>
<table class="transforms"><tr><th>feature</th><th>transform</th><th>why</th><th>clip</th></tr>
{rows}
</table>"""


def _optimum_html(optimum: dict[str, Any] | None, metrics: dict[str, Any]) -> str:
    if not optimum:
        return ""
    return f"""<h2>Distance to the optimum</h2>
<p>The model is convex (one dense layer, log-loss, L2), so its best weights are knowable. Training objective
(class-weighted mean log-loss + L2 on the transformed, scaled training rows) {optimum["objective"]:.6f};
the reference optimum ({html.escape(optimum["reference"])}) {optimum["reference_objective"]:.6f}:
a gap of {100 * optimum["gap"]:+.3f}&nbsp;%. The fit stopped: {html.escape(optimum["stopped"])}.
On the test rows the reference's weights score PR AUC {optimum["reference_test_pr_auc"]:.4f} and ROC AUC
{optimum["reference_test_roc_auc"]:.4f}; this bundle {metrics["pr_auc"]:.4f} and {metrics["roc_auc"]:.4f}.</p>
"""


def _behaviour_html(behaviour: dict[str, Any] | None) -> str:
    if not behaviour:
        return ""
    lift = behaviour["lift"]
    rows = "\n".join(
        f"<tr><td>{html.escape(f['name'])}</td><td>{f['mean_genuine']:.4g}</td><td>{f['mean_fraud']:.4g}</td>"
        f"<td>{f['weight']:+.4f}</td></tr>"
        for f in behaviour["features"]
    )
    return f"""<h2>Behavioural features (feature spec)</h2>
<p>On the test rows this bundle scores PR AUC {lift["with"]["pr_auc"]:.4f} and ROC AUC {lift["with"]["roc_auc"]:.4f};
the same model on the event's own fields only (its optimum on the same rows) {lift["without"]["pr_auc"]:.4f}
and {lift["without"]["roc_auc"]:.4f}. The spec's {behaviour["spec_features"]} features were computed point-in-time
over every row in event-time order ({behaviour["warm_rows"]} rows before the fit range only warmed the state)
at {behaviour["rows_per_second"]:,.0f} rows/s.</p>
<table class="behaviour"><tr><th>feature</th><th>mean, genuine (train)</th><th>mean, fraud (train)</th>
<th>weight (scaled)</th></tr>
{rows}
</table>"""


def _pr(m: dict[str, Any]) -> str:
    return f"{m['precision']:.4f} / {m['recall']:.4f}"


def _segments_html(segments: dict[str, Any] | None, threshold: float) -> str:
    if not segments:
        return ""
    test = segments["test"]
    glob, seg = test["global_threshold"], test["with_segment_thresholds"]
    field = html.escape(segments["field"])
    policy = html.escape(segments["policy"]["name"])
    kept = segments["below_support"] + segments["no_fraud"] + segments["too_long"]
    shown = (
        f" The table lists the {segments['listed']} with the most validation rows."
        if segments["listed"] < segments["chosen"]
        else ""
    )
    too_long = f", {segments['too_long']} too long" if segments["too_long"] else ""
    rows = "\n".join(
        f"<tr><td>{html.escape(s['value'])}</td><td>{s['validation']['rows']} / {s['validation']['frauds']}</td>"
        f"<td>{s['threshold']:.6f}</td><td>{s['test']['rows']} / {s['test']['frauds']}</td>"
        f"<td>{_pr(s['test']['segment_threshold'])}</td><td>{_pr(s['test']['global_threshold'])}</td></tr>"
        for s in segments["segments"]
    )
    return f"""<h2>Per-segment thresholds</h2>
<p>Field <code>{field}</code>: {segments["chosen"]} values with at least {segments["min_support"]} validation
rows and a fraud among them have a threshold of their own, chosen by the same policy ({policy}) on their
validation rows; {kept} other values ({segments["below_support"]} below the support, {segments["no_fraud"]}
without a fraud{too_long}) and every value not seen keep the global threshold {threshold:.6f}.
On the test rows at the global threshold: precision / recall {_pr(glob)}; with the segment thresholds
({seg["rows_at_segment_threshold"]} rows at their segment's): {_pr(seg)}.{shown}</p>
<table class="segments"><tr><th>{field}</th><th>validation rows / frauds</th><th>threshold</th>
<th>test rows / frauds</th><th>test precision / recall, segment threshold</th>
<th>test precision / recall, global threshold</th></tr>
{rows}
</table>"""


def _html(
    metrics: dict[str, Any],
    version: str,
    transforms: dict[str, Any] | None = None,
    optimum: dict[str, Any] | None = None,
    behaviour: dict[str, Any] | None = None,
    segments: dict[str, Any] | None = None,
) -> str:
    c = metrics["confusion"]
    rows = [
        ("ROC AUC", f"{metrics['roc_auc']:.4f}"),
        ("PR AUC (average precision)", f"{metrics['pr_auc']:.4f}"),
        ("threshold", f"{metrics['threshold']:.6f}"),
        ("precision", f"{metrics['precision']:.4f}"),
        ("recall", f"{metrics['recall']:.4f}"),
        ("F1", f"{metrics['f1']:.4f}"),
        ("confusion (tn / fp / fn / tp)", f"{c['tn']} / {c['fp']} / {c['fn']} / {c['tp']}"),
        ("test rows / frauds", f"{metrics['rows']} / {metrics['positives']}"),
    ]
    with_segments = metrics.get("with_segment_thresholds")
    if with_segments:
        s = with_segments
        rows.append((
            "with the segment thresholds: precision / recall / F1",
            f"{s['precision']:.4f} / {s['recall']:.4f} / {s['f1']:.4f}",
        ))  # fmt: skip
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for name, title in PLOTS.items()
    )
    v = html.escape(version)
    scope = (
        " (the global one for every row; the last row: each row of a segment at its segment's threshold)"
        if with_segments
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fraud model {v}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:600px}}</style></head>
<body><h1>Model {v}</h1><p>Metrics on the test split, at the threshold chosen on validation{scope}.</p>
<table>{table}</table>
{figures}
{_transforms_html(transforms)}
{_optimum_html(optimum, metrics)}
{_behaviour_html(behaviour)}
{_segments_html(segments, float(metrics["threshold"]))}
</body></html>
"""
