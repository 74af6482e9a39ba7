"""The per-job report: one self-contained report.html (inline CSS and SVG charts, no script, nothing fetched).

    render_report(results, *, grid_png=None, grid_alt=None) -> str
    write_report(results, out_dir, grid_png=None, grid_alt=None) -> Path   (out_dir/report.html, atomic)
    corruption_strip_png(images_uint8, corruption_names, severity=3, seed=0) -> bytes

Importing this package does not import torch (the strip imports it when called).
"""

from kdcore.report.render import REPORT_FILE, render_report, write_report


def corruption_strip_png(images_uint8, corruption_names, severity: int = 3, seed: int = 0, indices=None) -> bytes:
    """See kdcore.report.strip.corruption_strip_png."""
    from kdcore.report.strip import corruption_strip_png as make

    return make(images_uint8, corruption_names, severity, seed, indices)


__all__ = ["REPORT_FILE", "render_report", "write_report", "corruption_strip_png"]
