"""`kd run` and `kd corruptions-grid`: kdcore's own commands, run in this process."""

from kdcore.cli import add_commands

__all__ = ["add_commands"]
