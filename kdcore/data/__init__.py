"""Data: load_dataset(...) -> ImageData; BatchLoader; batched augmentations (see docs/INTERNALS.md)."""

from kdcore.data.dataset import ImageData, channel_stats, load_dataset
from kdcore.data.loader import BatchLoader, epoch_generator, normalize

__all__ = ["BatchLoader", "ImageData", "channel_stats", "epoch_generator", "load_dataset", "normalize"]
