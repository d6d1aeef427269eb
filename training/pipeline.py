"""The training job end to end: data -> split -> per-feature transforms -> scaler -> fit (with and
without the transforms, the better on validation kept) -> TFLite -> parity -> threshold (and one per
segment with --segment-field) -> metrics -> report -> bundle -> promotion. Nothing is written unless
every step before it passed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from training import behaviour, data, segments
from training.errors import DataError, ParityError
from training.split import Split, stratified_split, time_split
from training.thresholds import Policy
from training.transforms import RULE as TRANSFORM_RULE
from training.transforms import choose as choose_transforms
from worker.core.errors import BundleError
from worker.core.features import FeatureSpec, as_written, load_spec
from worker.core.transforms import FeatureTransform, Transforms
from worker.offline import synthetic

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
# The transforms are dropped only when the model without them beats them on validation PR AUC by more
# than this: the rule chose them from the columns' shapes, and on ~100 validation frauds (the ULB data)
# PR AUC moves by a few hundredths between seeds on its own, so a smaller loss is noise, not evidence.
TRANSFORMS_LOSS_MARGIN = 0.02
PARITY_OUTSIDE_ROWS = 256  # rows beyond the training range, scored in the parity check beside the test rows


def _option(default: Any, group: str, help: str, **argparse_options: Any) -> Any:
    """A TrainConfig field that is also a ``fraud-train`` flag (built by ``training.fraud_train.build_parser``).

    ``argparse_options``: ``flag`` (default ``--<name-with-dashes>``), ``type`` (default the
    default's type; needed where the default is None), ``metavar``, ``choices``, and ``source``
    (one of the mutually exclusive, required data sources).
    """
    return field(default=default, metadata={"group": group, "help": help, **argparse_options})


def _feature_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field with a ``help`` is a ``fraud-train`` flag, and its default
    written here is the flag's default too: the parser is built from these fields.
    """

    data_path: str | None = _option(
        None, "data", "labelled CSV (plain or .gz), e.g. the ULB creditcard.csv",
        flag="--data", type=str, metavar="PATH", source=True,
    )  # fmt: skip
    synthetic_rows: int | None = _option(
        None, "data", "generate N seeded synthetic transactions instead",
        flag="--synthetic", type=int, metavar="N", source=True,
    )  # fmt: skip
    label_column: str = _option("Class", "columns", "0/1 label column (1 = fraud)")
    features: tuple[str, ...] | None = _option(
        None, "columns",
        "comma-separated feature columns, in model input order (default: every numeric column but the label)",
        type=_feature_names,
    )  # fmt: skip
    synthetic_fraud_rate: float = _option(0.005, "columns", "fraud share of --synthetic data", flag="--fraud-rate")
    generator: str = _option(
        "v2", "columns",
        "--synthetic generator: v2 (ULB-like rows) or v3 (customers and terminals with behavioural fraud, "
        "event times, categorical fields; for --feature-spec)",
        choices=("v2", "v3"),
    )  # fmt: skip
    feature_spec: str | None = _option(
        None, "columns",
        "a feature spec (TOML, docs/features.md): per-entity windowed aggregates and categorical fields, "
        "computed point-in-time over the file and carried in the bundle; 'current': the spec of the bundle "
        "CURRENT names in --models-dir (make retrain)",
        type=str, metavar="SPEC.toml",
    )  # fmt: skip
    label_time_column: str = _option(
        "label_time", "columns",
        "with --feature-spec fraud_count / fraud_rate: the column of the time each label became known, epoch ms as "
        "in label records (used when the file has it; without it a label counts as known at its transaction's time)",
        metavar="NAME",
    )  # fmt: skip
    fit_since: str | None = _option(
        None, "split",
        "with --feature-spec: rows before this event time (a date, 2026-01-15, or a number in the spec's time "
        "unit) only warm the features' state; the split, fit and test use the rows from then on",
        type=str, metavar="TIME",
    )  # fmt: skip
    min_rows: int = _option(data.MIN_ROWS, "columns", "refuse data with fewer rows")
    split: str = _option(
        "stratified", "split",
        "stratified: random per class with --seed; time: oldest rows train, newest test (see --time-column)",
        choices=("stratified", "time"),
    )  # fmt: skip
    time_column: str = _option(
        "", "split", "column ordering rows for --split time (default: event_time when the data has it, else Time)"
    )
    val_fraction: float = _option(0.2, "split", "share of rows for validation")
    test_fraction: float = _option(0.2, "split", "share of rows for test")
    seed: int = _option(42, "training", "seed for the split, weight init and batch order")
    epochs: int = _option(
        5000, "training",
        "maximum epochs (with the default full batch, one Adam step each; the fit stops earlier when it converges)",
    )  # fmt: skip
    patience: int = _option(
        50, "training",
        "stop when the objective moved less than 1e-7 (relative) over this many epochs, "
        "or the validation log-loss stayed above twice its best as long",
    )  # fmt: skip
    l2: float = _option(1e-6, "training", "L2 penalty on the kernel")
    learning_rate: float = _option(0.05, "training", "Adam learning rate")
    lr_decay: float = _option(1.0, "training", "learning-rate factor per epoch")
    batch_size: int = _option(0, "training", "rows per gradient step (0: every training row, one step per epoch)")
    class_weight: str = _option(
        "balanced", "training",
        "'balanced' (n / (2 n_class)), 'none', or a number: the fraud class's weight (genuine = 1)",
    )  # fmt: skip
    # The threshold flags set this Policy's fields (training.fraud_train.POLICY_FLAGS); their defaults are this one's.
    policy: Policy = field(
        default_factory=lambda: Policy("max-f1"), metadata={"group": "threshold (chosen on the validation split)"}
    )
    segment_field: str | None = _option(
        None, "threshold (chosen on the validation split)",
        "a column of the data (an event field, e.g. channel; only read, never made a model input): each of its "
        "values with --segment-min-support validation rows and a fraud among them gets a threshold of its own, "
        "chosen by the same policy on those rows; the other values keep the global threshold",
        type=str, metavar="FIELD",
    )  # fmt: skip
    segment_min_support: int = _option(
        1000, "threshold (chosen on the validation split)",
        "with --segment-field: the validation rows a value needs for a threshold of its own", metavar="N",
    )  # fmt: skip
    models_dir: str = _option("models", "output", "where bundles and CURRENT live")
    promote_tolerance: float = _option(
        0.005, "output", "promote unless test PR AUC is worse than CURRENT's on the same rows by more than this"
    )
    force: bool = _option(False, "output", "promote to CURRENT even if the gate says no")
    challenger: bool = _option(
        False, "output",
        "point models/CHALLENGER at the new bundle (shadow mode: the workers score with it beside CURRENT, never "
        "alerting) instead of the promotion gate and CURRENT",
    )  # fmt: skip
    signing_key: str | None = _option(
        None, "output",
        "sign the bundle with this Ed25519 private key, a PEM file (openssl genpkey -algorithm ed25519 -out KEY.pem); "
        "workers with --trusted-keys serve only signed bundles",
        type=str, metavar="KEY.pem",
    )  # fmt: skip
    histogram_bins: int = 50


@dataclass
class TrainResult:
    version: str
    bundle_path: Path
    promoted: bool
    promotion_reason: str
    metrics: dict[str, Any]
    parity_max_abs_diff: float
    threshold: float
    timings: dict[str, float]
    split: Split
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    manifest: Any
    signed_by: str | None = None  # the signing key's id, when the bundle is signed


def time_column(cfg: TrainConfig) -> str:
    """The column ``--split time`` orders by: the one named, else the first of ``data.TIME_COLUMNS`` present."""
    if cfg.time_column:
        return cfg.time_column
    header = data.read_header(cfg.data_path) if cfg.data_path is not None else ["Time"]
    return next((c for c in data.TIME_COLUMNS if c in header), data.TIME_COLUMNS[-1])


def load_dataset(cfg: TrainConfig) -> data.Dataset:
    time_col = time_column(cfg) if cfg.split == "time" else None
    if cfg.synthetic_rows is not None and cfg.generator == "v3":
        n = cfg.synthetic_rows
        try:
            cols = synthetic.generate_behavioural(n, cfg.seed)
        except ValueError as exc:
            raise DataError(f"synthetic data: {exc}") from None
        return data.from_columns(
            cols,
            label_column=cfg.label_column,
            features=cfg.features,
            source=f"synthetic-v3(n={n}, seed={cfg.seed})",
            sha256=synthetic.spec_v3_sha256(n, cfg.seed),
            time_column="event_time" if time_col else None,
            min_rows=cfg.min_rows,
        )
    if cfg.synthetic_rows is not None:
        n, rate = cfg.synthetic_rows, cfg.synthetic_fraud_rate
        try:
            cols = synthetic.generate(n, cfg.seed, rate)
        except ValueError as exc:
            raise DataError(f"synthetic data: {exc}") from None
        return data.from_columns(
            cols,
            label_column=cfg.label_column,
            features=cfg.features,
            source=f"synthetic(n={n}, seed={cfg.seed}, fraud_rate={rate})",
            sha256=synthetic.spec_sha256(n, cfg.seed, rate),
            time_column=time_col,
            min_rows=cfg.min_rows,
        )
    if cfg.data_path is None:
        raise DataError("no data: give --data PATH or --synthetic N")
    return data.load_csv(cfg.data_path, cfg.label_column, cfg.features, time_col, cfg.min_rows)


def _apply_spec(cfg: TrainConfig, dataset: data.Dataset, spec: FeatureSpec) -> behaviour.Applied:
    """The data set with the feature spec's features, its rows from ``--fit-since`` on, and their split."""
    needed = tuple(dict.fromkeys((spec.time_field, *spec.input_fields)))
    numeric = frozenset((spec.time_field, *spec.numeric_fields, cfg.label_time_column))
    label_times = cfg.label_time_column if spec.risk_fields else None
    if cfg.data_path is not None:
        if label_times is not None and label_times in data.read_header(cfg.data_path):
            needed = (*needed, label_times)
        columns = behaviour.read_columns(cfg.data_path, needed, numeric)
    else:
        missing = [n for n in needed if n not in dataset.raw]
        if missing:
            raise DataError(
                f"{dataset.source}: no column {missing[0]!r} (named by the feature spec); try --generator v3"
            )
        columns = {n: dataset.raw[n] for n in needed}
        if label_times is not None and label_times in dataset.raw:
            columns[label_times] = dataset.raw[label_times]

    def split_rows(y: np.ndarray, t: np.ndarray) -> Split:
        if cfg.split == "time":
            return time_split(y, t, cfg.val_fraction, cfg.test_fraction, column=spec.time_field)
        return stratified_split(y, cfg.seed, cfg.val_fraction, cfg.test_fraction)

    return behaviour.apply(dataset, spec, columns, cfg.fit_since, split_rows, label_times)


def _spec(cfg: TrainConfig) -> FeatureSpec | None:
    """``--feature-spec``: a spec file, or ``current``: the spec of the bundle CURRENT names in ``--models-dir``
    as written (what training chose, the categorical values and the label prior, is chosen again on this
    data), none when that bundle has none: the next model keeps the serving one's features (make retrain)."""
    if not cfg.feature_spec:
        return None
    if cfg.feature_spec != "current":
        return load_spec(cfg.feature_spec)
    from worker.core.bundle import load_bundle, read_current

    version = read_current(cfg.models_dir)
    if version is None:
        raise DataError(f"--feature-spec current: no {cfg.models_dir}/CURRENT to take the spec from")
    spec = load_bundle(cfg.models_dir, version).manifest.spec
    if spec is None:
        logger.info("--feature-spec current: bundle %s has no feature spec; training without one", version)
        return None
    logger.info("--feature-spec current: the spec of bundle %s", version)
    return as_written(spec)


def prior_correction(model, weights: dict[int, float]) -> float:
    """Undo the class weights' shift of the logit, so scores estimate the real fraud probability.

    Weighting class c by w_c multiplies the odds a logistic model learns by w_1 / w_0; subtracting
    log(w_1 / w_0) from the bias restores them (prior correction, King & Zeng 2001). The order of
    the scores, hence ROC and PR AUC, is unchanged; thresholds and alert scores become readable
    probabilities instead of values crowded just below 1. Returns the amount added to the bias.
    """
    layer = model.get_layer("fraud")
    kernel, bias = layer.get_weights()
    correction = -float(np.log(weights[1] / weights[0]))
    layer.set_weights([kernel, (bias + correction).astype(bias.dtype)])
    return correction


def fit_scaler(X_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the training rows only; a constant column gets scale 1."""
    mean = X_train.mean(axis=0)
    scale = X_train.std(axis=0)
    scale[~(scale > 1e-12)] = 1.0
    return mean, scale


def run(cfg: TrainConfig, dataset: data.Dataset | None = None) -> TrainResult:
    """Train, export, verify and write one bundle; promote it if the gate allows. Raises on failure."""
    from worker.core.signing import load_signing_key

    # First: a bad key file should not cost a whole training run (a ConfigError naming the file).
    signing_key = load_signing_key(cfg.signing_key) if cfg.signing_key else None
    spec = _spec(cfg)  # a bad spec too (a SpecError)
    from training import evaluate, report
    from training import gate as promote
    from training.export import outside_rows, parity_max_abs_diff, to_tflite
    from training.model import class_weights, fit, objective, reference_optimum
    from worker.core.bundle import CHALLENGER_FILE, Bundle, Manifest, set_current, sha256_hex, write_bundle
    from worker.core.scoring import Scorer

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if dataset is None:
        logger.info("loading %s", cfg.data_path or f"{cfg.synthetic_rows} synthetic rows")
        dataset = load_dataset(cfg)
    timings["load"] = time.perf_counter() - t0
    logger.info(
        "%d rows, %d frauds, %d features (%.1f s)",
        dataset.n_rows,
        dataset.positives,
        len(dataset.feature_names),
        timings["load"],
    )

    # The segment field's values, read before the fit so a missing column costs no training run.
    segment_values = None
    if cfg.segment_field is not None:
        segment_values = segments.read_values(cfg.segment_field, dataset, cfg.data_path)
    applied = None
    if spec is not None:
        applied = _apply_spec(cfg, dataset, spec)
        dataset, split = applied.dataset, applied.split
        if segment_values is not None:
            segment_values = segment_values[applied.kept]
    elif cfg.fit_since:
        raise DataError("--fit-since needs --feature-spec (its rows before that time warm the features' state)")
    t = time.perf_counter()
    X, y = dataset.X, dataset.y
    if applied is None:
        if cfg.split == "time":
            assert dataset.time is not None
            column = dataset.time_column or "time"
            split = time_split(y, dataset.time, cfg.val_fraction, cfg.test_fraction, column=column)
        else:
            split = stratified_split(y, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    y_train, y_val, y_test = y[split.train], y[split.val], y[split.test]
    weights = class_weights(y_train, cfg.class_weight)
    support = None
    if segment_values is not None:
        assert cfg.segment_field is not None
        support = segments.support(cfg.segment_field, cfg.segment_min_support, segment_values[split.val], y_val)
        logger.info(
            "segment field %s: %d of its %d values in the validation rows have at least %d rows there and a fraud",
            cfg.segment_field, len(support.chosen), support.values, cfg.segment_min_support,
        )  # fmt: skip

    # Transforms chosen on the training rows only; the same model is fitted with and without them,
    # and they are kept unless they lose on validation PR AUC by more than TRANSFORMS_LOSS_MARGIN.
    choices = choose_transforms(X[split.train], dataset.feature_names)
    for feature in choices:
        logger.info("feature %s: %s", feature.name, feature.reason)
    candidates = {"with": Transforms([c.transform for c in choices], X.shape[1])}
    if any(c.transform.kind != "identity" for c in choices):
        # Without the kinds, every feature still clipped to its training [min, max] (training.transforms).
        candidates["without"] = Transforms(
            [FeatureTransform("identity", c.transform.clip) for c in choices], X.shape[1]
        )
    fits: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    for name, transforms in candidates.items():
        X_t = transforms.apply(X)
        mean, scale = fit_scaler(X_t[split.train])
        X_train, X_val = ((X_t[idx] - mean) / scale for idx in (split.train, split.val))
        fitted = fit(
            X_train.astype(np.float32),
            y_train,
            X_val.astype(np.float32),
            y_val,
            l2=cfg.l2,
            epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            weights=weights,
            seed=cfg.seed,
            patience=cfg.patience,
            lr_decay=cfg.lr_decay,
        )
        logger.info(
            "fitted %s transforms: %d epochs (%s), objective %.6f, validation PR AUC %.4f",
            name,
            fitted.epochs_run,
            fitted.stopped,
            fitted.objective,
            fitted.best_val_pr_auc,
        )
        fits[name] = (fitted, mean, scale)
    val_pr_auc = {name: fits[name][0].best_val_pr_auc for name in fits}
    use = "without" if val_pr_auc.get("without", -1.0) > val_pr_auc["with"] + TRANSFORMS_LOSS_MARGIN else "with"
    fitted, mean, scale = fits[use]
    transforms = candidates[use]
    if use == "without":
        logger.info(
            "the transforms lose on validation (PR AUC %.4f with, %.4f without, by more than %g): "
            "every feature identity, still clipped to its training range",
            val_pr_auc["with"],
            val_pr_auc["without"],
            TRANSFORMS_LOSS_MARGIN,
        )
    timings["fit"] = time.perf_counter() - t
    logger.info("fitted: %d epochs, %s (%.1f s)", fitted.epochs_run, fitted.stopped, timings["fit"])
    # The same objective's optimum by another solver, on the same transformed, scaled rows: how far the
    # fit is from the best weights this model can have, and what those weights score on the test rows.
    t = time.perf_counter()
    X_t = transforms.apply(X)
    X_train_s, X_test_s = ((X_t[idx] - mean) / scale for idx in (split.train, split.test))
    ref_kernel, ref_bias = reference_optimum(X_train_s, y_train, weights, cfg.l2)
    ref_objective = objective(ref_kernel, ref_bias, X_train_s, y_train, weights, cfg.l2)
    # Scored as the bundle serves a score: the prior-corrected logit through a float32 sigmoid (which
    # saturates at 1.0 for logits above about 17, so the far-out rows tie there for both).
    ref_logit = X_test_s @ ref_kernel + ref_bias - np.log(weights[1] / weights[0])
    ref_test = 1.0 / (1.0 + np.exp(-ref_logit.astype(np.float32)))
    optimum = {
        "objective": fitted.objective,
        "reference_objective": ref_objective,
        "gap": (fitted.objective - ref_objective) / abs(ref_objective),
        "reference": "scikit-learn LogisticRegression (newton-cholesky), same class weights, C = 1 / (2 l2 n)",
        "reference_test_pr_auc": evaluate.pr_auc(y_test, ref_test),
        "reference_test_roc_auc": evaluate.roc_auc(y_test, ref_test),
        "stopped": fitted.stopped,
    }
    timings["reference"] = time.perf_counter() - t
    logger.info(
        "objective %.6f, reference optimum %.6f (gap %+.3f%%, %.1f s)",
        fitted.objective,
        ref_objective,
        100 * optimum["gap"],
        timings["reference"],
    )
    bias_correction = prior_correction(fitted.model, weights)

    t = time.perf_counter()
    model_bytes = to_tflite(fitted.model)
    timings["export"] = time.perf_counter() - t
    kernel, bias = fitted.model.get_layer("fraud").get_weights()
    model_sha = sha256_hex(model_bytes)
    now = datetime.now(timezone.utc)
    version = f"{now:%Y%m%dT%H%M%SZ}-{model_sha[:8]}"
    logger.info("exported TFLite model %s (%d bytes, %.1f s)", version, len(model_bytes), timings["export"])

    # Parity: the served path (worker Scorer: raw rows, its own transforms, scaling and LiteRT) against
    # Keras on the same rows transformed and scaled here, on the test rows and on rows outside the
    # training range (which the transforms' clips act on).
    t = time.perf_counter()
    manifest = Manifest(
        version=version,
        created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        feature_names=dataset.feature_names,
        scaler_mean=tuple(float(v) for v in mean),
        scaler_scale=tuple(float(v) for v in scale),
        weights=tuple(float(v) for v in kernel.reshape(-1)),
        bias=float(bias.reshape(-1)[0]),
        threshold=0.5,  # placeholder until the policy has chosen, below
        threshold_policy={},
        model_sha256=model_sha,
        feature_transforms=transforms.transforms,
        feature_spec=applied.spec.to_manifest() if applied is not None else None,
    )
    scorer = Scorer(Bundle(path=Path(cfg.models_dir) / version, manifest=manifest, model_bytes=model_bytes))
    try:
        scorer.probe()
    except BundleError as exc:
        raise ParityError(f"the exported model fails its probe ({exc}); no bundle written") from None
    X_train_raw = X[split.train]
    clipped = np.isfinite(transforms.lo) | np.isfinite(transforms.hi)
    outside = outside_rows(
        X_train_raw.min(axis=0),
        X_train_raw.max(axis=0),
        rows=PARITY_OUTSIDE_ROWS,
        seed=cfg.seed,
        columns=clipped if clipped.any() else None,
    )
    lite_test = scorer.score(X[split.test])
    parity = max(
        parity_max_abs_diff(fitted.model, scorer, X[split.test], transforms, mean, scale, lite=lite_test),
        parity_max_abs_diff(fitted.model, scorer, outside, transforms, mean, scale),
    )
    timings["parity"] = time.perf_counter() - t
    if not parity <= PARITY_TOLERANCE:
        raise ParityError(
            f"TFLite and Keras scores differ by up to {parity:.3g} on the test rows "
            f"(allowed {PARITY_TOLERANCE:g}); no bundle written"
        )
    logger.info(
        "parity: max |TFLite - Keras| = %.2g over %d test rows and %d rows outside the training range",
        parity,
        lite_test.size,
        outside.shape[0],
    )

    t = time.perf_counter()
    lite_val = scorer.score(X[split.val])
    lite_train = scorer.score(X[split.train])
    choice = cfg.policy.choose(y_val, lite_val)
    test_metrics = evaluate.metrics(y_test, lite_test, choice.threshold)
    test_metrics["parity_max_abs_diff"] = parity
    segment_outcome = None
    if support is not None and segment_values is not None:
        # The same policy object on each segment's validation rows; the test rows measured both ways.
        segment_outcome = segments.measure(
            support, segments.choose(support, cfg.policy, y_val, lite_val), cfg.policy, choice.threshold,
            y_val, segment_values[split.test], y_test, lite_test,
        )  # fmt: skip
        test_metrics["with_segment_thresholds"] = segment_outcome.test
    threshold_policy = {
        **choice.policy,
        "chosen_on": "validation",
        "validation": {"precision": choice.precision, "recall": choice.recall, "f1": choice.f1, **choice.extra},
    }
    training_facts = {
        "rows": {"train": int(split.train.size), "val": int(split.val.size), "test": int(split.test.size)},
        "positives": {"train": int(y_train.sum()), "val": int(y_val.sum()), "test": int(y_test.sum())},
        "class_weights": {str(k): v for k, v in weights.items()},
        "class_weight_mode": cfg.class_weight,
        "l2": cfg.l2,
        "epochs_run": fitted.epochs_run,
        "best_epoch": fitted.best_epoch,
        "max_epochs": cfg.epochs,
        "patience": cfg.patience,
        "best_val_pr_auc": fitted.best_val_pr_auc,
        "best_val_loss": fitted.best_val_loss,
        "optimum": optimum,
        "bias_correction": bias_correction,
        "learning_rate": cfg.learning_rate,
        "lr_decay_per_epoch": cfg.lr_decay,
        "batch_size": cfg.batch_size or int(split.train.size),
        "optimizer": "adam",
        "seed": cfg.seed,
        "split": split.describe(),
        "data_path": dataset.source if cfg.synthetic_rows is None else None,
        "data_source": dataset.source,
        "data_sha256": dataset.sha256,
        "label_column": dataset.label_column,
        "excluded_columns": [{"name": name, "why": why} for name, why in dataset.excluded],
        "transforms": {
            "rule": TRANSFORM_RULE,
            "used": use == "with",
            "loss_margin": TRANSFORMS_LOSS_MARGIN,
            "validation_pr_auc": {"with": val_pr_auc["with"], "without": val_pr_auc.get("without", val_pr_auc["with"])},
            "features": [c.to_dict() for c in choices],
        },
        "history": fitted.history,
    }
    if segment_outcome is not None:
        training_facts["segments"] = segment_outcome.facts
    if applied is not None:
        without = behaviour.lift_without(
            applied, weights, cfg.l2,
            lambda s: {"pr_auc": evaluate.pr_auc(y_test, s), "roc_auc": evaluate.roc_auc(y_test, s)},
        )  # fmt: skip
        training_facts["behaviour"] = {
            "spec_features": len(applied.spec.names),
            "warm_rows": applied.warm_rows,
            "fit_since": cfg.fit_since,
            "seconds": applied.seconds,
            "rows_per_second": (applied.warm_rows + dataset.n_rows) / max(applied.seconds, 1e-9),
            "lift": {
                "with": {"pr_auc": test_metrics["pr_auc"], "roc_auc": test_metrics["roc_auc"]},
                "without": without,
            },
            "features": behaviour.feature_table(applied, kernel.reshape(-1)),
        }
        logger.info(
            "with the spec: test PR AUC %.4f, ROC AUC %.4f; without it (same model, own columns): %.4f, %.4f",
            test_metrics["pr_auc"], test_metrics["roc_auc"], without["pr_auc"], without["roc_auc"],
        )  # fmt: skip
    manifest = dataclasses.replace(
        manifest,
        threshold=choice.threshold,
        threshold_policy=threshold_policy,
        metrics=test_metrics,
        training=training_facts,
        score_histogram=evaluate.histogram(lite_train, cfg.histogram_bins),
        segment_thresholds=(
            segment_outcome.table.to_manifest()
            if segment_outcome is not None and segment_outcome.table is not None
            else None
        ),
    )
    manifest.validate()
    files = report.render(
        y_test, lite_test, test_metrics, version, transforms=training_facts["transforms"], optimum=optimum,
        behaviour=training_facts.get("behaviour"), segments=training_facts.get("segments"),
    )  # fmt: skip
    files["metrics.json"] = (
        json.dumps({"test": test_metrics, "threshold_policy": threshold_policy}, indent=2) + "\n"
    ).encode()
    timings["evaluate"] = time.perf_counter() - t

    if cfg.challenger:
        decision = promote.Decision(False, "not promoted: models/CHALLENGER points at it (shadow mode)")
    else:
        decision = promote.decide(
            cfg.models_dir, dataset.feature_names, X[split.test], y_test, test_metrics["pr_auc"],
            tolerance=cfg.promote_tolerance, force=cfg.force,
        )  # fmt: skip
    t = time.perf_counter()
    path = write_bundle(cfg.models_dir, manifest, model_bytes, files, signing_key=signing_key)
    if signing_key is not None:
        logger.info("bundle %s signed with key %s", version, signing_key.key_id)
    if decision.promote:
        set_current(cfg.models_dir, version)
    elif cfg.challenger:
        set_current(cfg.models_dir, version, CHALLENGER_FILE)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    logger.info("%s", decision.reason)
    return TrainResult(
        version=version,
        bundle_path=path,
        promoted=decision.promote,
        promotion_reason=decision.reason,
        metrics=test_metrics,
        parity_max_abs_diff=parity,
        threshold=choice.threshold,
        timings=timings,
        split=split,
        scaler_mean=mean,
        scaler_scale=scale,
        manifest=manifest,
        signed_by=signing_key.key_id if signing_key is not None else None,
    )
