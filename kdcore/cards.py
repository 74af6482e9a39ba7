"""Model cards and the facts of a job's data they must agree with; no torch (the API checks on the request path).

A kd weights file (.safetensors) carries its ModelCard in the header's `__metadata__`: the classes in
output order, the input channels and size, and the normalisation the model was trained with. A
teacher whose card disagrees with the job's data would be scored (and distilled from) on the wrong
terms without any error, so kdcore.run refuses it (or, for the normalisation only, feeds it its own
statistics; see kdcore.given_teacher) and the API refuses it at submit:

    teacher_file_differences(path, dataset_spec, classes=upload_classes, image_size=upload_size)

returns the differences as readable lines (empty: nothing to object to; also for a file without a
card, which cannot be checked). Facts that are unknown without loading the data (an image folder's
classes, any data set's mean and std before its split is made) are left out of the comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kdcore.errors import WeightsError
from kdcore.spec import DatasetSpec

CARD_FORMAT = "kd-service/1"
# Cards store floats as JSON, which round-trips exactly; this only absorbs float32 round-offs.
NORMALIZATION_TOLERANCE = 1e-6
SHOWN_NAMES = 12  # class lists longer than this are shortened in messages


@dataclass(frozen=True)
class ModelCard:
    """What a reader of the weights file needs to rebuild and feed the model."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_metadata(self) -> dict[str, str]:
        # safetensors metadata is str -> str
        return {
            "format": CARD_FORMAT, "arch": self.arch, "num_classes": str(self.num_classes),
            "in_channels": str(self.in_channels), "image_size": str(self.image_size),
            "classes": json.dumps(self.classes), "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "input": "NCHW float32: (pixel/255 - mean) / std per channel",
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelCard:
        return cls(
            arch=meta["arch"], num_classes=int(meta["num_classes"]), in_channels=int(meta["in_channels"]),
            image_size=int(meta["image_size"]), classes=json.loads(meta["classes"]),
            mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])),
        )


@dataclass(frozen=True)
class SourceFacts:
    classes: tuple[str, ...]  # in label order, as the loaders return them
    in_channels: int
    image_size: int  # as stored (dataset.image_size resizes)


DIGIT_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
                 "8 - eight", "9 - nine")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# The built-in sources; imagefolder and upload are described by their files (see data_facts).
BUILTIN_SOURCES: dict[str, SourceFacts] = {
    "cifar10": SourceFacts(CIFAR10_CLASSES, 3, 32),
    "cifar100": SourceFacts(CIFAR100_CLASSES, 3, 32),
    "mnist": SourceFacts(MNIST_CLASSES, 1, 28),
    "fashion_mnist": SourceFacts(FASHION_MNIST_CLASSES, 1, 28),
    "svhn": SourceFacts(DIGIT_CLASSES, 3, 32),
    "digits": SourceFacts(DIGIT_CLASSES, 1, 8),
}


@dataclass(frozen=True)
class DataFacts:
    """What a model fed this data must agree with; None = not known here (not compared)."""

    classes: list[str] | None = None
    in_channels: int | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def data_facts(
    dataset: DatasetSpec, *, classes: list[str] | None = None, in_channels: int | None = None,
    image_size: int | None = None,
) -> DataFacts:
    """The data's facts without loading it: the built-in sources from BUILTIN_SOURCES; an upload or image
    folder from what the caller knows of it (the upload's class list and image size). dataset.image_size,
    when set, is the size the models see."""
    known = BUILTIN_SOURCES.get(dataset.source)
    if known is not None:
        classes, in_channels, image_size = list(known.classes), known.in_channels, known.image_size
    return DataFacts(classes=classes, in_channels=in_channels, image_size=dataset.image_size or image_size)


def read_card(path: str | Path) -> ModelCard | None:
    """kd's model card from a .safetensors header (no tensor is read, no torch); None when the file has
    none (a plain state_dict). Raises WeightsError when the file is missing, unreadable or its card broken."""
    from safetensors import safe_open  # reads and validates the header only

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"teacher weights not found: {path.name}", code="weights_not_found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise WeightsError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != CARD_FORMAT:
        return None
    try:
        return ModelCard.from_metadata(meta)
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path.name}: its model card is incomplete or malformed ({exc!r})") from exc


def _names(classes: list[str]) -> str:
    shown = ", ".join(repr(c) for c in classes[:SHOWN_NAMES])
    return f"[{shown}]" if len(classes) <= SHOWN_NAMES else f"[{shown}, ...] ({len(classes)} names)"


def _stats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def card_mismatches(card: ModelCard, facts: DataFacts) -> dict[str, str]:
    """{"classes" | "in_channels" | "image_size" | "normalization": what differs, in words}."""
    found: dict[str, str] = {}
    if facts.classes is not None and list(card.classes) != list(facts.classes):
        line = f"classes: teacher has {_names(card.classes)}, data has {_names(facts.classes)}"
        if sorted(card.classes) == sorted(facts.classes):
            first = next(i for i, (a, b) in enumerate(zip(card.classes, facts.classes, strict=True)) if a != b)
            line += (f" (the same names in another order: output {first} is {card.classes[first]!r} for the "
                     f"teacher, {facts.classes[first]!r} in the data)")
        found["classes"] = line
    if facts.in_channels is not None and card.in_channels != facts.in_channels:
        found["in_channels"] = f"channels: teacher expects {card.in_channels}, data has {facts.in_channels}"
    if facts.image_size is not None and card.image_size != facts.image_size:
        found["image_size"] = (f"image size: teacher expects {card.image_size}x{card.image_size}, data has "
                               f"{facts.image_size}x{facts.image_size}")
    if facts.mean is not None and facts.std is not None and not (
        _close(card.mean, facts.mean) and _close(card.std, facts.std)
    ):
        found["normalization"] = (
            f"normalization: teacher expects mean {_stats(card.mean)} std {_stats(card.std)}, data has mean "
            f"{_stats(facts.mean)} std {_stats(facts.std)}"
        )
    return found


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= NORMALIZATION_TOLERANCE for x, y in zip(a, b, strict=True))


def card_differences(card: ModelCard, facts: DataFacts) -> list[str]:
    """Every way the card disagrees with the data, one readable line each (empty: they agree)."""
    return list(card_mismatches(card, facts).values())


def teacher_file_differences(
    path: str | Path, dataset: DatasetSpec, *, classes: list[str] | None = None,
    in_channels: int | None = None, image_size: int | None = None,
) -> list[str]:
    """The submit-time check of teacher.weights against dataset (torch-free). classes, in_channels and
    image_size describe an upload (or image folder) when the caller knows them; the built-in sources
    need nothing. Empty when the file has no card (nothing to check) or agrees."""
    card = read_card(path)
    if card is None:
        return []
    return card_differences(card, data_facts(dataset, classes=classes, in_channels=in_channels,
                                             image_size=image_size))
