"""``train``: data -> fit -> calibrate on validation -> metrics on test -> weights, card and plots."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference.model.network import ModelConfig, build_model, seed_everything
from inference.model.phantoms import FINDING_CODES, KEYPOINT_NAMES, REGIONS, SPECIES
from inference.model.predictor import save_checkpoint

from .data import Cases, folder_cases, phantom_cases, phantom_seeds, split_folder
from .evaluate import calibrate, clean, finding_metrics, region_metrics, roc_curve, sigmoid, vhs_metrics
from .loop import Hyper, fit, infer
from .options import TrainOptions
from .report import plot_loss, plot_roc, plot_vhs, write_card

PHANTOM_INTENDED_USE = (
    "Trained only on synthetic radiograph phantoms (procedurally drawn, not real animals). For "
    "demonstration and integration testing of the X Caliber pipeline only; its metrics describe phantoms, "
    "not patients. Not for clinical decisions."
)
FOLDER_INTENDED_USE = (
    "Trained on the labelled folder named in this card. Decision support for a veterinarian reading the "
    "radiograph, who makes the diagnosis; validate on your own cases before relying on it."
)


@dataclass
class TrainResult:
    output_dir: Path
    weights_path: Path
    sha256: str
    config: ModelConfig
    card: dict[str, Any]
    card_path: Path
    plots: list[Path]


@dataclass
class _Data:
    splits: dict[str, Cases]
    labels: tuple[str, ...]
    regions: tuple[str, ...]
    keypoints: tuple[str, ...]
    species: tuple[str, ...]
    description: dict[str, Any]


def _phantom_data(options: TrainOptions, progress: Callable[[str], None]) -> _Data:
    assert options.phantoms is not None  # TrainOptions guarantees exactly one source
    train_count = options.phantoms
    validation, test = _held(train_count, options.validation), _held(train_count, options.test)
    labels = options.labels or FINDING_CODES
    seeds: dict[str, list[int]] = {}
    taken: set[int] = set()
    for split, count in (("train", train_count), ("validation", validation), ("test", test)):
        seeds[split] = phantom_seeds(count, seed=options.seed, split=split, exclude=taken)
        taken.update(seeds[split])
    splits = {}
    for split, values in seeds.items():
        progress(f"generating {len(values)} {split} phantoms at {options.size} px")
        splits[split] = phantom_cases(
            values,
            size=options.size,
            labels=labels,
            regions=REGIONS,
            keypoints=KEYPOINT_NAMES,
            prevalence=options.prevalence,
            progress=progress,
        )
    return _Data(
        splits=splits,
        labels=tuple(labels),
        regions=REGIONS,
        keypoints=KEYPOINT_NAMES,
        species=options.species or SPECIES,
        description={
            "source": "phantoms",
            "description": (
                "synthetic phantoms from inference.model.phantoms, disjoint seed streams per split"
            ),
            "seed": options.seed,
            "prevalence": options.prevalence,
            "seed_streams": {"train": "train", "validation": "validation", "test": "test"},
        },
    )


def _held(train_count: int, value: float) -> int:
    """A phantom validation/test size: a fraction of the train count, or a count."""
    return max(1, round(value * train_count)) if value < 1 else int(value)


def _folder_data(options: TrainOptions, progress: Callable[[str], None]) -> _Data:
    assert options.folder is not None  # TrainOptions guarantees exactly one source
    progress(f"reading {options.folder}")
    cases, rows, labels = folder_cases(
        options.folder,
        size=options.size,
        labels=list(options.labels) or None,
        keypoints=None,
        progress=progress,
    )
    regions = tuple(r for r in REGIONS if any(row.region == r for row in rows))
    keypoints = tuple(n for n in KEYPOINT_NAMES if any(n in row.keypoints for row in rows))
    species = options.species or tuple(sorted({row.species for row in rows if row.species}))
    return _Data(
        splits=split_folder(cases, seed=options.seed, validation=options.validation, test=options.test),
        labels=tuple(labels),
        regions=regions,
        keypoints=keypoints,
        species=species,
        description={
            "source": "folder",
            "description": f"labelled folder {options.folder.name}",
            "path": str(options.folder),
            "rows_decoded": len(rows),
            "split_seed": options.seed,
        },
    )


def train(options: TrainOptions, progress: Callable[[str], None] = print) -> TrainResult:
    """Train, calibrate and evaluate one model; write weights, card and plots into ``options.output``."""
    started = time.perf_counter()
    torch.set_num_threads(options.threads)
    seed_everything(options.seed)
    device = torch.device(options.device)
    output = options.output
    output.mkdir(parents=True, exist_ok=True)

    data = (
        _phantom_data(options, progress) if options.phantoms is not None else _folder_data(options, progress)
    )
    splits = data.splits
    progress(
        "cases: "
        + ", ".join(f"{name} {len(cases)}" for name, cases in splits.items())
        + f"  (data ready in {time.perf_counter() - started:.0f} s)"
    )
    intended_use = (
        " ".join(p for p in (PHANTOM_INTENDED_USE, options.intended_use) if p)
        if data.description["source"] == "phantoms"
        else options.intended_use or FOLDER_INTENDED_USE
    )
    config = ModelConfig(
        labels=data.labels,
        keypoints=data.keypoints,
        regions=data.regions,
        species=data.species,
        intended_use=intended_use,
        size=options.size,
        width=options.width,
        blocks=options.blocks,
        vocabulary_version=options.vocabulary_version,
        name=options.name,
        version=options.version,
    )
    seed_everything(options.seed)
    model = build_model(config)
    hyper = Hyper(
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr=options.lr,
        weight_decay=options.weight_decay,
        keypoint_weight=options.keypoint_weight,
        region_weight=options.region_weight,
        seed=options.seed,
    )
    fit_start = time.perf_counter()
    history = fit(model, splits["train"], splits["validation"], hyper, device=device, progress=progress)
    fit_seconds = time.perf_counter() - fit_start

    progress("calibrating on validation, measuring on test")
    count = len(data.labels)
    validation = infer(
        model, splits["validation"], batch_size=options.batch_size, device=device, labels=count
    )
    calibration = calibrate(
        validation, splits["validation"], rule=options.threshold_rule, min_sensitivity=options.min_sensitivity
    )
    tested = infer(model, splits["test"], batch_size=options.batch_size, device=device, labels=count)
    findings = finding_metrics(tested, splits["test"], calibration, data.labels)
    vhs, vhs_truth, vhs_guess = vhs_metrics(
        tested, splits["test"], data.keypoints, vertebrae=config.reference_vertebrae
    )
    regions = region_metrics(tested, splits["test"], data.regions)
    for code, m in findings.items():
        progress(
            f"  {code:<28} AUROC {m['auroc']:.3f}  sensitivity {m['sensitivity']:.3f}  "
            f"specificity {m['specificity']:.3f}  (+{m['positives']} / -{m['negatives']})"
        )
    progress(f"  VHS MAE {vhs['mae']} over {vhs['cases']} cases; region accuracy {regions['accuracy']}")

    plots = [plot_loss(output / "loss.png", history)]
    curves = {}
    for j, code in enumerate(data.labels):
        known = splits["test"].label_mask[:, j] > 0
        scores = sigmoid(tested.logits[known, j] / calibration.temperatures[j])
        fpr, tpr = roc_curve(scores, splits["test"].labels[known, j])
        curves[code] = (fpr, tpr, clean(findings[code]["auroc"]))
    plots.append(plot_roc(output / "roc.png", curves))
    if vhs["mae"] is not None:
        plots.append(plot_vhs(output / "vhs.png", vhs_truth, vhs_guess, vhs["mae"]))

    metrics_doc: dict[str, Any] = {
        "findings": {code: {**m, "auroc": clean(m["auroc"])} for code, m in findings.items()},
        "vhs": vhs,
        "regions": regions,
    }
    config = ModelConfig.from_dict(
        {
            **config.to_dict(),
            "thresholds": [float(t) for t in calibration.thresholds],
            "temperatures": [float(t) for t in calibration.temperatures],
            "extra": {"data": data.description, "metrics": metrics_doc, "command": options.command},
        }
    )
    weights_path = output / "weights.pt"
    digest = save_checkpoint(weights_path, model.cpu(), config)
    card: dict[str, Any] = {
        "name": config.name,
        "version": config.version,
        "intended_use": config.intended_use,
        "species": list(config.species),
        "body_regions": list(config.regions),
        "labels": list(config.labels),
        "regions": list(config.regions),
        "keypoints": list(config.keypoints),
        "thresholds": dict(zip(config.labels, config.thresholds, strict=True)),
        "temperatures": dict(zip(config.labels, config.temperatures, strict=True)),
        "metrics": metrics_doc,
        "cases": {name: len(cases) for name, cases in splits.items()},
        "data": data.description,
        "input": {"size": config.size, "mean": config.mean, "std": config.std},
        "architecture": {
            "network": "XCaliberNet",
            "width": config.width,
            "blocks": list(config.blocks),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "training": {
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "weight_decay": options.weight_decay,
            "keypoint_weight": options.keypoint_weight,
            "region_weight": options.region_weight,
            "threshold_rule": options.threshold_rule,
            "device": options.device,
            "threads": options.threads,
            "seconds": round(time.perf_counter() - started, 1),
            "fit_seconds": round(fit_seconds, 1),
            "history": {"train": history.train, "validation": history.validation},
        },
        "vocabulary_version": config.vocabulary_version,
        "command": options.command,
        "seed": options.seed,
        "weights": {"file": weights_path.name, "sha256": digest, "bytes": weights_path.stat().st_size},
        "torch": torch.__version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "plots": [p.name for p in plots],
    }
    card_path = write_card(output, card)
    progress(
        f"wrote {weights_path} (sha256 {digest}) and {card_path} in {time.perf_counter() - started:.0f} s"
    )
    return TrainResult(
        output_dir=output,
        weights_path=weights_path,
        sha256=digest,
        config=config,
        card=card,
        card_path=card_path,
        plots=plots,
    )
