"""The job spec: one pydantic schema shared by the API, the worker and kdcore.

This module imports no torch, so the API can validate specs on the request path. The registries
in kdcore.models, kdcore.distill and kdcore.robustness hold the constructors; the names below are
the public vocabulary and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

DATASET_SOURCES = (
    "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "digits", "imagefolder", "upload",
)
# train.flip's default per source: a horizontal flip changes what a digit means (and SVHN's house
# numbers are digits), so it is off for them; objects, clothes and a user's own images keep it.
FLIP_BY_SOURCE = {
    "cifar10": True, "cifar100": True, "mnist": False, "fashion_mnist": True, "svhn": False, "digits": False,
    "imagefolder": True, "upload": True,
}


def resolve_flip(flip: bool | None, source: str) -> bool:
    """train.flip as set, or the data source's default when it is None."""
    return FLIP_BY_SOURCE[source] if flip is None else flip


# The sources the official CIFAR-10-C / CIFAR-100-C arrays were made from (32x32, the CIFAR test order).
OFFICIAL_CORRUPTION_SOURCES = ("cifar10", "cifar100")
CIFAR_ARCHS = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "wrn_28_10",
    "vgg8", "vgg11", "vgg13",
    "mobilenetv2", "shufflenetv2",
)
TORCHVISION_ARCHS = (
    "resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_y_400mf",
)
MODEL_ARCHS = CIFAR_ARCHS + TORCHVISION_ARCHS
DISTILL_METHODS = ("none", "kd", "dkd", "kd_ls", "fitnet", "at")
# Hendrycks & Dietterich (2019): the 15 benchmark corruptions, then the 4 held out for tuning.
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
HELDOUT_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = BENCHMARK_CORRUPTIONS + HELDOUT_CORRUPTIONS
EXPORT_FORMATS = ("safetensors", "onnx", "torchscript")

DatasetSource = Literal[DATASET_SOURCES]  # type: ignore[valid-type]
ModelArch = Literal[MODEL_ARCHS]  # type: ignore[valid-type]
DistillMethod = Literal[DISTILL_METHODS]  # type: ignore[valid-type]
CorruptionName = Literal[CORRUPTIONS]  # type: ignore[valid-type]
ExportFormat = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]
Severity = Annotated[int, Field(ge=1, le=5)]
# Seeds reach torch/numpy as 64-bit integers; a larger one would pass validation and crash the run.
MAX_SEED = 2**63 - 1
MAX_SEEDS = 10
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
MAX_PATH_LENGTH = 4096


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "temprature" must not be silently ignored. NaN/Infinity
    # (which Python's JSON parser accepts) are errors too: no float field means anything with them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class DatasetSpec(_Strict):
    source: DatasetSource
    root: str | None = Field(None, max_length=MAX_PATH_LENGTH, description="torchvision root or ImageFolder "
                             "path (`kd run` only: the service refuses server paths)")
    download: bool = Field(False, description="let torchvision download the data set into root")
    dataset_id: str | None = Field(None, max_length=64, description="id from POST /v1/datasets (source 'upload')")
    val_fraction: float = Field(0.1, gt=0.0, le=0.5, description="share of train held out for selection")
    subset: int | None = Field(None, ge=10, le=2**31 - 1, description="use a seeded random subset of N training "
                               "images")
    test_subset: int | None = Field(
        None, ge=10, le=2**31 - 1, description="evaluate on a class-balanced subset of N test images, drawn with "
        "the fixed seed 0 (the same images for every job; smoke runs)",
    )
    image_size: int | None = Field(
        None, ge=8, le=512, description="resize images to this square size (default: as stored)"
    )
    split_seed: Seed = Field(
        0, description="seeds the validation split and `subset`; not the training seed, so jobs that differ "
        "only in training seeds see the same data and share a cached teacher",
    )

    @model_validator(mode="after")
    def _source_needs(self) -> DatasetSpec:
        if self.source == "imagefolder" and not self.root:
            raise ValueError("dataset.root is required when dataset.source is 'imagefolder'")
        if self.source == "upload" and not self.dataset_id:
            raise ValueError("dataset.dataset_id is required when dataset.source is 'upload'")
        return self


class TrainRecipe(_Strict):
    epochs: int = Field(240, ge=1, le=5000)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = Field(
        False, description="sgd: Nesterov momentum; default plain momentum, as the KD benchmark recipe "
        "(mdistiller, RepDistiller) trains",
    )
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    decay_norm_and_bias: bool = Field(
        True, description="apply weight_decay to normalisation and bias parameters too (the KD benchmark "
        "recipe decays every parameter); false exempts every 1-D parameter",
    )
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] | None = Field(
        None, max_length=100, description="multistep epochs; default 5/8, 3/4 and 7/8 of epochs (150/180/210 of 240)"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="multistep decay factor")
    warmup_epochs: int = Field(0, ge=0, le=5000, description="linear learning-rate warm-up")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: Literal["standard", "augmix", "none"] = "standard"
    flip: bool | None = Field(
        None, description="random horizontal flip in the standard and augmix augmentations; default (null): "
        "the data set's default, off for digits, mnist and svhn, on for the others",
    )
    augmix_jsd: bool = Field(False, description="add AugMix's Jensen-Shannon consistency loss")
    seed: Seed = Field(
        0, description="training seed (initialisation, data order, augmentation); JobSpec.seeds lists several"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    compile: bool = Field(
        False, description="torch.compile the teacher (frozen) and the student; pays off for long runs: "
        "compiling takes tens of seconds"
    )

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_sgd_momentum(cls, v: bool, info: ValidationInfo) -> bool:
        if v and (info.data.get("optimizer") != "sgd" or not info.data.get("momentum")):
            raise ValueError("train.nesterov needs optimizer 'sgd' and a momentum above 0")
        return v

    @model_validator(mode="after")
    def _fits_epochs(self) -> TrainRecipe:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError("train.warmup_epochs must be smaller than train.epochs")
        if self.milestones is not None and any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError("train.milestones must lie strictly between 0 and train.epochs")
        return self


class TeacherSpec(_Strict):
    # The "weights or train" rule below, stated in the JSON schema too (/openapi.json shows it).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["weights"], "properties": {"weights": {"type": "string"}}},
        {"required": ["train"], "properties": {"train": {"type": "object"}}},
    ]})

    arch: ModelArch
    weights: str | None = Field(None, max_length=MAX_PATH_LENGTH, description="model id from POST /v1/models (or, "
                                "for `kd run` only, a .safetensors path)")
    train: TrainRecipe | None = Field(None, description="recipe used when no weights are given")
    reuse: bool = Field(
        True, description="with a train recipe: load the teacher an earlier job trained on the same data with "
        "the same arch and recipe instead of training it again (false: always train)",
    )

    @model_validator(mode="after")
    def _weights_or_recipe(self) -> TeacherSpec:
        if self.weights is None and self.train is None:
            raise ValueError("teacher needs either 'weights' or a 'train' recipe")
        return self


class StudentSpec(_Strict):
    arch: ModelArch


@dataclass(frozen=True)
class RunShare:
    """A default that scales with the run: round(epochs * part / whole), half up, and at least 1."""

    part: int
    whole: int

    def __call__(self, epochs: int) -> int:
        return max(1, (epochs * self.part + self.whole // 2) // self.whole)

    def __str__(self) -> str:
        return f"round(epochs * {self.part} / {self.whole}), at least 1"


# Each method's own defaults: its paper's reference implementation (README: "Distillation methods" names
# the repository and file of each). A DistillSpec field left unset takes its method's value here; the
# keys of a method's entry are the fields that method uses. DKD's warm-up is the reference's 20 of 240
# epochs, scaled to the run, so a short run still ends at the full loss weight.
METHOD_DEFAULTS: dict[str, dict[str, float | int | RunShare]] = {
    "none": {"ce_weight": 1.0},
    "kd": {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0},
    "dkd": {"ce_weight": 1.0, "dkd_alpha": 1.0, "dkd_beta": 8.0, "temperature": 4.0,
            "warmup_epochs": RunShare(20, 240)},
    "kd_ls": {"ce_weight": 0.1, "kd_weight": 9.0, "temperature": 2.0},
    "fitnet": {"ce_weight": 1.0, "feature_weight": 100.0, "hint_stage": 1},
    "at": {"ce_weight": 1.0, "feature_weight": 1000.0, "at_p": 2.0},
}
ALPHA_METHODS = ("kd", "kd_ls")  # where distill.alpha is the shorthand for ce_weight / kd_weight


def _defaults(field: str) -> str:
    """The per-method defaults of a field, for its description (from METHOD_DEFAULTS)."""
    values = ", ".join(f"{m} {d[field]}" for m, d in METHOD_DEFAULTS.items() if field in d)
    return f"unset: the method's default ({values})"


class DistillSpec(_Strict):
    """Every field but method may be left unset (null): the method's own default applies (METHOD_DEFAULTS)."""

    method: DistillMethod = "kd"
    temperature: float | None = Field(
        None, gt=0.0, le=100.0, description=f"kd/kd_ls/dkd: softmax temperature T; {_defaults('temperature')}"
    )
    ce_weight: float | None = Field(
        None, ge=0.0, description=f"weight of the cross-entropy term; {_defaults('ce_weight')}"
    )
    kd_weight: float | None = Field(
        None, ge=0.0, description=f"kd/kd_ls: weight of the T^2-scaled KL term; {_defaults('kd_weight')}"
    )
    alpha: float | None = Field(
        None, ge=0.0, le=1.0, description="kd/kd_ls shorthand: ce_weight = 1 - alpha, kd_weight = alpha; "
        "not together with ce_weight or kd_weight",
    )
    dkd_alpha: float | None = Field(
        None, ge=0.0, description=f"dkd: weight of target-class KD (TCKD); {_defaults('dkd_alpha')}"
    )
    dkd_beta: float | None = Field(
        None, ge=0.0, description=f"dkd: weight of non-target-class KD (NCKD); {_defaults('dkd_beta')}"
    )
    warmup_epochs: int | None = Field(
        None, ge=0, description=f"dkd: epochs over which the KD terms ramp up linearly (0: no ramp); "
        f"{_defaults('warmup_epochs')}",
    )
    hint_stage: int | None = Field(
        None, ge=0, description="fitnet: 0-based index into the network's feature stages (the stem is not a "
        "stage; 1 is the middle stage of a CIFAR ResNet, the reference's hint layer 2, which counts the stem); "
        f"{_defaults('hint_stage')}",
    )
    feature_weight: float | None = Field(
        None, ge=0.0, description=f"fitnet/at: weight of the feature loss; {_defaults('feature_weight')}"
    )
    at_p: float | None = Field(
        None, gt=0.0, description=f"at: power applied to the activations; {_defaults('at_p')}"
    )

    @field_validator("alpha")
    @classmethod
    def _alpha_or_weights(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and (info.data.get("ce_weight") is not None or info.data.get("kd_weight") is not None):
            raise ValueError(
                "distill.alpha is the shorthand for ce_weight = 1 - alpha and kd_weight = alpha: give either "
                "alpha or ce_weight/kd_weight, not both"
            )
        return v

    def settings(self, epochs: int) -> dict[str, float | int]:
        """The values the method trains with, by field: the user's where set, else METHOD_DEFAULTS (a
        RunShare default resolved for a run of `epochs`). Only the method's own fields are returned."""
        given = self.model_dump(exclude_none=True, exclude={"method", "alpha"})
        if self.alpha is not None and self.method in ALPHA_METHODS:
            given.update(ce_weight=1.0 - self.alpha, kd_weight=self.alpha)
        resolved: dict[str, float | int] = {}
        for name, default in METHOD_DEFAULTS[self.method].items():
            value = given.get(name, default)
            resolved[name] = value(epochs) if isinstance(value, RunShare) else value
        return resolved


class EvaluateSpec(_Strict):
    corruptions: Literal["all", "none"] | Annotated[list[CorruptionName], Field(max_length=len(CORRUPTIONS))] = Field(
        "all", description="'all' = the 15 benchmark corruptions; or a list of names"
    )
    severities: list[Severity] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1, max_length=5)
    source: Literal["generated", "official"] = "generated"
    official_root: str | None = Field(
        None, max_length=MAX_PATH_LENGTH, description="folder with CIFAR-10-C/100-C .npy files (`kd run` only; "
        "default: <data folder>/CIFAR-10-C or CIFAR-100-C)",
    )
    max_images: int | None = Field(
        None, ge=1, le=2**31 - 1, description="evaluate corruptions on a class-balanced subset of N test images, "
        "drawn with the fixed seed 0 (the same images for every job and model)",
    )
    seed: Seed = Field(0, description="seed of the generated corruptions")
    batch_size: int | None = Field(
        None, ge=1, le=65536, description="images per inference batch; default 64 on CPU (measured twice as "
        "fast as 1000 there), 1000 on CUDA",
    )
    calibration: bool = True
    latency: bool = True

    @field_validator("severities")
    @classmethod
    def _unique_sorted(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("evaluate.severities must not repeat a severity")
        return sorted(v)

    @field_validator("corruptions")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("evaluate.corruptions must list at least one corruption (or be 'none')")
            if len(set(v)) != len(v):
                raise ValueError("evaluate.corruptions must not repeat a corruption")
        return v

    def corruption_names(self) -> list[str]:
        if self.corruptions == "all":
            return list(BENCHMARK_CORRUPTIONS)
        if self.corruptions == "none":
            return []
        return list(self.corruptions)


class JobSpec(_Strict):
    name: str = Field("job", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    dataset: DatasetSpec
    teacher: TeacherSpec
    student: StudentSpec
    distill: DistillSpec = Field(default_factory=DistillSpec)
    train: TrainRecipe = Field(default_factory=TrainRecipe, description="recipe for both students")
    # After `train`: its validator reads the validated recipe.
    seeds: list[Seed] | None = Field(
        None, min_length=1, max_length=MAX_SEEDS,
        description="training seeds: the students are trained once per seed and results give mean, spread and "
        "95% intervals over them; default [train.seed]. Give either this or train.seed",
    )
    baseline: bool = Field(True, description="also train the student without distillation")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    export: list[ExportFormat] = Field(default_factory=lambda: list(EXPORT_FORMATS), max_length=len(EXPORT_FORMATS))

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-kd",
                    "dataset": {"source": "digits"},
                    "teacher": {"arch": "resnet20", "train": {"epochs": 15, "batch_size": 64, "lr": 0.1}},
                    "student": {"arch": "resnet8"},
                    "distill": {"method": "kd", "temperature": 4.0, "alpha": 0.9},
                    "train": {"epochs": 15, "batch_size": 64, "lr": 0.1},
                    "evaluate": {"corruptions": "all", "severities": [1, 2, 3, 4, 5]},
                }
            ]
        },
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_and_alone(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if v is None:
            return v
        if len(set(v)) != len(v):
            raise ValueError("seeds must not repeat a seed")
        train = info.data.get("train")
        if train is not None and "seed" in train.model_fields_set:
            raise ValueError("seeds and train.seed were both given: list every training seed in seeds and "
                             "leave train.seed out")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A dumped spec must validate again (the API stores model_dump, the worker re-validates it): with
        # seeds, train.seed is left out, as a user may not give both.
        data = handler(self)
        if self.seeds is not None and isinstance(data.get("train"), dict):
            data["train"].pop("seed", None)
        return data

    def effective_seeds(self) -> list[int]:
        """The training seeds, in order: `seeds`, or [train.seed] when seeds is not given."""
        return list(self.seeds) if self.seeds is not None else [self.train.seed]

    @model_validator(mode="after")
    def _official_needs_cifar(self) -> JobSpec:
        if self.evaluate.source != "official":
            return self
        if self.dataset.source not in OFFICIAL_CORRUPTION_SOURCES:
            raise _field_error(
                ("evaluate", "source"), self.evaluate.source,
                f"evaluate.source 'official' (the CIFAR-10-C/100-C arrays) needs dataset.source cifar10 or "
                f"cifar100, not {self.dataset.source!r}; use evaluate.source 'generated' for other data",
            )
        if self.dataset.image_size not in (None, 32):
            raise _field_error(
                ("evaluate", "source"), self.evaluate.source,
                f"evaluate.source 'official' holds 32x32 images; dataset.image_size {self.dataset.image_size} "
                "would score the model on another size than it was trained on",
            )
        return self


def _field_error(loc: tuple[str, ...], value: object, message: str) -> ValidationError:
    """An error located at `loc` from a validator of the whole spec (pydantic adds the outer path)."""
    details = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
    return ValidationError.from_exception_data("JobSpec", [details])


def load_spec(text: str) -> JobSpec:
    """Parse a JSON job spec (raises pydantic.ValidationError naming the field)."""
    return JobSpec.model_validate_json(text)
