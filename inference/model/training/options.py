"""Training options: one dataclass, the argparse options that fill it, and their validation.

The same ``add_arguments`` serves the Django command and any plain script, so an option added here appears
everywhere at once, and ``TrainOptions`` is the one thing ``train`` reads (no hidden globals).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from inference.model.phantoms import FINDING_CODES


@dataclass(frozen=True)
class TrainOptions:
    """Everything one training run needs. ``phantoms`` (train cases) xor ``folder`` picks the data."""

    output: Path
    phantoms: int | None = None
    folder: Path | None = None
    size: int = 256
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    name: str = "xcaliber-phantom"
    version: str = "0.0.0"
    # < 1: a fraction (of the train count for phantoms, of all rows for a folder); >= 1: a case count.
    validation: float = 0.15
    test: float = 0.15
    width: int = 32
    blocks: tuple[int, ...] = (1, 1, 2)
    keypoint_weight: float = 5.0
    region_weight: float = 0.5
    prevalence: float = 0.3
    labels: tuple[str, ...] = ()  # empty: every finding the data knows
    species: tuple[str, ...] = ()  # empty: what the data says
    intended_use: str = ""
    vocabulary_version: str = ""
    threshold_rule: str = "youden"
    min_sensitivity: float = 0.9
    command: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.phantoms is None) == (self.folder is None):
            raise ValueError("give exactly one of --phantoms N or --folder PATH")
        if self.phantoms is not None and self.phantoms < 2:
            raise ValueError("--phantoms needs at least 2 training cases")
        if self.size < 32 or self.size % 32:
            raise ValueError("--size must be a multiple of 32 (the network's stride)")
        if self.epochs < 1 or self.batch_size < 2 or self.threads < 1:
            raise ValueError("--epochs >= 1, --batch-size >= 2 and --threads >= 1 are required")
        if self.lr <= 0 or self.validation <= 0 or self.test <= 0:
            raise ValueError("--lr, --validation and --test must be positive")
        if self.device not in ("cpu", "cuda"):
            raise ValueError("--device is cpu or cuda")
        if self.threshold_rule not in ("youden", "sensitivity"):
            raise ValueError("--threshold-rule is youden or sensitivity")
        unknown = set(self.labels) - set(FINDING_CODES)
        if unknown:
            raise ValueError(f"unknown finding codes in --labels: {sorted(unknown)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training option; ``options_from_args`` turns the parsed namespace into ``TrainOptions``."""
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--phantoms", type=int, help="train on N synthetic phantoms (plus validation/test)")
    data.add_argument("--folder", type=Path, help="train on a labelled folder (images + labels.csv)")
    parser.add_argument("--output", type=Path, required=True, help="folder for weights, card and plots")
    parser.add_argument("--size", type=int, default=256, help="model input size in px (multiple of 32)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0, help="seeds data, split, initialisation, batches")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--name", default="xcaliber-phantom", help="model name in the card")
    parser.add_argument("--version", dest="model_version", default="0.0.0", help="model version")
    parser.add_argument(
        "--validation", type=float, default=0.15, help="validation cases: a fraction (< 1) or a count"
    )
    parser.add_argument("--test", type=float, default=0.15, help="test cases: a fraction (< 1) or a count")
    parser.add_argument("--width", type=int, default=32, help="network width")
    parser.add_argument("--blocks", type=int, nargs=3, default=[1, 1, 2], help="residual blocks per stage")
    parser.add_argument("--keypoint-weight", type=float, default=5.0, help="keypoint L1 loss weight")
    parser.add_argument("--region-weight", type=float, default=0.5, help="region cross-entropy weight")
    parser.add_argument("--prevalence", type=float, default=0.3, help="phantom finding prevalence")
    parser.add_argument("--labels", nargs="+", default=[], help="finding codes (default: all known)")
    parser.add_argument("--species", nargs="+", default=[], help="species (default: from the data)")
    parser.add_argument("--intended-use", default="", help="intended use statement for the card")
    parser.add_argument("--vocabulary-version", default="", help="findings vocabulary version")
    parser.add_argument("--threshold-rule", choices=("youden", "sensitivity"), default="youden")
    parser.add_argument("--min-sensitivity", type=float, default=0.9, help="for --threshold-rule sensitivity")


def options_from_args(args: argparse.Namespace, command: str) -> TrainOptions:
    """``TrainOptions`` from a namespace filled by ``add_arguments``; ``command`` is recorded verbatim."""
    return TrainOptions(
        output=Path(args.output),
        phantoms=args.phantoms,
        folder=Path(args.folder) if args.folder is not None else None,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        name=args.name,
        version=args.model_version,
        validation=args.validation,
        test=args.test,
        width=args.width,
        blocks=tuple(args.blocks),
        keypoint_weight=args.keypoint_weight,
        region_weight=args.region_weight,
        prevalence=args.prevalence,
        labels=tuple(args.labels),
        species=tuple(args.species),
        intended_use=args.intended_use,
        vocabulary_version=args.vocabulary_version,
        threshold_rule=args.threshold_rule,
        min_sensitivity=args.min_sensitivity,
        command=command,
    )
