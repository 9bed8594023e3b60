"""Inference throughput and latency of the read model (``inference/model``), by batch size and input size.

Prints numbers, never asserts. For each (input size, batch size) it measures:

* ``forward``: the network forward alone on a ready, normalised, channels_last batch already on the device,
  under ``torch.inference_mode()`` (and bf16 autocast on CUDA, or on CPU with ``--cpu-bf16``);
* ``predict``: ``Predictor.predict`` end to end from numpy images (half uint8, half float32; letterboxing
  and normalisation included), with Grad-CAM for every positive. The weights are random, so which labels
  come out positive (and so how much Grad-CAM runs) is arbitrary: the positive count is printed with it;
* ``predict-nocam``: the same with every threshold above 1, so no label is positive and no Grad-CAM runs;
* ``preprocess``: ``to_batch`` alone (CPU work, whatever the device).

With ``--model DIR`` (a trained model's folder: ``weights.pt`` and ``model-card.json``, e.g. the shipped
``inference/weights/xcaliber-phantom-1.0.0``) the trained weights and calibrated thresholds are used
instead, at the model's own input size, so the positives (and the Grad-CAM work) are the real ones.

Inputs are phantom radiographs (``inference.model.phantoms.generate``) drawn at ``--source-scale`` times the
model size and cropped to a 5:4 (rows:columns) portrait, so every image is really resized and letterboxed.
Making them is not timed. Warm-up iterations are not counted. Latency per image is a batch's wall time
divided by its batch size (p50/p95 over the timed batches); the batch latency is shown as well.

    .venv/bin/python bench/inference.py --sizes 256 512 --batch-sizes 1 8 32 --iterations 5
    .venv/bin/python bench/inference.py --device cuda --batch-sizes 64 128 256 --sizes 512 --json
    .venv/bin/python bench/inference.py --model inference/weights/xcaliber-phantom-1.0.0 --batch-sizes 1 32

CUDA is never touched with ``--device cpu``; ``auto`` asks ``torch.cuda.is_available()`` and uses CUDA
only when it says yes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from inference.model.network import ModelConfig, build_model, seed_everything  # noqa: E402
from inference.model.phantoms import FINDING_CODES, KEYPOINT_NAMES, generate  # noqa: E402
from inference.model.predictor import Predictor  # noqa: E402
from inference.model.preprocess import to_batch  # noqa: E402

GPU_BUDGET_IMAGES_PER_S = 1000.0
GPU_BUDGET_SIZE = 512
POOL = 8  # distinct phantoms per input size; batches cycle through them


@dataclass
class Measurement:
    what: str
    size: int
    batch: int
    iterations: int
    images_per_s: float
    image_p50_ms: float
    image_p95_ms: float
    batch_p50_ms: float
    batch_p95_ms: float
    positives: int | None = None  # (image, label) pairs above threshold per batch, for predict runs


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def time_batches(
    step: Callable[[], object], warmup: int, iterations: int, sync: Callable[[], None]
) -> list[float]:
    """Wall seconds of ``iterations`` calls of ``step`` after ``warmup`` uncounted ones."""
    for _ in range(warmup):
        step()
    sync()
    times: list[float] = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def summarise(
    what: str, size: int, batch: int, times: list[float], positives: int | None = None
) -> Measurement:
    return Measurement(
        what=what,
        size=size,
        batch=batch,
        iterations=len(times),
        images_per_s=batch * len(times) / sum(times),
        image_p50_ms=percentile(times, 0.5) / batch * 1e3,
        image_p95_ms=percentile(times, 0.95) / batch * 1e3,
        batch_p50_ms=percentile(times, 0.5) * 1e3,
        batch_p95_ms=percentile(times, 0.95) * 1e3,
        positives=positives,
    )


def phantom_pool(size: int, scale: float) -> list[NDArray[np.generic]]:
    """POOL portrait phantoms around ``scale`` x ``size``; even indices uint8, odd float32 in [0, 1]."""
    source = max(32, round(size * scale))
    images: list[NDArray[np.generic]] = []
    for seed in range(POOL):
        image = np.asarray(generate(seed, size=source).image, dtype=np.float32)
        image = np.ascontiguousarray(image[:, : max(1, round(source * 0.8))])  # 5:4 rows:columns
        if seed % 2 == 0:
            images.append(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
        else:
            images.append(np.clip(image, 0.0, 1.0))
    return images


def load_trained(folder: Path, **options: Any) -> Predictor:
    """A trained model from its folder, checked against the SHA-256 its model card records."""
    card = json.loads((folder / "model-card.json").read_text(encoding="utf-8"))
    return Predictor.load(
        folder / card["weights"]["file"], expected_sha256=card["weights"]["sha256"], **options
    )


def resolve_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def bench_config(
    size: int,
    batch: int,
    images: list[NDArray[np.generic]],
    options: argparse.Namespace,
    device: torch.device,
) -> list[Measurement]:
    if options.model is not None:
        predictor = load_trained(options.model, device=device, cpu_bf16=options.cpu_bf16)
        config = predictor.config
    else:
        config = ModelConfig(
            labels=tuple(FINDING_CODES), keypoints=tuple(KEYPOINT_NAMES), size=size, width=options.width
        )
        seed_everything(options.seed)
        predictor = Predictor(build_model(config), config, device=device, cpu_bf16=options.cpu_bf16)
    labels = config.labels
    nocam = Predictor(
        predictor.model,
        # Above any probability: a trained model's float32 sigmoid does reach exactly 1.0.
        ModelConfig.from_dict({**config.to_dict(), "thresholds": [1.5] * len(labels)}),
        device=device,
        cpu_bf16=options.cpu_bf16,
    )
    chosen = [images[i % len(images)] for i in range(batch)]
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    warmup, iterations = options.warmup, options.iterations
    results: list[Measurement] = []

    # (1) forward alone
    tensor, _ = to_batch(chosen, size, mean=config.mean, std=config.std)
    tensor = tensor.to(device).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=predictor.bf16)

    def forward() -> object:
        with torch.inference_mode(), autocast:
            return predictor.model(tensor)

    results.append(summarise("forward", size, batch, time_batches(forward, warmup, iterations, sync)))

    # (2) predict end to end, Grad-CAM for the (arbitrary) positives, then with no positives at all
    for what, model in (("predict", predictor), ("predict-nocam", nocam)):
        predictions = model.predict(chosen)
        positives = sum(sum(p.positives.values()) for p in predictions)
        times = time_batches(functools.partial(model.predict, chosen), warmup, iterations, sync)
        results.append(summarise(what, size, batch, times, positives))

    # (3) preprocessing alone
    def preprocess() -> object:
        return to_batch(chosen, size, mean=config.mean, std=config.std)

    results.append(summarise("preprocess", size, batch, time_batches(preprocess, warmup, iterations, sync)))
    return results


def format_row(m: Measurement) -> str:
    positives = "" if m.positives is None else f"{m.positives}/{m.batch * len(FINDING_CODES)}"
    return (
        f"{m.what:<14} {m.size:>5} {m.batch:>5} {m.images_per_s:>10.1f} {m.image_p50_ms:>9.2f} "
        f"{m.image_p95_ms:>9.2f} {m.batch_p50_ms:>10.1f} {m.batch_p95_ms:>10.1f}  {positives}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="model input sizes (px)")
    parser.add_argument("--iterations", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted batches before each measurement")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    parser.add_argument("--width", type=int, default=32, help="network width (the default model's is 32)")
    parser.add_argument("--source-scale", type=float, default=2.0, help="phantom size / model input size")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a trained model folder (weights.pt + model-card.json)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    options = parser.parse_args(argv)
    if options.iterations < 1 or options.warmup < 0 or min(options.batch_sizes) < 1:
        parser.error("--iterations and batch sizes must be at least 1, --warmup at least 0")
    if any(size < 32 or size % 32 for size in options.sizes):
        parser.error("input sizes must be multiples of 32")

    torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    if options.model is not None:
        options.sizes = [load_trained(options.model).config.size]  # a trained model has one input size
    precision = "bf16 autocast" if device.type == "cuda" or options.cpu_bf16 else "float32"
    print(f"torch {torch.__version__}  python {platform.python_version()}")
    print(f"device {device.type}: {device_name(device)}  threads {torch.get_num_threads()}  {precision}")
    if options.model is not None:
        print(f"model: trained weights from {options.model} (calibrated thresholds); channels_last")
    else:
        print(
            f"model: XCaliberNet width {options.width}, {len(FINDING_CODES)} labels, {len(KEYPOINT_NAMES)} "
            "keypoints, RANDOM weights (positives and hence Grad-CAM work are arbitrary); channels_last"
        )
    print(
        f"inputs: {POOL} phantoms per size at {options.source_scale}x the input size, 5:4 portrait, "
        f"half uint8, half float32; warm-up {options.warmup}, timed {options.iterations} per row"
    )
    header = (
        f"{'what':<14} {'size':>5} {'batch':>5} {'images/s':>10} {'img p50':>9} {'img p95':>9} "
        f"{'batch p50':>10} {'batch p95':>10}  positives"
    )
    print()
    print(header + "   (latencies in ms)")
    print("-" * len(header))

    results: list[Measurement] = []
    started = time.perf_counter()
    for size in options.sizes:
        images = phantom_pool(size, options.source_scale)
        for batch in options.batch_sizes:
            rows = bench_config(size, batch, images, options, device)
            for row in rows:
                print(format_row(row), flush=True)
            results.extend(rows)
    elapsed = time.perf_counter() - started

    print()
    by_key = {(m.what, m.size, m.batch): m for m in results}
    for size in options.sizes:
        for batch in options.batch_sizes:
            fwd, pred, nocam, prep = (
                by_key[(w, size, batch)] for w in ("forward", "predict", "predict-nocam", "preprocess")
            )
            print(
                f"SUMMARY size={size} batch={batch}: forward {fwd.images_per_s:.1f} img/s, "
                f"predict {pred.images_per_s:.1f} img/s (p50 {pred.image_p50_ms:.2f} ms/img, "
                f"{pred.positives} positives), predict-nocam {nocam.images_per_s:.1f} img/s "
                f"(p50 {nocam.image_p50_ms:.2f} ms/img), preprocess {prep.images_per_s:.1f} img/s"
            )

    budget: dict[str, Any] = {"images_per_s": GPU_BUDGET_IMAGES_PER_S, "size": GPU_BUDGET_SIZE}
    at_budget_size = [m for m in results if m.size == GPU_BUDGET_SIZE and m.what != "preprocess"]
    if device.type != "cuda":
        budget["verdict"] = "n/a on CPU"
        print(
            f"BUDGET GPU worker >= {GPU_BUDGET_IMAGES_PER_S:.0f} images/s at {GPU_BUDGET_SIZE} px: n/a on CPU"
        )
    elif not at_budget_size:
        budget["verdict"] = f"not measured (add --sizes {GPU_BUDGET_SIZE})"
        print(f"BUDGET GPU worker: {budget['verdict']}")
    else:
        for what in ("forward", "predict", "predict-nocam"):
            best = max((m for m in at_budget_size if m.what == what), key=lambda m: m.images_per_s)
            verdict = "meets" if best.images_per_s >= GPU_BUDGET_IMAGES_PER_S else "below"
            budget[what] = {"batch": best.batch, "images_per_s": best.images_per_s, "verdict": verdict}
            print(
                f"BUDGET GPU worker >= {GPU_BUDGET_IMAGES_PER_S:.0f} images/s at {GPU_BUDGET_SIZE} px, "
                f"{what}: best {best.images_per_s:.1f} images/s at batch {best.batch} -> {verdict}"
            )
    print(f"total {elapsed:.1f} s")

    if options.json:
        document = {
            "torch": torch.__version__,
            "device": device.type,
            "device_name": device_name(device),
            "threads": torch.get_num_threads(),
            "precision": precision,
            "random_weights": options.model is None,
            "model": None if options.model is None else str(options.model),
            "warmup": options.warmup,
            "results": [asdict(m) for m in results],
            "budget": budget,
            "elapsed_s": elapsed,
        }
        print(json.dumps(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
