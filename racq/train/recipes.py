"""Check a recipe before a GPU run: a TrainConfig recipe (recipes/*.yaml) or an accelerate launch config
(recipes/accelerate/*.yaml), every key against the code that reads it.

    racq train check-recipe recipes/*.yaml recipes/accelerate/*.yaml

A TrainConfig recipe is loaded by racq.config.load_config (unknown keys name the file and the closest
valid key). An accelerate config is checked against accelerate itself: top-level keys against its
ClusterConfig dataclass, `distributed_type` / `mixed_precision` / `compute_environment` against its
enums, and the keys of each nested section (deepspeed_config, fsdp_config, ...) against the options of
`accelerate launch`, which is where `accelerate launch` copies them (commands/launch.py,
_validate_launch_command). That last check matters most: accelerate copies an unknown key inside
deepspeed_config onto its arguments without a word, so a typo there is silently ignored on the GPU box.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from racq.config import TrainConfig, load_config

# Nested sections of an accelerate config -> (the `accelerate launch` argument group their keys become
# options of, the prefix accelerate adds to a key that lacks it). From accelerate 1.15's
# commands/launch.py: fsdp_config.x -> --fsdp_x, fp8_config.x -> --fp8_x, dynamo_config.x -> --dynamo_x.
SECTIONS = {"deepspeed_config": ("DeepSpeed Arguments", ""), "fsdp_config": ("FSDP Arguments", "fsdp_"),
            "fp8_config": ("FP8 Arguments", "fp8_"), "megatron_lm_config": ("Megatron-LM Arguments", ""),
            "mpirun_config": ("MPI Arguments", ""), "parallelism_config": ("ParallelismConfig Arguments", ""),
            "dynamo_config": ("Resource Selection Arguments", "dynamo_")}
# keys that mark a YAML file as an accelerate config rather than a TrainConfig recipe
ACCELERATE_MARKERS = ("distributed_type", "compute_environment", "num_processes", "deepspeed_config")


class RecipeError(ValueError):
    """A recipe or accelerate config that would fail (or be silently misread) on the GPU box."""


def _closest(word, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot read it as YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise RecipeError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def is_accelerate_config(path: Path, loaded: dict) -> bool:
    return "accelerate" in Path(path).parts or any(k in loaded for k in ACCELERATE_MARKERS)


def check_train_recipe(path: Path) -> TrainConfig:
    """The TrainConfig the recipe gives; RecipeError naming the file, the key and its closest valid name."""
    try:
        return load_config(TrainConfig, path)
    except (ValueError, TypeError) as e:
        raise RecipeError(str(e) if str(path) in str(e) else f"{path}: {e}") from e


def _launch_options() -> dict[str, dict]:
    """`accelerate launch` options per argument group title: {title: {dest: argparse action}}."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    # argparse keeps groups only in _action_groups (no public accessor); the titles are accelerate's own
    return {g.title: {a.dest: a for a in g._group_actions} for g in parser._action_groups}


def _value_problem(action, value) -> str | None:
    """Why `value` is not accepted by the `accelerate launch` option `action` (None when it is)."""
    if action.choices is not None and str(value) not in [str(c) for c in action.choices]:
        return f"{value!r} is not one of {', '.join(map(str, action.choices))}{_closest(value, action.choices)}"
    if action.nargs == 0 and not isinstance(value, bool):  # a store_true flag
        return f"{value!r} is not true/false"
    if action.type is not None and not isinstance(value, bool):
        try:
            action.type(value)
        except (TypeError, ValueError):
            return f"{value!r} is not a {getattr(action.type, '__name__', action.type)}"
    return None


def _section_problems(section: str, values, options: dict[str, dict]) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, dict):
        return [f"`{section}` must be a mapping, got {type(values).__name__}"]
    title, prefix = SECTIONS[section]
    known = {d: a for d, a in options[title].items() if d.startswith(prefix)}
    problems = []
    for key, value in values.items():
        dest = key if str(key).startswith(prefix) else prefix + str(key)
        if dest not in known:
            names = sorted(d[len(prefix):] if prefix and not str(key).startswith(prefix) else d for d in known)
            problems.append(f"unknown key `{section}.{key}`{_closest(key, names)}; valid: {', '.join(names)}")
        elif (why := _value_problem(known[dest], value)) is not None:
            problems.append(f"`{section}.{key}`: {why}")
    return problems


def _enum_problems(loaded: dict) -> list[str]:
    from accelerate.utils import ComputeEnvironment, DistributedType, PrecisionType, SageMakerDistributedType

    env = loaded.get("compute_environment", ComputeEnvironment.LOCAL_MACHINE.value)
    dist = SageMakerDistributedType if env == ComputeEnvironment.AMAZON_SAGEMAKER.value else DistributedType
    checks = [("compute_environment", ComputeEnvironment, False), ("distributed_type", dist, False),
              ("mixed_precision", PrecisionType, True)]
    problems = []
    for key, enum, optional in checks:
        if key not in loaded or (optional and loaded[key] is None):
            continue
        allowed = [e.value for e in enum]
        if str(loaded[key]) not in allowed:
            problems.append(f"`{key}: {loaded[key]}` is not one of {', '.join(allowed)}{_closest(loaded[key], allowed)}")
    if "distributed_type" not in loaded:
        problems.append("`distributed_type` is missing (accelerate requires it)")
    return problems


def _type_problems(loaded: dict, fields: dict) -> list[str]:
    """Plain int / bool fields of ClusterConfig given a value of another type (yes/no strings, floats)."""
    problems = []
    for key, value in loaded.items():
        f = fields.get(key)
        if f is None or value is None:
            continue
        want = {"int": int, "bool": bool}.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if want is not None and (type(value) is not want):
            problems.append(f"`{key}: {value!r}` must be a{'n' if want is int else ''} {want.__name__}")
    return problems


def check_accelerate_config(path: Path) -> dict:
    """The config as accelerate loads it (ClusterConfig.to_dict()); RecipeError listing every problem."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    loaded = _read_yaml(path)
    fields = {f.name: f for f in dataclasses.fields(ClusterConfig)}
    legacy = {"fp16", "dynamo_backend"}  # accelerate's process_config still converts these old keys
    problems = [f"unknown key `{k}`{_closest(k, fields)}" for k in loaded if k not in fields and k not in legacy]
    problems += _enum_problems(loaded) + _type_problems(loaded, fields)
    options = _launch_options()
    for section in SECTIONS:
        problems += _section_problems(section, loaded.get(section), options)
    if problems:
        raise RecipeError(f"{path}: " + "; ".join(problems))
    try:  # what accelerate itself refuses beyond our checks
        return load_config_from_file(str(path)).to_dict()
    except Exception as e:  # accelerate raises ValueError, TypeError or KeyError here
        raise RecipeError(f"{path}: accelerate refuses it: {type(e).__name__}: {e}") from e


def check_recipe(path: str | Path) -> str:
    """One line saying what the file is and that it is fine; RecipeError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such file")
    loaded = _read_yaml(path)
    if is_accelerate_config(path, loaded):
        got = check_accelerate_config(path)
        extra = f", deepspeed zero_stage {got['deepspeed_config'].get('zero_stage')}" if got.get("deepspeed_config") else ""
        return (f"OK {path}: accelerate config ({got['distributed_type']}, {got.get('num_processes')} processes, "
                f"mixed_precision {got.get('mixed_precision')}{extra})")
    cfg = check_train_recipe(path)
    here = "" if Path(cfg.base_model).expanduser().exists() else " (not a folder on this machine)"
    return (f"OK {path}: TrainConfig recipe ({len(loaded)} settings; base_model {cfg.base_model}{here}, "
            f"bf16 {cfg.bf16}, use_cpu {cfg.use_cpu})")


def recipe_kind(path: str | Path) -> str:
    """'accelerate', 'gpu' (a TrainConfig recipe with use_cpu: false) or 'cpu', for a file check_recipe passed."""
    if is_accelerate_config(Path(path), _read_yaml(Path(path))):
        return "accelerate"
    return "cpu" if check_train_recipe(Path(path)).use_cpu else "gpu"


def _max_grad_norm_default() -> float:
    from transformers import TrainingArguments

    # trainer_args leaves max_grad_norm at TrainingArguments' default: what DeepSpeed's clipping must match
    return next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == "max_grad_norm")


def check_together(recipe: str | Path, accel: str | Path) -> list[str]:
    """Where a TrainConfig recipe and the accelerate config it is launched with disagree: transformers
    refuses DeepSpeed values that mismatch the TrainingArguments (integrations/deepspeed.py, fill_match),
    and a recipe that trains on the CPU or without bf16 under a bf16 GPU launch is not what was meant."""
    cfg, acc = check_train_recipe(Path(recipe)), check_accelerate_config(Path(accel))
    problems, ds = [], acc.get("deepspeed_config") or {}
    if "gradient_accumulation_steps" in ds and ds["gradient_accumulation_steps"] not in ("auto", cfg.grad_accum):
        problems.append(f"deepspeed_config.gradient_accumulation_steps {ds['gradient_accumulation_steps']} vs "
                        f"grad_accum {cfg.grad_accum} (transformers refuses the mismatch)")
    if "gradient_clipping" in ds and ds["gradient_clipping"] not in ("auto", _max_grad_norm_default()):
        problems.append(f"deepspeed_config.gradient_clipping {ds['gradient_clipping']} vs the Trainer's max_grad_norm "
                        f"{_max_grad_norm_default()} (transformers refuses the mismatch)")
    if acc.get("mixed_precision") == "bf16" and not cfg.bf16:
        problems.append("mixed_precision bf16 but the recipe has bf16: false")
    if not acc.get("use_cpu") and cfg.use_cpu:
        problems.append("a GPU launch (use_cpu false) of a recipe with use_cpu: true (it would train on the CPU)")
    return [f"{recipe} with {accel}: {p}" for p in problems]


def shipped_recipes() -> list[Path]:
    from racq.config import REPO_ROOT

    return sorted((REPO_ROOT / "recipes").glob("*.yaml")) + sorted((REPO_ROOT / "recipes" / "accelerate").glob("*.yaml"))
