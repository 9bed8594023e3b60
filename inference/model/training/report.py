"""The model card (JSON for machines, Markdown for people) and the training plots (PNG, matplotlib Agg).

The card is the model's only claim about itself, so it carries what a reader needs to judge it: where the
data came from, how many cases each split had, per-finding operating points and their test metrics, and
the exact command, seed, torch version and weights checksum to reproduce and verify it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .loop import History


def _number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def card_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable card: every number comes from ``card`` itself."""
    findings: Mapping[str, Mapping[str, Any]] = card["metrics"]["findings"]
    vhs = card["metrics"]["vhs"]
    regions = card["metrics"].get("regions", {})
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Summary",
        "",
        f"- Species: {', '.join(card['species']) or 'unspecified'}",
        f"- Body regions: {', '.join(card['body_regions']) or 'unspecified'}",
        f"- Findings: {', '.join(card['labels'])}",
        f"- Keypoints: {', '.join(card['keypoints']) or 'none'} (VHS from the heart axes and T4-T8)",
        f"- Input: {card['input']['size']} px letterboxed grey, normalised "
        f"(mean {card['input']['mean']}, std {card['input']['std']})",
        f"- Data source: {card['data']['source']} ({card['data']['description']})",
        f"- Cases: train {card['cases']['train']}, validation {card['cases']['validation']}, "
        f"test {card['cases']['test']}",
        "",
        "## Test metrics (held-out test cases; operating points chosen on validation)",
        "",
        "| finding | AUROC | sensitivity | specificity | threshold | temperature | positives | negatives |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for code in card["labels"]:
        m = findings[code]
        lines.append(
            f"| {code} | {_number(m['auroc'])} | {_number(m['sensitivity'])} | {_number(m['specificity'])} "
            f"| {_number(m['threshold'])} | {_number(card['temperatures'][code], 2)} "
            f"| {m['positives']} | {m['negatives']} |"
        )
    lines += [
        "",
        f"- Vertebral heart score: mean absolute error {_number(vhs['mae'])} vertebrae over "
        f"{vhs['cases']} test cases"
        + (f" (bias {_number(vhs.get('bias'))})" if vhs.get("bias") is not None else ""),
    ]
    if regions.get("accuracy") is not None:
        lines.append(
            f"- Region recognition: accuracy {_number(regions['accuracy'])} over {regions['cases']} cases"
        )
    lines += [
        "",
        "## Reproduce and verify",
        "",
        f"- Command: `{card['command']}`",
        f"- Seed: {card['seed']}",
        f"- torch {card['torch']}, trained on {card['training']['device']} with "
        f"{card['training']['threads']} thread(s) in {card['training']['seconds']:.0f} s",
        f"- Weights: `{card['weights']['file']}`, {card['weights']['bytes']} bytes, "
        f"SHA-256 `{card['weights']['sha256']}`",
        f"- Created: {card['created_at']}",
        "",
        "Plots: " + ", ".join(f"`{name}`" for name in card["plots"]),
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, card: Mapping[str, Any]) -> Path:
    path = folder / "model-card.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (folder / "model-card.md").write_text(card_markdown(card), encoding="utf-8")
    return path


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display; selected before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(path: Path, history: History) -> Path:
    plt = _pyplot()
    epochs = range(1, len(history.train) + 1)
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.plot(epochs, [p["total"] for p in history.train], marker="o", label="train")
    axis.plot(epochs, [p["total"] for p in history.validation], marker="o", label="validation")
    axis.set(xlabel="epoch", ylabel="loss (findings + regions + keypoints)", title="Training loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_roc(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float], float | None]]) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 6), dpi=100)
    for code, (fpr, tpr, area) in curves.items():
        axis.plot(fpr, tpr, label=f"{code} (AUROC {_number(area)})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC on the test cases", aspect="equal")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_vhs(path: Path, truth: NDArray[np.float64], predicted: NDArray[np.float64], mae: float) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    axis.scatter(truth, predicted, s=6, alpha=0.6)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    axis.set(
        xlabel="true VHS (vertebrae)",
        ylabel="predicted VHS (vertebrae)",
        title=f"VHS on the test cases (MAE {mae:.3f})",
        aspect="equal",
    )
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
