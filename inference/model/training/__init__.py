"""Training and evaluation of the read model, on phantoms or a real labelled folder; Django-free.

``train(options)`` generates or reads the cases, splits them (phantoms: disjoint seed streams per split;
a folder: a seeded random split), fits the network, picks per-finding temperatures and thresholds on the
validation cases, measures the test cases, and writes ``weights.pt``, ``model-card.json``/``.md`` and
PNG plots into the output folder. ``add_arguments``/``options_from_args`` give any command-line front end
the same options (the Django command ``train_model`` is one).

Modules: ``options`` (TrainOptions and the argparse options), ``data`` (cases in memory and the splits),
``loop`` (fit and inference), ``evaluate`` (calibration and metrics), ``report`` (card and plots),
``run`` (``train``).
"""

from __future__ import annotations

from .options import TrainOptions, add_arguments, options_from_args
from .run import PHANTOM_INTENDED_USE, TrainResult, train

__all__ = [
    "PHANTOM_INTENDED_USE",
    "TrainOptions",
    "TrainResult",
    "add_arguments",
    "options_from_args",
    "train",
]
