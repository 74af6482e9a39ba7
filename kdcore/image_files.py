"""Which files of an image folder are images: kdcore decodes them, the service checks uploads against the
same list. No torch import (the API imports it)."""

from __future__ import annotations

TORCH_DECODED = frozenset({".jpg", ".jpeg", ".png", ".webp"})  # torchvision.io decodes these (fast)
PIL_DECODED = frozenset({".bmp", ".tif", ".tiff", ".gif"})  # PIL decodes the rest
IMAGE_EXTENSIONS = TORCH_DECODED | PIL_DECODED
