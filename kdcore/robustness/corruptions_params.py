"""Every severity table of the generated corruptions, in one place.

Source: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019), the CIFAR-10-C generator `make_cifar_c.py` in github.com/hendrycks/robustness
(ImageNet-C/create_c/). Numbers are copied from that script (for 32 px images); index 0 is severity 1.
Spatial numbers (pixels, blur sigmas, motion radii) are for 32 px and are multiplied by
`spatial_scale(H, W)` = min(H, W) / 32 for other sizes (docs/CORRUPTIONS.md, "Other image sizes").
"""

from __future__ import annotations

REFERENCE_SIZE = 32

# -- noise ---------------------------------------------------------------------------------------
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # std of additive N(0, c)
SHOT_NOISE = (500, 250, 100, 75, 50)  # photons per unit intensity: Poisson(x c) / c
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # skimage random_noise 's&p' amount
SPECKLE_NOISE = (0.06, 0.1, 0.12, 0.16, 0.2)  # std of multiplicative x + x N(0, c)

# -- blur ----------------------------------------------------------------------------------------
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)  # skimage gaussian sigma (px)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # (disk radius px, alias_blur)
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # (sigma, max_delta, iters)
MOTION_BLUR = ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3))  # ImageMagick (radius, sigma)
MOTION_BLUR_ANGLE = (-45.0, 45.0)
# zoom factors np.arange(1, top, 0.01)
ZOOM_BLUR_TOP = (1.06, 1.11, 1.16, 1.21, 1.26)
ZOOM_BLUR_STEP = 0.01

# -- weather -------------------------------------------------------------------------------------
# (loc, scale, zoom, threshold, motion radius, motion sigma, blend)
SNOW = (
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
SNOW_ANGLE = (-135.0, -45.0)
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # (image weight, frost weight)
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # (fog strength, plasma wibbledecay)
PLASMA_MAPSIZE = 32  # plasma_fractal(mapsize=32) in make_cifar_c
# (loc, scale, sigma, threshold, intensity or mud sigma, mode 0 = water / 1 = mud)
SPATTER = (
    (0.62, 0.1, 0.7, 0.7, 0.5, 0),
    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
    (0.65, 0.1, 0.5, 0.68, 0.6, 1),
)
SPATTER_WATER_RGB = (175, 238, 238)  # "pale turquoise"
SPATTER_MUD_RGB = (63, 42, 20)  # "mud brown"
SPATTER_DIST_TRUNC = 20  # cv2.threshold(dist, 20, 20, THRESH_TRUNC), px

# -- digital -------------------------------------------------------------------------------------
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # (x - mean) c + mean, per channel
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # HSV V += c
SATURATE = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))  # HSV S = S a + b
JPEG_QUALITY = (80, 65, 58, 50, 40)  # PIL quality
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # PIL BOX down to int(32 c), BOX back up
# fractions of the image size IMSIZE: (displacement alpha, displacement sigma, affine jitter)
ELASTIC = (
    (0.0, 0.0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)


def spatial_scale(height: int, width: int) -> float:
    """Factor applied to every pixel-valued parameter for images that are not 32 px."""
    return min(height, width) / REFERENCE_SIZE
