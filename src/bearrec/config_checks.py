"""Type and range checks of config values against dataclass type hints, with errors that name the dotted key.

Every value is checked against its field's type hint before anything is written, so that `learning_rate=abc` is a
ConfigError naming the key, not a torch traceback in a half-written run. An int fits a float field, a bool fits no
number field; an enum field (typed `SomeEnum | str` in TrainingArguments) takes the enum's values only.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from .errors import ConfigError

_NONE = type(None)
_PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "true/false values"}


def union_members(tp: Any) -> tuple[Any, ...] | None:
    """The members of a Union / `X | Y` type, less the `str` beside an enum (the string must be one of its values)."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(tp)
    if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
        args = tuple(a for a in args if a is not str)
    return args


def fits(value: Any, tp: Any) -> bool:
    """Whether `value` (as read from YAML or JSON, or given in Python) is of type `tp`."""
    if tp is Any:
        return True
    if tp is None or tp is _NONE:
        return value is None
    members = union_members(tp)
    if members is not None:
        return any(fits(value, m) for m in members)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, set, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and (not args or all(fits(v, args[0]) for v in value))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (len(args) != 2 or all(
            fits(k, args[0]) and fits(v, args[1]) for k, v in value.items()))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or isinstance(value, str) and value in {m.value for m in tp}
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a typing construct these fields do not use: left to the code that reads the value


def describe(tp: Any) -> str:
    """`tp` in words, as an error message says what a key must be ("an integer", "a string or null")."""
    if tp is Any:
        return "any value"
    if tp is None or tp is _NONE:
        return "null"
    members = union_members(tp)
    if members is not None:
        words = [describe(m) for m in members if m is not _NONE] + (["null"] if _NONE in members else [])
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return ("" if len(args) == 1 else "one of ") + ", ".join(yaml_text(a) for a in args)
    if origin in (list, tuple, set, collections.abc.Sequence):
        item = args[0] if args else Any
        return "a list" + (f" of {_PLURALS[item]}" if item in _PLURALS else
                           "" if item is Any else f" (each {describe(item)})")
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return "a mapping" + (f" of {describe(args[1])} values" if len(args) == 2 and args[1] is not Any else "")
    if tp in (bool, int, float, str):
        return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [str(m.value) for m in tp]
        more = f", ... ({len(values)} in all: {tp.__module__}.{tp.__name__})" if len(values) > 15 else ""
        return "one of " + ", ".join(values[:12] if more else values) + more
    return f"a {getattr(tp, '__name__', tp)}"


def yaml_text(value: Any) -> str:
    """How `value` is written in YAML or a key=value override (true, null, 0.0001, [q_proj, v_proj])."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return str(value)


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(key: str, value: Any, tp: Any, example: Any = None) -> None:
    """ConfigError unless `value` is of type `tp`, naming the dotted `key`, the type and the value; `example`
    (a valid value, such as the field's default) is suggested in the fix."""
    if fits(value, tp):
        return
    wanted = describe(tp)
    fix = (f"write a value of that type, e.g. {key}={yaml_text(example)}" if good_example(example, tp)
           else f"set {key} to {wanted}")
    raise ConfigError(f"{key} must be {wanted}, got {shown(value)}. Fix: {fix}.")


def good_example(example: Any, tp: Any) -> bool:
    """Whether `example` is worth suggesting: a non-empty scalar or list (a dict or a section is not) of type `tp`."""
    return (isinstance(example, (bool, int, float, str, enum.Enum, list, tuple)) and example != ""
            and fits(example, tp))


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, tuple[Any, Any]]:
    """{field name: (type, default)} of a dataclass, for the fields its constructor takes. A hint that does not
    resolve (a name imported only for type checkers) is not checked."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a hint naming what only type checkers import: check the plain ones only
        hints = {f.name: Any if isinstance(f.type, str) else f.type for f in dataclasses.fields(cls)}
    return {f.name: (hints.get(f.name, Any), field_default(f)) for f in dataclasses.fields(cls) if f.init}


def check_fields(obj: Any, prefix: str) -> None:
    """The type of every field of dataclass instance `obj` (keys named `prefix` + field)."""
    for name, (tp, default) in field_types(type(obj)).items():
        check_value(prefix + name, getattr(obj, name), tp, default)


def check_range(key: str, value: Any, ok: bool, rule: str, example: Any = None) -> None:
    """ConfigError naming `key` unless `ok` (a NaN compares false, so `not value > 0` catches it too)."""
    if not ok:
        fix = f"e.g. {key}={yaml_text(example)}" if example is not None else f"choose a value {rule}"
        raise ConfigError(f"{key} must be {rule}, got {shown(value)}. Fix: {fix}.")


def check_repeated_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """ConfigError when a user gives one key twice (`seeds=[5] seeds=[0]`): only the last would count, silently."""
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"the override {key}=... is given {keys.count(key)} times; only the last would count. "
                              "Fix: give each key once.")
