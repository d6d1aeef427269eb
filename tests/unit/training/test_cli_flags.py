"""fraud-train's flags come from TrainConfig's fields: one default per setting, every flag kept, help informative."""

from __future__ import annotations

import dataclasses

import pytest

from training.fraud_train import POLICY_FLAGS, build_parser, config_from_args
from training.pipeline import TrainConfig
from training.thresholds import Policy

FLAGS = {
    "--data", "--synthetic", "--label-column", "--features", "--fraud-rate", "--min-rows", "--split",
    "--time-column", "--val-fraction", "--test-fraction", "--seed", "--epochs", "--patience", "--l2",
    "--learning-rate", "--lr-decay", "--batch-size", "--class-weight", "--threshold-policy", "--target-precision",
    "--cost-missed-fraud", "--cost-false-alarm", "--models-dir", "--promote-tolerance", "--force", "--challenger",
    "--signing-key", "--generator", "--feature-spec", "--fit-since", "--label-time-column", "--segment-field",
    "--segment-min-support",
    "-q", "--quiet",
}  # fmt: skip


def test_every_flag_is_still_there() -> None:
    parser = build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}
    assert flags == FLAGS


def test_the_parser_defaults_are_trainconfigs() -> None:
    args = build_parser().parse_args(["--synthetic", "1000"])
    defaults = TrainConfig()
    flagged = [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]
    assert len(flagged) == 29  # every field but policy (four flags of its own) and histogram_bins
    for f in flagged:
        if f.name != "synthetic_rows":
            assert getattr(args, f.name) == getattr(defaults, f.name), f.name
    assert config_from_args(args) == dataclasses.replace(defaults, synthetic_rows=1000)


def test_each_flag_sets_its_field() -> None:
    argv = [
        "--data", "x.csv", "--label-column", "Fraud", "--features", "A, B,C", "--fraud-rate", "0.02",
        "--min-rows", "10", "--split", "time", "--time-column", "T", "--val-fraction", "0.1",
        "--test-fraction", "0.3", "--seed", "1", "--epochs", "2", "--patience", "3", "--l2", "0.5",
        "--learning-rate", "0.01", "--lr-decay", "0.5", "--batch-size", "64", "--class-weight", "7",
        "--threshold-policy", "cost", "--target-precision", "0.8", "--cost-missed-fraud", "50",
        "--cost-false-alarm", "2", "--models-dir", "m", "--promote-tolerance", "0.1", "--force",
        "--signing-key", "k.pem", "--generator", "v3", "--feature-spec", "s.toml", "--fit-since", "2026-01-15",
        "--segment-field", "channel", "--segment-min-support", "200",
    ]  # fmt: skip
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg == TrainConfig(
        data_path="x.csv", label_column="Fraud", features=("A", "B", "C"), synthetic_fraud_rate=0.02, min_rows=10,
        split="time", time_column="T", val_fraction=0.1, test_fraction=0.3, seed=1, epochs=2, patience=3, l2=0.5,
        learning_rate=0.01, lr_decay=0.5, batch_size=64, class_weight="7",
        policy=Policy("cost", target_precision=0.8, cost_missed_fraud=50.0, cost_false_alarm=2.0),
        models_dir="m", promote_tolerance=0.1, force=True, signing_key="k.pem", generator="v3",
        feature_spec="s.toml", fit_since="2026-01-15", segment_field="channel", segment_min_support=200,
    )  # fmt: skip


def test_help_shows_each_default_and_group() -> None:
    text = " ".join(build_parser().format_help().split())
    defaults = TrainConfig()
    for shown in ("Class", "0.005", "stratified", "42", "5000", "1e-06", "0", "balanced", "models", "1000"):
        assert f"(default: {shown})" in text, shown
    for _, attr, _ in POLICY_FLAGS:
        assert f"(default: {getattr(defaults.policy, attr)})" in text, attr
    assert "(default: None)" not in text and "(default: False)" not in text  # nothing worth showing
    assert "default: event_time when the data has it, else Time" in text
    for group in ("data:", "columns:", "split:", "training:", "threshold (chosen on the validation split):", "output:"):
        assert group in text


def test_a_data_source_is_required_and_only_one() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "x.csv", "--synthetic", "10"])
