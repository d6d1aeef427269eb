"""Rule sets: ordered rules over the score, the event's fields, the features and named lists (docs/rules.md).
Pure: no Kafka, no settings; reads the text it is given.

A rule set is a TOML file::

    default_action = "review"            # no rule matched and score >= threshold
    [fields]                             # what the conditions read besides score and threshold
    amount = "float"                     # an event field, or the model's feature of that name
    channel = "string"
    tx_1h = { type = "float", source = "customer_id.count.1h" }   # a feature whose name is no symbol
    [lists]
    deny_terminals = "deny_terminals.txt"    # a file of the lists directory, one value a line
    [[rule]]
    id = "deny-terminal"
    action = "block"                     # allow, block, review, or a label of your own
    when = "terminal_id in deny_terminals"

Conditions are rule-engine expressions (the library parses them with its own grammar and type-checks
them against the declared fields: an unknown symbol, a type mismatch or a syntax error refuses the set
in one line naming the rule). Nothing is ever passed to Python's ``eval``.

Evaluation: each rule is compiled from rule-engine's syntax tree into numpy operations over a batch's
columns (``RuleSet.matches``): comparisons, ``and``/``or``/``not``, ``in``/``not in`` a list or a literal
array, ``+ - *`` and ``/`` by a non-zero literal. A rule using anything else (regular expressions,
ternaries, built-in symbols...) is evaluated row by row by rule-engine itself (about 40 µs a rule and an
event), and so is a compiled rule that disagrees with rule-engine on its probe rows (values at and around
each literal the rule names), checked when the set is parsed: compiled is quicker, never different.
``RuleSet.reference`` is rule-engine's own evaluation of one row, the yardstick of both.

Precedence (``RuleSet.rules`` is in this order): ``allow`` rules, then ``block``, then ``review``, then the
custom actions in the order they first appear; within an action, the file's order. The first rule that
matches decides; every match is recorded (worker/core/decisions.py).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from worker.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

FORMAT_VERSION = 1
BUILT_IN_ACTIONS = ("allow", "block", "review")
FIELD_TYPES = ("float", "string", "boolean")
RESERVED = ("score", "threshold")  # symbols every rule set has: the model's score and the threshold that applied
DEFAULTS: dict[str, Any] = {"float": 0.0, "string": "", "boolean": False}
MAX_RULES = 1000
MAX_CONDITION_CHARS = 4000
MAX_DEPTH = 100  # of a condition's syntax tree: compiling and evaluating it recurse
MAX_RULE_SET_BYTES = 1_048_576
RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}")
SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RULES_FILE = "rules.toml"

Columns = Mapping[str, np.ndarray]  # symbol -> one value per row (float64, bool or object of str)
Lists = Mapping[str, frozenset[str]]  # list name -> its values


class RuleSetError(ConfigError):
    """A rule set that cannot serve; the message is one line naming the file, the rule and the problem."""


@dataclass(frozen=True)
class Field:
    """A symbol the conditions read: ``source`` is the event field or model feature it comes from."""

    name: str
    type: str  # float, string or boolean
    source: str
    default: Any


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    when: str
    description: str = ""
    position: int = 0  # in the file, from 0
    compiled: bool = True  # False: rule-engine evaluates it row by row (``why``)
    why: str = ""

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, {self.action!r})"


@dataclass(frozen=True, eq=False)
class RuleSet:
    """A parsed, checked rule set. ``rules`` in precedence order (the module's doc)."""

    version: str
    rules: tuple[Rule, ...]
    fields: tuple[Field, ...]
    lists: Mapping[str, str]  # list name -> file name in the lists directory
    default_action: str
    actions: tuple[str, ...]  # every action, in precedence order, allow first
    sha256: str
    _engine: Mapping[str, Any] = field(repr=False, default_factory=dict)  # rule id -> rule_engine.Rule
    _compiled: Mapping[str, Callable[[Columns, Lists, int], np.ndarray]] = field(repr=False, default_factory=dict)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    @property
    def symbols(self) -> dict[str, str]:
        """Every symbol a condition may read, with its type (lists: ``set``)."""
        out = {name: "float" for name in RESERVED}
        out.update({f.name: f.type for f in self.fields})
        out.update({name: "set" for name in self.lists})
        return out

    def matches(self, columns: Columns, lists: Lists, n: int) -> np.ndarray:
        """A bool matrix (``n`` rows, one column per rule in ``rules`` order): where each rule matched."""
        out = np.zeros((n, len(self.rules)), dtype=bool, order="F")  # a rule's column is contiguous
        if n == 0:
            return out
        work = dict(columns)  # the compiled rules keep what several of them test (a list lookup) in it too
        for k, rule in enumerate(self.rules):
            fn = self._compiled.get(rule.id)
            if fn is not None:
                out[:, k] = fn(work, lists, n)
            else:
                out[:, k] = self._interpreted(rule.id, columns, lists, n)
        return out

    def _interpreted(self, rule_id: str, columns: Columns, lists: Lists, n: int) -> np.ndarray:
        engine = self._engine[rule_id]
        names = [s for s in self.symbols if s in columns]
        values = {s: columns[s].tolist() for s in names}
        sets = {name: set(v) for name, v in lists.items()}  # the type rule-engine takes, made once a batch
        got = np.zeros(n, dtype=bool)
        for j in range(n):
            row = {s: values[s][j] for s in names}
            got[j] = _reference_match(engine, row, sets)
        return got

    def reference(self, row: Mapping[str, Any], lists: Lists) -> list[bool]:
        """rule-engine's own evaluation of one row (symbol -> value), a bool per rule in ``rules`` order."""
        return [_reference_match(self._engine[r.id], row, lists) for r in self.rules]

    def without(self, rule_id: str) -> RuleSet:
        """This set less one rule (for a rule's incremental effect in the backtest)."""
        rules = tuple(r for r in self.rules if r.id != rule_id)
        return RuleSet(self.version, rules, self.fields, self.lists, self.default_action, self.actions, self.sha256,
                       self._engine, self._compiled)  # fmt: skip


def _reference_match(engine: Any, row: Mapping[str, Any], lists: Mapping[str, Any]) -> bool:
    import rule_engine

    thing = {**row, **{name: v if isinstance(v, set) else set(v) for name, v in lists.items()}}
    try:
        return bool(engine.matches(thing))
    except (rule_engine.EngineError, ArithmeticError, TypeError, ValueError):
        return False  # an error while evaluating (a division by zero): the rule does not match


def _python(value: Any) -> Any:
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# -- parsing ------------------------------------------------------------------------------------------


def load_rule_set(path: str, version: str | None = None, compiled: bool = True) -> RuleSet:
    """Read and check a rule-set file; a ``RuleSetError`` names the file and the problem."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RULE_SET_BYTES + 1)
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_rule_set(data, path, version, compiled)


def parse_rule_set(data: bytes, where: str, version: str | None = None, compiled: bool = True) -> RuleSet:
    """The rule set in ``data`` (TOML bytes), checked; ``version`` defaults to ``file-<sha256[:12]>``."""
    if len(data) > MAX_RULE_SET_BYTES:
        raise RuleSetError(f"{where}: larger than {MAX_RULE_SET_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RuleSetError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleSetError(f"{where}: not TOML ({exc})") from None
    except RecursionError:
        raise RuleSetError(f"{where}: not TOML (arrays or tables nested too deeply)") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise RuleSetError(f"{where}: not TOML ({str(exc)[:80]})") from None
    sha = hashlib.sha256(data).hexdigest()
    return from_mapping(doc, where, version or f"file-{sha[:12]}", sha, compiled)


def from_mapping(doc: Mapping[str, Any], where: str, version: str, sha256: str, compiled: bool = True) -> RuleSet:
    known = ("format_version", "default_action", "fields", "lists", "rule")
    for key in doc:
        if key not in known:
            raise RuleSetError(f"{where}: unknown key {key!r} ({', '.join(known)})")
    fmt = doc.get("format_version", FORMAT_VERSION)
    if fmt != FORMAT_VERSION or isinstance(fmt, bool):
        raise RuleSetError(f"{where}: format_version {str(fmt)[:20]!r} is not supported (want {FORMAT_VERSION})")
    default_action = doc.get("default_action", "review")
    if not isinstance(default_action, str) or not ACTION.fullmatch(default_action) or default_action == "allow":
        raise RuleSetError(f"{where}: default_action must be an action other than allow (lowercase, like review)")
    fields = _fields(doc.get("fields", {}), where)
    lists = _lists(doc.get("lists", {}), where)
    clash = {f.name for f in fields} & set(lists)
    if clash:
        raise RuleSetError(f"{where}: {sorted(clash)[0]!r} is both a field and a list")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, Mapping) for r in raw_rules):
        raise RuleSetError(f"{where}: rules must be an array of tables ([[rule]])")
    if len(raw_rules) > MAX_RULES:
        raise RuleSetError(f"{where}: {len(raw_rules)} rules, more than {MAX_RULES}")
    types = {name: "float" for name in RESERVED} | {f.name: f.type for f in fields} | {n: "set" for n in lists}
    context = _context(types)
    parsed: list[Rule] = []
    engines: dict[str, Any] = {}
    functions: dict[str, Callable[[Columns, Lists, int], np.ndarray]] = {}
    seen: set[str] = set()
    for position, raw in enumerate(raw_rules):
        rule, engine = _rule(raw, position, where, context, types)
        if rule.id in seen:
            raise RuleSetError(f"{where}: rule {rule.id!r} is declared twice")
        seen.add(rule.id)
        engines[rule.id] = engine
        fn, why = _compile_checked(engine, types, fields) if compiled else (None, "compilation is off")
        if fn is not None:
            functions[rule.id] = fn
        parsed.append(Rule(rule.id, rule.action, rule.when, rule.description, position, fn is not None, why))
    customs = tuple(dict.fromkeys(r.action for r in parsed if r.action not in BUILT_IN_ACTIONS))
    extra = (default_action,) if default_action not in BUILT_IN_ACTIONS + customs else ()
    actions = (*BUILT_IN_ACTIONS, *customs, *extra)
    rank = {a: i for i, a in enumerate(actions)}
    ordered = tuple(sorted(parsed, key=lambda r: (rank[r.action], r.position)))
    return RuleSet(version, ordered, fields, lists, default_action, actions, sha256, engines, functions)


def _fields(raw: object, where: str) -> tuple[Field, ...]:
    if not isinstance(raw, Mapping):
        raise RuleSetError(f"{where}: [fields] must be a table of name = type")
    out = []
    for name, spec in raw.items():
        at = f"{where}: field {name!r}"
        if not SYMBOL.fullmatch(name) or name in RESERVED or name in ("true", "false", "null", "and", "or", "not",
                                                                       "in", "if", "else", "for"):  # fmt: skip
            raise RuleSetError(f"{at}: not a usable name (letters, digits, _; not score, threshold or a keyword)")
        source, default = name, None
        if isinstance(spec, str):
            type_ = spec
        elif isinstance(spec, Mapping):
            unknown = set(spec) - {"type", "source", "default"}
            if unknown:
                raise RuleSetError(f"{at}: unknown key {sorted(unknown)[0]!r} (type, source, default)")
            type_ = spec.get("type", "")
            source = spec.get("source", name)
            default = spec.get("default")
            if not isinstance(source, str) or not source or len(source) > 256:
                raise RuleSetError(f"{at}: source must name an event field or a feature")
        else:
            raise RuleSetError(f"{at}: must be a type (float, string, boolean) or a table")
        if type_ not in FIELD_TYPES:
            raise RuleSetError(f"{at}: type {str(type_)[:20]!r} is not one of {', '.join(FIELD_TYPES)}")
        if default is None:
            default = DEFAULTS[type_]
        elif not _of_type(default, type_):
            raise RuleSetError(f"{at}: default {str(default)[:20]!r} is not a {type_}")
        out.append(Field(name, type_, source, float(default) if type_ == "float" else default))
    return tuple(out)


def _of_type(value: object, type_: str) -> bool:
    if type_ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str) if type_ == "string" else isinstance(value, bool)


def _lists(raw: object, where: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise RuleSetError(f"{where}: [lists] must be a table of name = file")
    out = {}
    for name, file in raw.items():
        if not SYMBOL.fullmatch(name) or name in RESERVED:
            raise RuleSetError(f"{where}: list {name!r}: not a usable name (letters, digits, _)")
        if not isinstance(file, str) or not FILE_NAME.fullmatch(file):
            raise RuleSetError(f"{where}: list {name!r}: {str(file)[:40]!r} is not a file name of the lists directory")
        out[name] = file
    return out


def _rule(
    raw: Mapping[str, Any], position: int, where: str, context: Any, types: Mapping[str, str]
) -> tuple[Rule, Any]:
    import rule_engine

    rid = raw.get("id")
    if not isinstance(rid, str) or not RULE_ID.fullmatch(rid):
        raise RuleSetError(f"{where}: rule {position + 1}: id must be letters, digits and _.:- (up to 64)")
    at = f"{where}: rule {rid!r}"
    unknown = set(raw) - {"id", "action", "when", "description"}
    if unknown:
        raise RuleSetError(f"{at}: unknown key {sorted(unknown)[0]!r} (id, action, when, description)")
    action = raw.get("action")
    if not isinstance(action, str) or not ACTION.fullmatch(action):
        raise RuleSetError(f"{at}: action must be allow, block, review or a lowercase label of your own")
    when = raw.get("when")
    if not isinstance(when, str) or not when.strip():
        raise RuleSetError(f"{at}: 'when' must be a condition")
    if len(when) > MAX_CONDITION_CHARS:
        raise RuleSetError(f"{at}: condition longer than {MAX_CONDITION_CHARS} characters")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise RuleSetError(f"{at}: description must be text")
    try:
        engine = rule_engine.Rule(when, context=context)
    except rule_engine.SymbolResolutionError as exc:
        known = ", ".join(sorted(types))
        raise RuleSetError(
            f"{at}: unknown field {exc.symbol_name!r} (declare it in [fields]; known: {known})"
        ) from None
    except rule_engine.RuleSyntaxError as exc:
        token = getattr(exc, "token", None)
        near = f" near {str(token.value)[:30]!r}" if token is not None else " (incomplete condition)"
        raise RuleSetError(f"{at}: syntax error{near}: {when[:80]!r}") from None
    except rule_engine.EngineError as exc:
        raise RuleSetError(f"{at}: {_engine_message(exc)}: {when[:80]!r}") from None
    except RecursionError:
        raise RuleSetError(f"{at}: the condition is nested more than {MAX_DEPTH} deep: {when[:80]!r}") from None
    if _depth(engine.statement.expression) > MAX_DEPTH:
        raise RuleSetError(f"{at}: the condition is nested more than {MAX_DEPTH} deep: {when[:80]!r}")
    result = engine.statement.expression.result_type
    if result != rule_engine.DataType.BOOLEAN and result != rule_engine.DataType.UNDEFINED:
        raise RuleSetError(
            f"{at}: type error: the condition is a {result.name.lower()}, not true or false: {when[:80]!r}"
        )
    problem = _contains_problem(engine.statement.expression, types)
    if problem:
        raise RuleSetError(f"{at}: type error: {problem}: {when[:80]!r}")
    return Rule(rid, action, when, description, position), engine


def _depth(root: Any) -> int:
    """How deep a condition's syntax tree goes (walked without recursion: the tree is outside data)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def _engine_message(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return ("type error: " + text) if "type" in text or "mismatch" in text else text


def _context(types: Mapping[str, str]) -> Any:
    import rule_engine
    from rule_engine import DataType

    kinds = {"float": DataType.FLOAT, "string": DataType.STRING, "boolean": DataType.BOOLEAN,
             "set": DataType.SET(DataType.STRING)}  # fmt: skip
    resolver = rule_engine.type_resolver_from_dict({name: kinds[t] for name, t in types.items()})
    return rule_engine.Context(type_resolver=resolver, resolver=rule_engine.resolve_item)


def _contains_problem(node: Any, types: Mapping[str, str]) -> str:
    """A list or array tested for a member of another type (rule-engine accepts ``amount in deny_cards``)."""
    from rule_engine import ast

    for child in _children(node):
        problem = _contains_problem(child, types)
        if problem:
            return problem
    if isinstance(node, ast.ContainsExpression):
        member = _static_type(node.member, types)
        container = node.container
        if isinstance(container, ast.SymbolExpression) and types.get(container.name) == "set" and member not in (
            "string", None
        ):  # fmt: skip
            return f"list {container.name!r} holds text, tested for a {member}"
    return ""


def _children(node: Any) -> list[Any]:
    from rule_engine import ast

    if isinstance(node, ast.ContainsExpression):
        return [node.container, node.member]
    if isinstance(node, ast.UnaryExpression):
        return [node.right]
    if hasattr(node, "left") and hasattr(node, "right"):
        return [node.left, node.right]
    return []


def _static_type(node: Any, types: Mapping[str, str]) -> str | None:
    from rule_engine import DataType

    t = node.result_type
    for name in ("float", "string", "boolean"):
        if t == getattr(DataType, name.upper()):
            return name
    return None


# -- compiling to numpy -------------------------------------------------------------------------------


class _Unsupported(Exception):
    pass


def _literal_types() -> tuple[type, ...]:
    from rule_engine import ast

    return (ast.FloatExpression, ast.StringExpression, ast.BooleanExpression)


def _compile_checked(
    engine: Any, types: Mapping[str, str], fields: Sequence[Field]
) -> tuple[Callable[[Columns, Lists, int], np.ndarray] | None, str]:
    """The rule compiled, or None and why not (rule-engine then evaluates it row by row)."""
    try:
        fn = _compile(engine.statement.expression, types)
    except _Unsupported as exc:
        return None, str(exc)
    rows, lists = _probe_rows(engine.statement.expression, types, fields)
    columns = {name: _column([r[name] for r in rows], types[name]) for name in types if types[name] != "set"}
    got = _as_bool(fn(columns, lists, len(rows)), len(rows))
    for j, row in enumerate(rows):
        if bool(got[j]) != _reference_match(engine, row, lists):
            return None, f"its compiled form disagrees with rule-engine on {row!r:.120}"
    return (lambda c, ls, n: _as_bool(fn(c, ls, n), n)), ""


def _as_bool(value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, bool(arr), dtype=bool)
    return arr.astype(bool, copy=False)


def _column(values: Sequence[Any], type_: str) -> np.ndarray:
    if type_ == "float":
        return np.asarray(values, dtype=np.float64)
    if type_ == "boolean":
        return np.asarray(values, dtype=bool)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _float_literal(value: Decimal) -> float:
    f = float(value)
    if not math.isfinite(f) or Decimal(repr(f)) != value:
        raise _Unsupported(f"the number {value} has more digits than a float64 holds")
    return f


def _compile(node: Any, types: Mapping[str, str]) -> Callable[[Columns, Lists, int], Any]:
    """numpy over whole columns for the node types of the module's doc; ``_Unsupported`` for anything else."""
    from rule_engine import ast

    kind = _static_type(node, types)
    if isinstance(node, ast.SymbolExpression):
        if node.scope is not None:
            raise _Unsupported(f"built-in symbol ${node.name}")
        name = node.name
        if types.get(name) == "set":
            raise _Unsupported(f"list {name} used other than after 'in'")
        return lambda c, ls, n: c[name]
    if isinstance(node, ast.FloatExpression):
        value = _float_literal(node.value)
        return lambda c, ls, n: value
    if isinstance(node, (ast.StringExpression, ast.BooleanExpression)):
        literal = node.value
        return lambda c, ls, n: literal
    if isinstance(node, ast.LogicExpression):
        if _static_type(node.left, types) != "boolean" or _static_type(node.right, types) != "boolean":
            raise _Unsupported("'and'/'or' of values that are not true or false")
        left, right = _compile(node.left, types), _compile(node.right, types)
        if node.type == "and":

            def both(c: Columns, ls: Lists, n: int) -> Any:
                a = left(c, ls, n)
                if not (a.any() if isinstance(a, np.ndarray) else a):  # rules are rare: often all false already
                    return a
                return np.logical_and(a, right(c, ls, n))

            return both

        def either(c: Columns, ls: Lists, n: int) -> Any:
            a = left(c, ls, n)
            if a.all() if isinstance(a, np.ndarray) else a:
                return a
            return np.logical_or(a, right(c, ls, n))

        return either
    if isinstance(node, ast.UnaryExpression):
        right = _compile(node.right, types)
        if node.type == "not":
            if _static_type(node.right, types) != "boolean":
                raise _Unsupported("'not' of a value that is not true or false")
            return lambda c, ls, n: np.logical_not(right(c, ls, n))
        if kind != "float":
            raise _Unsupported("minus of a value that is not a number")
        return lambda c, ls, n: np.negative(right(c, ls, n))
    if isinstance(node, ast.ArithmeticComparisonExpression) or isinstance(node, ast.ComparisonExpression):
        if type(node) not in (ast.ArithmeticComparisonExpression, ast.ComparisonExpression):
            raise _Unsupported(f"{type(node).__name__} (regular expressions)")
        lt, rt = _static_type(node.left, types), _static_type(node.right, types)
        if lt is None or lt != rt:
            raise _Unsupported("a comparison of values of different or unknown types")
        if isinstance(node, ast.ArithmeticComparisonExpression) and lt == "boolean":
            raise _Unsupported("an ordering of true and false")
        compare: Any = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
              "ge": np.greater_equal}[node.type]  # fmt: skip
        symbol, literal_node = node.left, node.right
        if isinstance(symbol, ast.SymbolExpression) and isinstance(literal_node, _literal_types()) and not symbol.scope:
            name, literal = symbol.name, _compile(literal_node, types)(None, None, 0)  # type: ignore[arg-type]
            return lambda c, ls, n: compare(c[name], literal)  # the usual form, one call
        left, right = _compile(node.left, types), _compile(node.right, types)
        return lambda c, ls, n: compare(left(c, ls, n), right(c, ls, n))
    if isinstance(node, ast.ContainsExpression):
        return _compile_contains(node, types)
    if isinstance(node, (ast.AddExpression, ast.SubtractExpression, ast.ArithmeticExpression)):
        if _static_type(node.left, types) != "float" or _static_type(node.right, types) != "float":
            raise _Unsupported("arithmetic on values that are not numbers")
        left, right = _compile(node.left, types), _compile(node.right, types)
        if node.type == "tdiv":
            if not isinstance(node.right, ast.FloatExpression) or node.right.value == 0:
                raise _Unsupported("division by anything but a non-zero number")
        ops: dict[str, Any] = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "tdiv": np.true_divide}
        if node.type not in ops:
            raise _Unsupported(f"the operator {node.type}")
        op = ops[node.type]
        return lambda c, ls, n: op(left(c, ls, n), right(c, ls, n))
    raise _Unsupported(type(node).__name__)


def _compile_contains(node: Any, types: Mapping[str, str]) -> Callable[[Columns, Lists, int], Any]:
    from rule_engine import ast

    member = _compile(node.member, types)
    container = node.container
    if isinstance(container, ast.SymbolExpression) and types.get(container.name) == "set":
        name = container.name
        # A symbol's lookup in a list is kept in the batch's columns: rules testing the same pair share it.
        key = f"\0{node.member.name}\0{name}" if isinstance(node.member, ast.SymbolExpression) else None

        def in_list(c: Columns, ls: Lists, n: int) -> np.ndarray:
            if key is not None and key in c:
                return c[key]
            values, m = ls.get(name, frozenset()), member(c, ls, n)
            if np.ndim(m) == 0:
                got = np.full(n, m in values, dtype=bool)
            else:
                members, candidates = _candidates(c, ls, m, node.member, n)
                got = np.zeros(n, dtype=bool)
                if len(candidates):  # the rows whose value is in some list: few, as lists match rarely
                    got[candidates] = [members[i] in values for i in candidates.tolist()]
            if key is not None and isinstance(c, dict):
                c[key] = got
            return got

        return in_list
    if isinstance(container, (ast.ArrayExpression, ast.SetExpression)):
        literal = []
        for item in container.value:
            item = getattr(item, "value", item)  # a literal's node (StringExpression...) or its value
            if not isinstance(item, (str, bool, Decimal)):
                raise _Unsupported("'in' an array of other than literal values")
            literal.append(_float_literal(item) if isinstance(item, Decimal) else item)
        kinds = {type(v) for v in literal}
        member_kind = _static_type(node.member, types)
        if (
            not literal
            or len(kinds) != 1
            or {"float": float, "string": str, "boolean": bool}.get(member_kind or "") not in kinds
        ):
            raise _Unsupported("'in' an array of mixed or other types than its member")
        values = frozenset(literal)

        def in_literal(c: Columns, ls: Lists, n: int) -> np.ndarray:
            m = member(c, ls, n)
            if np.ndim(m) == 0:
                return np.full(n, m in values, dtype=bool)
            return np.fromiter((v in values for v in m.tolist()), dtype=bool, count=n)

        return in_literal
    raise _Unsupported("'in' something other than a list or a literal array")


def _candidates(c: Columns, ls: Lists, m: np.ndarray, node: Any, n: int) -> tuple[list[Any], np.ndarray]:
    """A member column's values and the rows whose value is in any of the lists, one pass over the batch for
    every list a symbol is tested against (kept in the batch's columns)."""
    from rule_engine import ast

    key = f"\0candidates\0{node.name}" if isinstance(node, ast.SymbolExpression) else None
    if key is not None and key in c:
        return c[key]  # type: ignore[return-value]
    members = m.tolist()
    union = ls.union if isinstance(ls, ListValues) else frozenset().union(*ls.values())
    if union.isdisjoint(members):  # one C call says so for the batch
        found = (members, np.zeros(0, dtype=np.int64))
    else:
        found = (members, np.flatnonzero(np.fromiter(map(union.__contains__, members), dtype=bool, count=n)))
    if key is not None and isinstance(c, dict):
        c[key] = found  # type: ignore[assignment]
    return found


def _probe_rows(node: Any, types: Mapping[str, str], fields: Sequence[Field]) -> tuple[list[dict[str, Any]], Lists]:
    """Rows that exercise a rule's literals: each at, just below and just above every number it names, each
    string it names and the empty one, true and false; the lists hold the strings named."""
    numbers: set[float] = {0.0, 1.0, -1.0}
    strings: set[str] = {"", "x"}
    _literals(node, numbers, strings)
    floats = sorted({v for x in numbers for v in (x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf),
                                                  x - 1, x + 1, x / 2)})  # fmt: skip
    words = sorted(strings)
    lists = {name: frozenset(words[: max(1, len(words) // 2)]) for name, t in types.items() if t == "set"}
    names = [name for name, t in types.items() if t != "set"]
    rows = []
    size = max(len(floats), len(words), 2) * 3
    for j in range(size):
        row: dict[str, Any] = {}
        for k, name in enumerate(names):
            t = types[name]
            i = j * (k + 1) + k  # a different walk through the values for each symbol
            if t == "float":
                row[name] = floats[i % len(floats)]
            elif t == "string":
                row[name] = words[i % len(words)]
            else:
                row[name] = bool(i % 2)
        rows.append(row)
    return rows, lists


def _literals(node: Any, numbers: set[float], strings: set[str]) -> None:
    from rule_engine import ast

    if isinstance(node, ast.FloatExpression):
        f = float(node.value)
        if math.isfinite(f):
            numbers.add(f)
    elif isinstance(node, ast.StringExpression):
        strings.add(node.value)
    elif isinstance(node, (ast.ArrayExpression, ast.SetExpression)):
        for v in node.value:
            v = getattr(v, "value", v)
            if isinstance(v, str):
                strings.add(v)
            elif isinstance(v, Decimal) and math.isfinite(float(v)):
                numbers.add(float(v))
    for child in _children(node):
        _literals(child, numbers, strings)


class ListValues(dict[str, frozenset[str]]):
    """The lists' contents by name, and (made once) every value of any of them."""

    @functools.cached_property
    def union(self) -> frozenset[str]:
        return frozenset().union(*self.values())


@dataclass(frozen=True)
class ServingRules:
    """A rule set and the contents of its lists, as one batch is decided with them."""

    rule_set: RuleSet
    lists: Lists

    def __post_init__(self) -> None:
        if not isinstance(self.lists, ListValues):
            object.__setattr__(self, "lists", ListValues(self.lists))
