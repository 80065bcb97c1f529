"""Compose the run configuration with Hydra's compose API, and check it.

We do not use `@hydra.main`: it changes the working directory and writes its own output
folders, and our contract is that relative paths mean what they mean in the user's shell.
Recipes (`recipes/*.yaml`, `# @package _global_`) are stored in the ConfigStore under group
`recipe` before composing, so `+recipe=NAME` works from a checkout and from an installed wheel
alike; folders in $GRPO_RECIPE_PATH (separated by ':') add the user's own recipes.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpo_cli.config import PACKAGE_DIR, GrpoConfig, resolve_path
from grpo_cli.errors import ConfigError, UserError

# Keys whose values are file system paths, taken literally whatever letters they hold.
PATH_KEYS = ("output_dir", "resume", "model.name_or_path", "data.path", "data.eval_path", "eval.checkpoint",
             "eval.output", "score.completions", "score.output", "environment.response_template")

# Keys that moved into a block: the old spelling is told the new one.
RENAMED = {
    **{f"algorithm.gfpo_{key}": f"algorithm.gfpo.{key}"
       for key in ("k", "metric", "rejected", "adaptive_k", "adaptive_warmup", "adaptive_window")},
    **{f"algorithm.{key}": f"algorithm.preference.{key}" for key in ("pair_loss", "group_weighting", "beta", "eta_alpha")},
}


def _renamed(message: str) -> str | None:
    key = next((word for word in re.findall(r"[\w.]+", message) if word in RENAMED), None)
    return None if key is None else f"config key {key} is now {RENAMED[key]}"


def _first_existing(*candidates: Path) -> Path:
    for path in candidates:
        if path.is_dir():
            return path
    raise ConfigError(f"cannot find the {candidates[0].name}/ folder; reinstall the package")


def config_dir() -> Path:
    """conf/ inside an installed wheel, or at the root of a checkout."""
    return _first_existing(PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf")


def recipe_dirs() -> list[Path]:
    shipped = _first_existing(PACKAGE_DIR / "recipes", PACKAGE_DIR.parent / "recipes")
    extra = [Path(p) for p in os.environ.get("GRPO_RECIPE_PATH", "").split(":") if p]
    return [shipped, *extra]


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for file in sorted(folder.glob("*.yaml")):
            found.setdefault(file.stem, file)
    return found


def _register() -> dict[str, str]:
    """Store the schema and every recipe that parses; the others' errors by recipe name, said
    only when that recipe is asked for (one broken file must not break every command)."""
    store = ConfigStore.instance()
    store.store(name="grpo_schema", node=GrpoConfig)
    broken = {}
    for name, file in available_recipes().items():
        try:
            node = OmegaConf.load(file)
        except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
            broken[name] = f"recipe {name} ({file}) is not valid YAML: {' '.join(str(error).split())}; fix the file"
            continue
        if not isinstance(node, DictConfig):
            broken[name] = f"recipe {name} ({file}) holds a {type(node).__name__}, not a mapping of config keys; fix the file"
            continue
        store.store(group="recipe", name=name, node=node, package="_global_")
    return broken


def _quote_paths(overrides: list[str]) -> list[str]:
    """Paths given plainly (`output_dir=/runs/café 1`) are quoted for Hydra, whose unquoted
    values allow ASCII letters only; a value the user quoted, or null, is left alone."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and value not in ("", "null") and value[0] not in "'\"":
            # Hydra reads a backslash as an escape only before a quote or at the end of the value.
            escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), value)
            item = f"{key}='{escaped}'"
        out.append(item)
    return out


def _one_line(error: BaseException) -> str:
    """Hydra and OmegaConf messages span lines and causes; keep the lines that say what is wrong."""
    parts: list[str] = []
    while error is not None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        parts.extend(line for line in lines[:1] if line not in parts and "$VALUE" not in line)
        key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "")
        if key and key not in " ".join(parts):
            parts.append(f"(key: {key})")
        error = error.__cause__ or error.__context__
    return " ".join(parts) if parts else "invalid configuration"


def _explain(message: str, overrides: list[str]) -> str:
    """Turn Hydra's wording into the fix a user needs."""
    renamed = _renamed(message)
    if renamed:
        return renamed
    if re.fullmatch(r"Could not override '[^']+'\.", message):
        return message.replace("Could not override", "unknown config key") + " see `grpo train --cfg job`"
    if "no viable alternative" in message or "mismatched input" in message:
        return (message.replace(" None", "") + "; quote a value that holds braces, brackets or spaces, "
                "e.g. data.template='Q: {question}'")
    missing = re.search(r"Could not find '(\w+)/([^']+)'", message)
    if missing:
        group, name = missing.groups()
        options = available_recipes() if group == "recipe" else _group_options(group)
        return f"unknown {group} {name!r}; available: {', '.join(options)}"
    return message + "; see `grpo train --cfg job` for the valid keys"


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with the command-line overrides; raise ConfigError on misuse."""
    broken = _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="grpo"):
            cfg = hydra_compose(config_name="config", overrides=_quote_paths(overrides))
    except Exception as error:  # Hydra raises several unrelated exception types here
        missing = re.search(r"Could not find 'recipe/([^']+)'", str(error))
        if missing and missing.group(1) in broken:
            raise ConfigError(broken[missing.group(1)]) from error
        raise ConfigError(_explain(_one_line(error), overrides)) from error
    _reject_unknown_keys(cfg, "")
    return cfg


def _reject_unknown_keys(node, path: str) -> None:
    """Hydra lets `+key=value` add keys to a structured config; a typo must still fail."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _reject_unknown_keys(item, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    for key in node.keys():
        where = f"{path}.{key}" if path else str(key)
        if known is not None and key not in known and where in RENAMED:
            raise ConfigError(f"config key {where} is now {RENAMED[where]}")
        if known is not None and key not in known:
            raise ConfigError(f"unknown config key {where!r}; valid keys there: {', '.join(sorted(known))}")
        if known is not None:
            _reject_unknown_keys(node._get_node(key), where)


def _raised_by_us(error: BaseException) -> UserError | None:
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error


def to_object(cfg: DictConfig) -> GrpoConfig:
    """Resolve interpolations into the typed config, with user paths made absolute."""
    try:
        obj: GrpoConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        own = _raised_by_us(error)  # a resolver of ours said what is wrong, and the fix
        raise (own or ConfigError(_one_line(error))) from error
    obj.model.name_or_path = resolve_path(obj.model.name_or_path)
    obj.data.path = resolve_path(obj.data.path)
    obj.data.eval_path = resolve_path(obj.data.eval_path)
    if not obj.output_dir.strip():  # abspath("") would be the current folder
        raise ConfigError("output_dir is empty; give the run a folder, e.g. output_dir=runs/mine")
    obj.output_dir = os.path.abspath(os.path.expanduser(obj.output_dir))
    obj.eval.checkpoint = resolve_path(obj.eval.checkpoint)
    if obj.eval.output is not None:
        obj.eval.output = os.path.abspath(os.path.expanduser(obj.eval.output))
    if obj.resume not in (None, "auto"):
        obj.resume = os.path.abspath(os.path.expanduser(obj.resume))
    return obj


def to_yaml(cfg: GrpoConfig | DictConfig, resolve: bool = False) -> str:
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    try:
        return OmegaConf.to_yaml(node, resolve=resolve)
    except OmegaConfBaseException as error:
        raise (_raised_by_us(error) or ConfigError(_one_line(error))) from error
