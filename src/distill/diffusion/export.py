"""Save and load a trained denoiser: weights + `distill.json` in one directory.

This is the `student/` directory of every run, and what a later run loads when it names
the run as its teacher. A backbone that is a diffusers model is saved with diffusers'
`save_pretrained`, so `UNet2DModel.from_pretrained(run/student)` loads it directly, and a
`scheduler_config.json` is written where a diffusers scheduler reproduces the sampler:

    student/
      distill.json                          schedule, prediction, shape, classes, steps
      model.safetensors                     (mlp and other plain torch backbones)
      config.json                           (diffusers backbones: diffusers' own config)
      diffusion_pytorch_model.safetensors   (diffusers backbones)
      scheduler_config.json                 (flow/velocity Euler and vp-discrete eps/x0 DDIM,
                                             at the default time_scale 1000 only)
      time_gap.safetensors                  (two-time UNets: the embedding of t - s; the UNet
                                             alone is the s = t flow model)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from distill.diffusion.denoiser import Denoiser
from distill.errors import CheckpointError
from distill.export_dir import META_FILE, load_weights_into, read_meta_json, staged_directory
from distill.models.image import TRAIN_TIMESTEPS, DiffusersNet
from distill.registry import MODELS

FORMAT = "distill.denoiser/v2"
LEGACY_FORMAT = "distill.denoiser/v1"  # points only: config.json with "dim"
DIFFUSERS_FORMAT = "diffusers"  # the metadata of a diffusers folder loaded as a teacher
PLAIN_WEIGHTS = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TIME_GAP_WEIGHTS = "time_gap.safetensors"


def diffusers_scheduler_config(denoiser: Denoiser, sampler: str) -> dict[str, Any] | None:
    """A diffusers scheduler config that samples this denoiser as our `sampler` does, or None
    when no diffusers scheduler matches its schedule, prediction type and sampler. (Pass
    `sigmas=` as in distill.json's `scheduler_sigmas` to get our uniform time grid.)"""
    if getattr(denoiser.net, "time_scale", TRAIN_TIMESTEPS) != TRAIN_TIMESTEPS:
        return None  # the network takes time_scale * t; diffusers' schedulers pass 1000 t
    schedule, prediction = denoiser.schedule.name, denoiser.prediction
    flow_euler = sampler == "euler" or (sampler == "ddim" and schedule == "flow")
    if schedule == "flow" and prediction == "velocity" and denoiser.preconditioning == "none" \
            and flow_euler:
        return {"_class_name": "FlowMatchEulerDiscreteScheduler",
                "num_train_timesteps": TRAIN_TIMESTEPS, "shift": 1.0}
    # diffusers' v_prediction is alpha eps - sigma x0, not our dx/dt, so only eps and x0 match
    if schedule == "vp-discrete" and prediction in ("eps", "x0") and sampler == "ddim" \
            and denoiser.preconditioning == "none":
        return {"_class_name": "DDIMScheduler", "num_train_timesteps": TRAIN_TIMESTEPS,
                "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
                "prediction_type": "epsilon" if prediction == "eps" else "sample",
                "timestep_spacing": "trailing", "set_alpha_to_one": True, "clip_sample": False}
    return None


def schedule_name_is_flow(denoiser: Denoiser) -> bool:
    return denoiser.schedule.name == "flow"


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2))


def _write_denoiser(staging: Path, denoiser: Denoiser, model_cfg: Any, shape: tuple[int, ...],
                    meta: dict[str, Any]) -> None:
    net = denoiser.net
    if isinstance(net, DiffusersNet):
        net.model.save_pretrained(staging, safe_serialization=True)
        weights = DIFFUSERS_WEIGHTS
        if net.gap_embedding is not None:
            gap = {k: v.detach().contiguous().cpu() for k, v in net.gap_embedding.mlp.state_dict().items()}
            save_file(gap, staging / TIME_GAP_WEIGHTS)
        scheduler = diffusers_scheduler_config(denoiser, meta.get("sampler", "euler"))
        if scheduler is not None:
            _write_json(staging / "scheduler_config.json", scheduler)
            if meta.get("steps") and schedule_name_is_flow(denoiser):  # for set_timesteps(sigmas=)
                meta["scheduler_sigmas"] = {str(n): [1 - i / n for i in range(n)] for n in meta["steps"]}
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        save_file(state, staging / PLAIN_WEIGHTS)
        weights = PLAIN_WEIGHTS
    _write_json(staging / META_FILE, {
        "format": FORMAT, "model": model_cfg.model_dump(mode="json"), "shape": list(shape),
        "num_classes": denoiser.num_classes, "schedule": denoiser.schedule.name,
        "prediction": denoiser.prediction, "preconditioning": denoiser.preconditioning,
        "weights": weights, **meta})


def save_denoiser(directory: Path, denoiser: Denoiser, model_cfg: Any, shape: tuple[int, ...],
                  **meta: Any) -> Path:
    """Write the export into a temporary sibling directory, then swap it into place, so a
    crash never leaves a half-written student."""
    with staged_directory(directory) as staging:
        _write_denoiser(staging, denoiser, model_cfg, shape, meta)
    return Path(directory)


def read_export_config(directory: Path) -> dict[str, Any]:
    """The export's metadata (distill.json; older point exports kept it in config.json)."""
    directory = Path(directory)
    path = directory / META_FILE
    legacy = directory / "config.json"
    if not path.is_file() and legacy.is_file() and '"distill.denoiser/v1"' in legacy.read_text(errors="replace"):
        path = legacy
    config = read_meta_json(path)
    if config.get("format") == LEGACY_FORMAT:
        config.update(shape=[config.pop("dim")], num_classes=None, preconditioning="none",
                      weights=PLAIN_WEIGHTS)
    elif config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distill denoiser export (format {config.get('format')!r})")
    return config


def load_denoiser(directory: Path) -> tuple[Denoiser, dict[str, Any]]:
    """The exported denoiser (eval mode, frozen) and its metadata."""
    directory = Path(directory)
    config = read_export_config(directory)
    model_cfg = MODELS.get(config["model"]["name"]).model_validate(config["model"])
    denoiser = model_cfg.make_denoiser(tuple(config["shape"]), config["num_classes"])
    net = denoiser.net
    fix = "re-run `distill eval` on its run or retrain"
    load_weights_into(net.model if isinstance(net, DiffusersNet) else net, directory / config["weights"],
                      META_FILE, fix)
    if isinstance(net, DiffusersNet) and net.gap_embedding is not None:
        load_weights_into(net.gap_embedding.mlp, directory / TIME_GAP_WEIGHTS, META_FILE, fix)
    return freeze(denoiser), config


DIFFUSERS_CLASSES = ("UNet2DModel", "DiTTransformer2DModel")


def schedule_from_scheduler_config(config: dict[str, Any]) -> tuple[str, str] | None:
    """(schedule, prediction) that a diffusers scheduler config describes, when it is one
    this library reproduces exactly (the inverse of `diffusers_scheduler_config`)."""
    name = config.get("_class_name", "")
    if name.startswith("FlowMatch") and float(config.get("shift", 1.0)) == 1.0 \
            and not config.get("use_dynamic_shifting"):
        return "flow", "velocity"
    ddpm_like = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler")
    if name in ddpm_like and config.get("beta_schedule", "linear") == "linear" \
            and int(config.get("num_train_timesteps", 1000)) == TRAIN_TIMESTEPS \
            and float(config.get("beta_start", 1e-4)) == 1e-4 and float(config.get("beta_end", 0.02)) == 0.02:
        prediction = {"epsilon": "eps", "sample": "x0"}.get(config.get("prediction_type", "epsilon"))
        return ("vp-discrete", prediction) if prediction else None
    return None


def load_diffusers_denoiser(directory: Path, schedule: str | None = None,
                            prediction: str | None = None,
                            num_classes: int | None = None) -> tuple[Denoiser, dict[str, Any]]:
    """A diffusers `UNet2DModel` or `DiTTransformer2DModel` saved with `save_pretrained`
    (config.json + weights) as a frozen denoiser. Its schedule and prediction type come from
    the arguments, else from a `scheduler_config.json` beside it (or in `../scheduler/`).
    A class-conditional model's last class embedding is taken as the null class of CFG,
    unless `num_classes` says otherwise. Nothing is downloaded."""
    import diffusers

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} holds no diffusers model (missing config.json); point "
                              "at the folder a model was saved to with save_pretrained (e.g. a "
                              "pipeline's unet/ folder)")
    try:
        model_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}") from None
    class_name = model_config.get("_class_name")
    if class_name not in DIFFUSERS_CLASSES:
        raise CheckpointError(f"{config_path} describes a {class_name!r}; diffusers teachers can be "
                              f"{' or '.join(DIFFUSERS_CLASSES)}")
    if schedule is None or prediction is None:
        for candidate in (directory / "scheduler_config.json",
                          directory.parent / "scheduler" / "scheduler_config.json"):
            if candidate.is_file():
                try:
                    scheduler_config = json.loads(candidate.read_text())
                except json.JSONDecodeError as err:
                    raise CheckpointError(f"{candidate} is not valid JSON: {err}") from None
                found = schedule_from_scheduler_config(scheduler_config)
                if found is not None:
                    schedule, prediction = schedule or found[0], prediction or found[1]
                break
    if schedule is None or prediction is None:
        raise CheckpointError(
            f"{directory}: cannot tell the model's schedule and prediction type (no scheduler "
            "config this library reproduces); set teacher.schedule and teacher.prediction, e.g. "
            "schedule: vp-discrete, prediction: eps for a DDPM model")
    try:
        model = getattr(diffusers, class_name).from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{directory}: diffusers could not load the {class_name} ({err})") from None
    if class_name == "DiTTransformer2DModel":  # diffusers' DiT null label is index num_embeds_ada_norm
        embeds = model.config.get("num_embeds_ada_norm")
        default_classes = embeds if embeds and embeds > 1 else None
    else:  # a UNet's class table: K classes + our null class K
        embeds = model.config.get("num_class_embeds")
        default_classes = embeds - 1 if embeds else None
    if model.config.get("out_channels", model.config.in_channels) != model.config.in_channels:
        raise CheckpointError(f"{directory}: the model outputs {model.config.out_channels} channels for "
                              f"{model.config.in_channels} input channels (a learned-variance model); "
                              "only models predicting one tensor of the input's shape are supported")
    classes = num_classes if num_classes is not None else default_classes
    net = DiffusersNet(model, schedule, conditional=bool(classes))
    denoiser = freeze(Denoiser(net, schedule, prediction, num_classes=classes))
    size = model.config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    meta = {"format": DIFFUSERS_FORMAT, "model": {"name": f"diffusers:{class_name}"},
            "shape": [model.config.in_channels, size, size], "num_classes": classes,
            "schedule": schedule, "prediction": prediction, "preconditioning": "none",
            "role": "teacher", "steps": None, "sampler": "euler"}
    return denoiser, meta


def freeze(module: nn.Module) -> Any:
    return module.eval().requires_grad_(False)
