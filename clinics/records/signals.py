"""Hooks for apps that build on records (AI reads) without records importing them.

Both are sent inside the transaction of the change, so a receiver's writes commit or roll back with it.
"""

from __future__ import annotations

from django.dispatch import Signal

# A new image was stored: ``image`` (with its study and patient loaded) and the ``actor`` who sent it.
image_stored = Signal()

# A study is about to be deleted: each receiver returns the storage keys it owns under the study
# (heatmaps, ...), to be deleted with the images' objects after commit.
study_stored_keys = Signal()
