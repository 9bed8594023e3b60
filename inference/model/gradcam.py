"""Grad-CAM for ``XCaliberNet``: per-label maps over the last conv block, upsampled to the input.

Nothing here initialises CUDA at import time: a worker may import this module and then fork.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from inference.model.network import XCaliberNet


def activation_maps(model: XCaliberNet, features: torch.Tensor, label_indices: Sequence[int]) -> torch.Tensor:
    """Raw Grad-CAM maps N x len(label_indices) x h x w at the feature resolution (not yet scaled).

    One backward pass per requested label through the classifier only: the backbone's activations are
    fixed inputs here, so it is never run twice. For each label the logit is summed over the batch; in eval
    mode images do not interact, so d(sum)/d(features of image i) is image i's own gradient, and one
    pass serves the whole batch. Per image, channel weights are the spatial mean of the gradient and the map
    is ReLU(sum_c weight_c * A_c). With today's linear head this equals CAM exactly; the gradient form
    stays correct if the head grows.
    """
    n, _, h, w = features.shape
    if not label_indices:
        return torch.zeros((n, 0, h, w), device=features.device)
    with torch.inference_mode(False), torch.enable_grad():
        # A clone is an ordinary tensor even when ``features`` was made under inference_mode.
        activations = features.detach().clone().requires_grad_(True)
        logits = model.classify(activations)
        maps = []
        for position, label in enumerate(label_indices):
            (grads,) = torch.autograd.grad(
                logits[:, label].sum(), activations, retain_graph=position < len(label_indices) - 1
            )
            weights = grads.float().mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((weights * activations.detach().float()).sum(dim=1)))
    return torch.stack(maps, dim=1)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int], *, top: float = 1.0) -> torch.Tensor:
    """... x h x w maps upsampled bilinearly to ``size`` and scaled by their maximum into [0, ``top``].

    A map with no support anywhere (all zero) stays all zero rather than being stretched from noise.
    Scaling happens in place on the upsampled tensor: at 32 images x 17 findings x 256 px that tensor
    is ~140 MB, and every temporary copy of it would cost more than the interpolation itself.
    """
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float().contiguous()
    cams = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    peak = cams.amax(dim=(2, 3), keepdim=True)
    factor = torch.where(peak > 0, top / peak.clamp(min=1e-12), torch.zeros_like(peak))
    return cams.mul_(factor).clamp_(0.0, top).reshape(*lead, *size)


def gradcam_from_features(
    model: XCaliberNet, features: torch.Tensor, label_indices: Sequence[int], size: tuple[int, int]
) -> torch.Tensor:
    """Grad-CAM maps N x len(label_indices) x size, each in [0, 1], from last-block ``features``."""
    return upsample_maps(activation_maps(model, features, label_indices), size)


def gradcam(model: XCaliberNet, batch: torch.Tensor, label_indices: Sequence[int]) -> torch.Tensor:
    """Grad-CAM heatmaps N x L x H x W in [0, 1] at the input resolution for the given label indices.

    The model is put in eval mode for the call (training-mode BatchNorm would mix images in the batch).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model(batch).features
        return gradcam_from_features(model, features, label_indices, (batch.shape[-2], batch.shape[-1]))
    finally:
        model.train(was_training)
