"""Run configuration: pydantic models, YAML loading and dotted command-line overrides.

A run is one YAML file with the sections `name, data, teacher, student, method, train,
eval`. `data`, `teacher`, `student` and `method` are unions discriminated by `name` and
built from the registries, so each method's options are a typed model living next to the
method. Everything is validated before heavy work starts; errors name the key path, the
bad value and the allowed values (closest match suggested).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from distill.errors import ConfigError
from distill.registry import DATASETS, METHODS, MODELS, TEACHERS, Registry


class Section(BaseModel):
    """Base for every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class TrainConfig(Section):
    """Optimisation and bookkeeping shared by every method."""

    steps: int = Field(1000, gt=0, description="optimizer steps (of the main parameter group)")
    batch_size: int = Field(512, gt=0, description="global batch: all processes and accumulation")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    clip_grad_norm: float | None = Field(1.0, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1, description=(
        "EMA of the student, evaluated and exported in its place; None: off. The decay at the "
        "n-th student update is min(ema_decay, (1 + n) / (10 + n)) (the warm-up of diffusers' "
        "EMAModel), so 0.995 is reached after 1,790 updates and 0.999 after 8,990"))
    checkpoint_every: int = Field(500, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(50, gt=0)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    progress: bool = True


class AssistedEvalConfig(Section):
    """LM runs: the student drafts for its teacher in transformers' assisted generation (greedy,
    `gamma` drafted tokens per teacher call) on the first `prompt_tokens` tokens of held-out
    blocks; measured acceptance and tokens per teacher call join the student's row."""

    prompts: int = Field(8, gt=0, description="held-out blocks used as prompts")
    prompt_tokens: int = Field(16, gt=0, description="tokens of each block kept as its prompt")
    gamma: int = Field(4, gt=0, description="tokens the draft proposes per teacher call")
    new_tokens: int = Field(32, gt=0, description="tokens generated per prompt")


class EvalConfig(Section):
    """Side-by-side evaluation of teacher and student on the same noise."""

    nfe: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    n_samples: int = Field(40000, gt=1, description=(
        "samples per evaluated row (points: also the held-out reference's size, at most the "
        "test split's); 40,000 resolves the teacher's 16 from its 64 steps on every toy set"))
    mmd_bandwidths: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.05, 1.0], min_length=1, description=(
            "points: RBF bandwidths of the primary metric's kernel, in data units (the toy "
            "sets span [-2, 2]²; rescale them for data of another extent)"))
    seed: int = 1234
    sampler: Literal["euler", "heun", "ddim", "dpm++2m", "multistep"] = Field(
        "euler", description="the teacher's sampler (students use their method's own)")
    guidance: float = Field(1.0, ge=0, description="the teacher's CFG scale (1: none)")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM stochasticity for the teacher (0: ODE)")
    timing_repeats: int = Field(3, ge=0, description="best-of-N timing of each sampler; 0: do not time (quick evaluations)")
    timing_samples: int = Field(10000, gt=0, description="samples per timed batch")
    plot_points: int = Field(2000, gt=0, description="samples kept for plots (points or images)")
    straightness: bool = Field(False, description=(
        "also measure each model's path straightness (Liu et al. 2023) on its 64-step Euler path"))
    assisted: AssistedEvalConfig | None = Field(None, description=(
        "LM runs: also measure the student as a draft with transformers' assisted generation"))


# Keys whose change never makes a checkpoint invalid: a run may be resumed with them changed.
RESUME_SAFE_KEYS = ("name", "eval", "train.steps", "train.checkpoint_every",
                    "train.keep_checkpoints", "train.log_every", "train.progress")
# Keys that do not change what a teacher recipe trains (left out of its cache hash).
COSMETIC_KEYS = ("name", "eval", "train.checkpoint_every", "train.keep_checkpoints",
                 "train.log_every", "train.progress")


def config_class(obj: Any) -> type[BaseModel]:
    """The pydantic config model of a registry entry (a class with `.Config`, or the model itself)."""
    return getattr(obj, "Config", obj)


def _union(registry: Registry[Any]) -> Any:
    classes = tuple(config_class(entry.obj) for entry in registry)
    if not classes:
        raise ConfigError(f"no {registry.kind} is registered")
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


@cache
def _run_config_model(signature: tuple[tuple[str, ...], ...]) -> type[BaseModel]:
    del signature  # only the cache key: the registries' contents
    return create_model(
        "RunConfig",
        __base__=Section,
        name=(str, Field(..., min_length=1)),
        data=(_union(DATASETS), ...),
        teacher=(_union(TEACHERS) | None, None),
        student=(_union(MODELS), ...),
        method=(_union(METHODS), ...),
        train=(TrainConfig, Field(default_factory=TrainConfig)),
        eval=(EvalConfig, Field(default_factory=EvalConfig)),
    )


def run_config_model() -> type[BaseModel]:
    """The RunConfig pydantic model for everything registered (the registries load the
    built-in components on first use)."""
    signature = tuple(tuple(r.names()) for r in (DATASETS, TEACHERS, MODELS, METHODS))
    return _run_config_model(signature)


# ----------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path` (yaml.safe_load), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with keys name, data, student, method, ...")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.steps=200` -> (["train", "steps"], 200); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.path=value, e.g. train.steps=200")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return [part for part in key.strip().split(".")], parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each dotted `key=value` override set (nested dicts made as needed)."""
    result = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is {child!r}, not a section")
            node = child
        node[keys[-1]] = value
    return result


def validate_config(raw: dict[str, Any], source: str = "config") -> BaseModel:
    """Validate a raw config mapping; raise ConfigError listing every problem."""
    model = run_config_model()
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(model, e) for e in err.errors()]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source} is invalid:\n{lines}") from None


# Paths in a config are relative to the config file when they exist there.
PATH_KEYS = (("teacher", "path"), ("teacher", "config"), ("data", "path"), ("student", "init_from"),
             ("method", "cache_dir"))
TEACHER_LISTS = (("method", "teachers"),)  # lists of teacher sections (ensembles)


def _resolve(node: dict[str, Any], key: str, base_dir: Path) -> None:
    if isinstance(node.get(key), str):
        path = Path(node[key]).expanduser()
        if not path.is_absolute():
            path = base_dir / path if (base_dir / path).exists() else Path.cwd() / path
        node[key] = str(path.resolve())


def resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make the known path keys absolute: relative to `base_dir` if the file is there, else CWD."""
    for section, key in PATH_KEYS:
        if isinstance(raw.get(section), dict):
            _resolve(raw[section], key, base_dir)
    for section, key in TEACHER_LISTS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), list):
            for entry in node[key]:
                if isinstance(entry, dict):
                    _resolve(entry, "path", base_dir)
                    _resolve(entry, "config", base_dir)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read, override and validate a run config. Returns the RunConfig model instance."""
    raw = apply_overrides(read_yaml(Path(path)), list(overrides or []))
    raw = resolve_paths(raw, Path(path).resolve().parent)
    return validate_config(raw, source=str(path))


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML text (what is written to run_dir/config.yaml)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(cfg: BaseModel, ignore: tuple[str, ...] = COSMETIC_KEYS) -> str:
    """A stable hash of the config without the `ignore`d dotted keys."""
    data = without_keys(cfg.model_dump(mode="json"), ignore)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def without_keys(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for dotted in keys:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings, as 'key: old -> new'."""
    out = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


# ----------------------------------------------------------------------------- errors


def _describe(model: type[BaseModel], error: dict[str, Any]) -> str:
    """One readable line for one pydantic error: key path, bad value, allowed values."""
    loc = list(error["loc"])
    kind = error["type"]
    path, parent = _walk(model, loc)
    where = ".".join(path) or "<top level>"
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _field_names(parent)
        hint = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.5)
        suggestion = f" Did you mean {'.'.join(path[:-1] + [hint[0]])!r}?" if hint else ""
        return f"{where}: unknown key.{suggestion} Allowed keys here: {', '.join(allowed)}."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        registry = _REGISTRY_OF.get(path[0]) if path else None
        names = registry.names() if registry else []
        if kind == "union_tag_not_found":
            return f"{where}.name is missing. Choose one of: {', '.join(names)}."
        tag = error.get("ctx", {}).get("tag", value)
        hint = difflib.get_close_matches(str(tag), names, n=1, cutoff=0.5)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        kind_name = registry.kind if registry else "name"
        return (f"{where}.name: unknown {kind_name} {tag!r}.{suggestion} "
                f"Registered: {', '.join(names)}.")
    if kind == "missing":
        return f"{where}: required key is missing."
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{where}: {error['msg']}{shown}."


_REGISTRY_OF = {"method": METHODS, "data": DATASETS, "student": MODELS, "teacher": TEACHERS}


def _walk(model: type[BaseModel], loc: list[Any]) -> tuple[list[str], type[BaseModel] | None]:
    """Follow a pydantic error location through the models, dropping union tags.

    Returns the user-facing key path and the model that owns its last key.
    """
    path: list[str] = []
    current: Any = model
    owner: type[BaseModel] | None = model
    for part in loc:
        if _is_model(current):
            owner = current
            field = current.model_fields.get(str(part))
            path.append(str(part))
            current = field.annotation if field is not None else None
            continue
        options = _union_members(current)
        chosen = next((m for m in options if _tag_of(m) == part), None)
        if chosen is not None:  # a discriminator tag in the location: not a user key
            current = chosen
            continue
        path.append(str(part))
        current = None
    if _is_model(current):
        owner = current
    return path, owner


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _union_members(annotation: Any) -> list[Any]:
    if annotation is None:
        return []
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _union_members(typing.get_args(annotation)[0])
    if origin is Union or isinstance(annotation, types.UnionType):
        members = []
        for arg in typing.get_args(annotation):
            members += _union_members(arg) if not _is_model(arg) else [arg]
        return members
    return [annotation] if _is_model(annotation) else []


def _tag_of(model: Any) -> str | None:
    field = model.model_fields.get("name") if _is_model(model) else None
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else None


def _field_names(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []
