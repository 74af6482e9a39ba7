"""Where the tests find the repository and the real data beside it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# The CIFAR-10 JPEG tarball in the workspace's shared folder (tests that need it skip without it).
CIFAR_TARBALL = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
