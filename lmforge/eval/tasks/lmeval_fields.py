"""The fields of lm-eval task files: YAML with `!function` and `include:`, and lm-eval's
conventions for `doc_to_text` / `doc_to_target` / `doc_to_choice` (`lm_eval/api/task.py:
ConfigurableTask`): a column name takes the column, a Jinja template is rendered, digits become an
index where there are choices, a list literal becomes a list.

`!function module.fn` imports `module.py` from beside the YAML file that names it (which runs that
Python, as lm-eval does), and only from inside the folder the user gave (`Resolver.root`).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class FunctionRef:
    """`!function module.fn`, resolved against the folder of the YAML file that names it."""

    name: str
    base: Path


def read_yaml(path: Path) -> Any:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor(
        "!function", lambda loader, node: FunctionRef(loader.construct_scalar(node), path.parent)
    )
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except yaml.YAMLError as e:
        raise LmforgeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def load_config(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config with its `include:` files merged under it (lm-eval's load_yaml_config)."""
    path = path.resolve()
    if path in seen:
        raise LmforgeError(f"{path}: includes itself (through {' -> '.join(p.name for p in seen)})")
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise LmforgeError(f"{path}: expected a mapping of task fields")
    includes = cfg.pop("include", None)
    if includes is None:
        return cfg
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else list(includes):
        p = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        if not p.is_file():
            raise LmforgeError(f"{path}: include {inc!r} not found ({p})")
        merged.update(load_config(p, seen + (path,)))
    merged.update(cfg)
    return merged


# ---------------------------------------------------------------- fields (lm-eval's Jinja conventions)


def _jinja_env():
    try:
        import jinja2
    except ImportError:
        raise LmforgeError("lm-eval task files need jinja2: pip install jinja2") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl: re.sub(pattern, repl, s)  # lm-eval's filter
    return env


class Resolver:
    """Calls `!function`s (importing only from `root`) and renders templates."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.env = _jinja_env()
        self.templates: dict[str, Any] = {}
        self.modules: dict[Path, Any] = {}

    def function(self, ref: FunctionRef, where: Path) -> Callable:
        module, _, fn = ref.name.rpartition(".")
        file = (ref.base / f"{module.replace('.', '/')}.py").resolve()
        if not file.is_relative_to(self.root):
            raise LmforgeError(
                f"{where}: !function {ref.name}: {file} is outside {self.root}; lmforge only runs "
                "Python from the folder given with --include-path"
            )
        if not module or not file.is_file():
            raise LmforgeError(f"{where}: !function {ref.name}: no file {file}")
        if file not in self.modules:
            spec = importlib.util.spec_from_file_location(
                f"lmforge_user_task_{len(self.modules)}_{file.stem}", file
            )
            mod = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(mod)
            except Exception as e:  # noqa: BLE001 -- the user's module: say which and why
                raise LmforgeError(
                    f"{where}: !function {ref.name}: importing {file} failed: {type(e).__name__}: {e}"
                ) from None
            self.modules[file] = mod
        if not callable(getattr(self.modules[file], fn, None)):
            raise LmforgeError(f"{where}: !function {ref.name}: {file.name} has no function {fn!r}")
        return getattr(self.modules[file], fn)

    def render(self, template: str, doc: dict) -> str:
        t = self.templates.get(template)
        if t is None:
            import jinja2

            try:
                t = self.templates[template] = self.env.from_string(template)
            except jinja2.TemplateSyntaxError as e:
                raise LmforgeError(f"bad template {template[:60]!r}: {e.message}") from None
        return t.render(**doc)


def text_field(spec, has_choices: bool, r: Resolver) -> Callable[[dict], Any]:
    """doc_to_text: an int (partial scoring's fixed index), a column, a template, or a function."""
    if isinstance(spec, int):
        return lambda d: spec
    if isinstance(spec, str):

        def text(d):
            if spec in d:
                return d[spec]
            s = r.render(spec, d)
            return ast.literal_eval(s) if s.isdigit() and has_choices else s

        return text
    return spec  # a function


def target_field(spec, has_choices: bool, r: Resolver) -> Callable[[dict], Any]:
    """doc_to_target: as doc_to_text, and a rendered list literal becomes a list."""
    if isinstance(spec, (int, list)):
        return lambda d: spec
    if isinstance(spec, str):

        def target(d):
            if spec in d:
                return d[spec]
            s = r.render(spec, d)
            if s.isdigit() and has_choices:
                return ast.literal_eval(s)
            if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
                try:
                    return ast.literal_eval(s)
                except (SyntaxError, ValueError):
                    return s
            return s

        return target
    return spec


def choice_field(spec, r: Resolver) -> Callable[[dict], list]:
    """doc_to_choice: a list, a mapping (its values), a column, a template of a list, or a function."""
    if isinstance(spec, list):
        return lambda d: spec
    if isinstance(spec, dict):
        return lambda d: list(spec.values())
    if isinstance(spec, str):
        return lambda d: d[spec] if spec in d else ast.literal_eval(r.render(spec, d))
    return spec
