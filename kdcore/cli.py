"""Local commands (no service needed): `kd run SPEC.json --out DIR`, `kd corruptions-grid`.

Also `python -m kdcore ...` with the same sub-commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from kdcore.callbacks import Callbacks, Progress
from kdcore.errors import KDError
from kdcore.spec import load_spec


class ProgressBar(Callbacks):
    """A tqdm bar over the whole job (fraction x 1000), with the phase and epoch as its label."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def on_progress(self, progress: Progress) -> None:
        label = progress.phase if progress.seed is None else f"{progress.phase} (seed {progress.seed})"
        label = label if not progress.epochs else f"{label} {progress.epoch}/{progress.epochs}"
        self.bar.set_description(label, refresh=False)
        self.bar.update(int(progress.fraction * 1000) - self.bar.n)

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", val=f"{metrics['val_acc']:.3f}")

    def on_log(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from kdcore.pipeline import run

    try:
        spec = load_spec(Path(args.spec).read_text())
    except ValidationError as exc:
        print(f"invalid spec {args.spec}:\n{exc}", file=sys.stderr)
        return 2
    bar = ProgressBar()
    try:
        results = run(spec, Path(args.out), bar, cache_dir=args.cache_dir, device=args.device)
    except KDError as exc:
        bar.close()
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 1
    bar.close()
    print_summary(results)
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _stat(stats: dict | None, scale: float = 1.0) -> str:
    """'mean' or 'mean ± half-width' (95% interval), or '-' when absent."""
    if not stats or stats.get("mean") is None:
        return "-"
    text = f"{scale * stats['mean']:.4f}"
    if stats.get("ci_half_width") is not None:
        text += f" ± {scale * stats['ci_half_width']:.4f}"
    return text


def print_summary(results: dict) -> None:
    """Per model: clean and corrupted accuracy (mean ± 95% half-width over seeds) and parameters."""
    seeds = results.get("seeds", [])
    print(f"seeds {seeds}; exported seed {results.get('exported_seed')}"
          + ("; ± is the 95% interval over seeds" if len(seeds) > 1 else ""))
    for name in ("teacher", "student_baseline", "student_kd"):
        if name in results.get("summary", {}):
            stats = results["summary"][name]
            print(f"{name:17s} clean {_stat(stats.get('clean_acc')):17s} corrupted "
                  f"{_stat(stats.get('corruption_acc')):17s} params {results[name]['params']:,}")
    for metric, diff in results.get("kd_vs_baseline", {}).get("paired", {}).items():
        p_value = diff.get("p_value")
        print(f"kd - baseline {metric:14s} {_stat(diff)}" + (f"  p={p_value:.3g}" if p_value is not None else ""))


def cmd_corruptions_grid(args: argparse.Namespace) -> int:
    from kdcore.robustness.grid import grid_from_dataset_spec

    grid_from_dataset_spec(Path(args.dataset), Path(args.out), index=args.index, cache_dir=args.cache_dir)
    print(args.out)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    run_parser = subparsers.add_parser("run", help="run a job spec locally, no service needed")
    run_parser.add_argument("spec", help="job spec JSON file")
    run_parser.add_argument("--out", required=True, help="output folder (run again to resume)")
    run_parser.add_argument("--cache-dir", type=Path, default=None, help="default: KD_CACHE_DIR or ~/.cache/kd")
    run_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    run_parser.set_defaults(func=cmd_run)

    grid = subparsers.add_parser("corruptions-grid", help="render one image under every corruption")
    grid.add_argument("--dataset", required=True, help="JSON file: a job spec or a dataset spec")
    grid.add_argument("--out", required=True, help="PNG file to write")
    grid.add_argument("--index", type=int, default=0, help="which test image")
    grid.add_argument("--cache-dir", type=Path, default=None)
    grid.set_defaults(func=cmd_corruptions_grid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdcore")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
