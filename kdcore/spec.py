"""The job spec: one pydantic schema shared by the API, the worker and kdcore.

This module imports no torch, so the API can validate specs on the request path. The registries
in kdcore.models, kdcore.distill and kdcore.robustness hold the constructors; the names below are
the public vocabulary and a test keeps the two in step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATASET_SOURCES = (
    "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "digits", "imagefolder", "upload",
)
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
MAX_PATH_LENGTH = 4096


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "temprature" must not be silently ignored. NaN/Infinity
    # (which Python's JSON parser accepts) are errors too: no float field means anything with them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetSpec(_Strict):
    source: DatasetSource
    root: str | None = Field(None, max_length=MAX_PATH_LENGTH, description="torchvision root or ImageFolder "
                             "path (`kd run` only: the service refuses server paths)")
    download: bool = Field(False, description="let torchvision download the data set into root")
    dataset_id: str | None = Field(None, max_length=64, description="id from POST /v1/datasets (source 'upload')")
    val_fraction: float = Field(0.1, gt=0.0, le=0.5, description="share of train held out for selection")
    subset: int | None = Field(None, ge=10, le=2**31 - 1, description="use a seeded random subset of N training "
                               "images")
    test_subset: int | None = Field(None, ge=10, le=2**31 - 1, description="use the first N test images (smoke runs)")
    image_size: int | None = Field(
        None, ge=8, le=512, description="resize images to this square size (default: as stored)"
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
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] | None = Field(
        None, max_length=100, description="multistep epochs; default 5/8, 3/4 and 7/8 of epochs (150/180/210 of 240)"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="multistep decay factor")
    warmup_epochs: int = Field(0, ge=0, le=5000, description="linear learning-rate warm-up")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: Literal["standard", "augmix", "none"] = "standard"
    augmix_jsd: bool = Field(False, description="add AugMix's Jensen-Shannon consistency loss")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    compile: bool = Field(
        False, description="torch.compile the teacher (frozen) and the student; pays off for long runs: "
        "compiling takes tens of seconds"
    )

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


class DistillSpec(_Strict):
    method: DistillMethod = "kd"
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="kd/kd_ls: weight of the distillation term")
    dkd_alpha: float = Field(1.0, ge=0.0, description="dkd: weight of target-class KD (TCKD)")
    dkd_beta: float = Field(8.0, ge=0.0, description="dkd: weight of non-target-class KD (NCKD)")
    warmup_epochs: int = Field(20, ge=0, description="dkd: epochs over which the KD terms ramp up")
    hint_stage: int = Field(2, ge=0, description="fitnet: which feature stage gives the hint (0 = first)")
    feature_weight: float = Field(
        100.0, ge=0.0, description="fitnet (default 100) / at (use ~1000) weight of the feature loss"
    )
    at_p: float = Field(2.0, gt=0.0, description="at: power applied to activations")


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
    max_images: int | None = Field(None, ge=1, le=2**31 - 1, description="evaluate corruptions on the first N "
                                   "test images")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the generated corruptions")
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


def load_spec(text: str) -> JobSpec:
    """Parse a JSON job spec (raises pydantic.ValidationError naming the field)."""
    return JobSpec.model_validate_json(text)
