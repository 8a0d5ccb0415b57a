"""The notebooks the runner executes: their ``parameters`` cells, and ``-p NAME VALUE``
words read as the type of the config field each parameter feeds, then checked by
:func:`fa_utils.config.make_config`, so that a bad value fails before any kernel starts.
"""
from __future__ import annotations

import ast
import contextlib
import json
import re
import shlex
import types
import typing
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Sequence

from . import outputs
from .config import SECTIONS, ConfigError, make_config, resolve_profile

#: The type of parameters that feed no config field.
OTHER_PARAMETERS = MappingProxyType({"interactive": Optional[bool]})


class RunnerError(RuntimeError):
    """A notebook that cannot be run as asked: missing, a bad parameter, a dirty work tree."""


def all_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` in numeric order."""
    return sorted((outputs.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path) -> list:
    import nbformat

    return nbformat.read(path, as_version=4).cells


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The ``parameters`` cell of ``path`` as name -> default (a Python literal).

    Raises:
        RunnerError: not exactly one cell tagged ``parameters``, or a default not a literal.
    """
    cells = [c for c in _cells(path) if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"{path.name} must have one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for node in ast.parse(cells[0].source).body:
        target = getattr(node, "target", None) or getattr(node, "targets", [None])[0]
        try:
            params[target.id] = ast.literal_eval(node.value)
        except (ValueError, AttributeError) as exc:
            raise RunnerError(f"{path.name}: the default on line {node.lineno} is not a literal") from exc
    return params


def config_sections(path: Path) -> tuple[str, ...]:
    """The config sections the notebook builds (its ``make_config("<section>", ...)``
    calls); every section when it builds none itself (07: the explorers build them)."""
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "code")
    found = [s for s in dict.fromkeys(re.findall(r"make_config\(\s*[\"'](\w+)", text)) if s in SECTIONS]
    return tuple(found) or tuple(SECTIONS)


def annotation_of(default: Any) -> Any:
    """The type a parameter that feeds no config field takes from its default (Any for None)."""
    return Any if default is None else tuple if isinstance(default, list) else type(default)


def _label(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _label(next(a for a in typing.get_args(tp) if a is not type(None))) + " or None"
    return {bool: "a bool (True or False)", int: "an int", float: "a float", str: "a string",
            tuple: "a list"}.get(tp, str(tp))


def _word(value: Any) -> str:
    """``value`` as one shell word that :func:`parse_word` reads back."""
    return shlex.quote(json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value))


def parse_word(name: str, raw: str, tp: Any, example: Any = None) -> Any:
    """The command-line word ``raw`` read as ``tp`` (bool, int, float, str, tuple, Optional
    of one, or Any: a Python literal, else the string). Strings stay strings (``001``);
    bools take true/false/1/0/yes/no; tuples a Python list, returned as a list.

    Raises:
        RunnerError: ``raw`` is not a ``tp``; names the parameter and a word that works.
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if raw.strip() == "None":
            return None
        tp, outer = next(a for a in typing.get_args(tp) if a is not type(None)), tp
    else:
        outer = tp
    low = raw.strip().lower()
    with contextlib.suppress(ValueError, SyntaxError):
        if tp is str:
            return raw
        if tp is Any:
            return ast.literal_eval(raw)
        if tp is bool and low in ("true", "1", "yes", "false", "0", "no"):
            return low in ("true", "1", "yes")
        if tp in (int, float):
            return tp(raw)
        if tp is tuple and isinstance(value := ast.literal_eval(raw), (list, tuple)):
            return list(value)
    if tp is Any:
        return raw
    hint = f"; e.g. -p {name} {_word(example)}" if example is not None else ""
    raise RunnerError(f"parameter {name!r}: {raw!r} is not {_label(outer)}{hint}")


def _parameter(nb: Path, name: str, raw: str, default: Any, sections: Sequence[str],
               profile: str) -> Any:
    """One ``-p`` value of ``nb``: parsed as the config field it feeds and checked by
    building each section it feeds, else parsed as :data:`OTHER_PARAMETERS` or its default."""
    feeds = [s for s in sections if name in typing.get_type_hints(SECTIONS[s])]
    if not feeds:
        try:
            return parse_word(name, raw, OTHER_PARAMETERS.get(name, annotation_of(default)), default)
        except RunnerError as exc:
            raise RunnerError(f"{nb.name}: {exc}") from exc
    example = getattr(make_config(feeds[0], profile), name)
    try:
        value = parse_word(name, raw, typing.get_type_hints(SECTIONS[feeds[0]])[name], example)
        for section in feeds:
            make_config(section, profile, **{name: value})
    except RunnerError as exc:
        raise RunnerError(f"{nb.name}: {exc}") from exc
    except ConfigError as exc:
        hint = f"; e.g. -p {name} {_word(example)} (the {profile} profile's value)" * (example is not None)
        raise RunnerError(f"{nb.name}: -p {name} {shlex.quote(raw)}: {exc}{hint}") from exc
    return value


def prepare(notebooks: Sequence[Path], raw_params: Sequence[tuple[str, str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """(notebook, parameters) for each notebook, everything checked before any kernel starts.

    Raises:
        RunnerError / ConfigError: a missing notebook, an unknown profile or parameter,
            ``-p profile``, a value of the wrong type or range (the config's validation).
    """
    profile = resolve_profile(profile)
    plans = []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: {[p.name for p in all_notebooks()]}")
        declared, sections = notebook_parameters(nb), config_sections(nb)
        params = {}
        for name, raw in raw_params:
            if name not in declared:
                raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                  f"are {sorted(declared)}")
            if name == "profile":
                raise RunnerError(f"set the profile with --profile {shlex.quote(raw)}, not with -p profile")
            params[name] = _parameter(nb, name, raw, declared[name], sections, profile)
        for section in sections:  # the values together (e.g. linear_out < linear_in)
            fields = typing.get_type_hints(SECTIONS[section])
            with_values = {n: v for n, v in params.items() if n in fields}
            try:
                make_config(section, profile, **with_values)
            except ConfigError as exc:
                raise RunnerError(f"{nb.name}: {exc}") from exc
        plans.append((nb, {**params, **({"profile": profile} if "profile" in declared else {})}))
    return plans
