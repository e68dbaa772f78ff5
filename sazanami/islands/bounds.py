"""Bounds on what reaches the grammar compiler: one check for every regex, JSON schema and Lark grammar.

llguidance compiles a grammar by recursion in native code, so a grammar that is deep enough
overflows the stack and kills the process (a 3,000-rule chain, a 3,000-long ``$ref`` chain, a
6,000-long terminal chain; fewer when each rule also nests brackets: 256 rules of 25 nested
groups). :func:`check_grammar` refuses such a grammar before it is compiled, with a
:class:`~sazanami.errors.ParameterError` naming the field, the limit and the value:

- size: at most :data:`MAX_GRAMMAR_CHARS` characters of source;
- rules: at most :data:`MAX_GRAMMAR_RULES` rule and terminal definitions in a Lark grammar,
  at most :data:`MAX_SCHEMA_NODES` values (objects, arrays, scalars) in a JSON schema;
- nesting: brackets within one rule, groups within one regex, objects and arrays in a schema
  at most :data:`MAX_NESTING` deep;
- depth: following every reference (a rule naming a rule, a ``$ref``) and counting the
  brackets opened on the way, at most :data:`MAX_GRAMMAR_DEPTH` levels. This is what the
  compiler recurses over; it is computed in linear time as the longest path through the
  reference graph, each strongly connected part (recursive rules) counted as the sum of its
  members, so a cycle cannot hide its length.

A compiler crash measured at about 3,000 levels on an 8 MB stack; the depth limit is ten times
below it, and far above what real grammars use (a JSON schema with definitions a dozen deep,
an expression grammar with ten precedence levels).

:func:`loads_json` parses JSON text whose nesting is checked first, so a deep text is a
``ParameterError``, never a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any
from urllib.parse import unquote

from sazanami.errors import ParameterError

__all__ = [
    "MAX_GRAMMAR_CHARS",
    "MAX_GRAMMAR_DEPTH",
    "MAX_GRAMMAR_RULES",
    "MAX_NESTING",
    "MAX_SCHEMA_NODES",
    "check_grammar",
    "check_schema",
    "json_nesting",
    "loads_json",
]

MAX_GRAMMAR_CHARS = 100_000
"""Characters of a regex, a Lark grammar or a JSON schema's text at most."""
MAX_GRAMMAR_RULES = 1000
"""Rule and terminal definitions of a Lark grammar at most."""
MAX_SCHEMA_NODES = 4096
"""Values (objects, arrays, scalars) of a JSON schema at most."""
MAX_NESTING = 32
"""Brackets within one Lark rule, groups within one regex, objects/arrays within a schema at most."""
MAX_GRAMMAR_DEPTH = 256
"""Levels the compiler recurses through at most: references followed plus brackets nested on the way."""

Graph = dict[str, list[tuple[str, int]]]
"""Reference graph: node → [(node it refers to, levels added by that reference)]."""


def check_grammar(kind: str, source: str, param: str) -> None:
    """Raise ``ParameterError`` (naming ``param``) if a ``regex``, ``json_schema`` or ``lark``
    source passes a bound of the module docstring; linear in its length."""
    if len(source) > MAX_GRAMMAR_CHARS:
        raise ParameterError(param, f"{param} must be at most {MAX_GRAMMAR_CHARS} characters, got {len(source)}")
    if kind == "regex":
        _check_nesting(param, "groups nested", regex_nesting(source))
    elif kind == "json_schema":
        check_schema(loads_json(source, param), param)
    elif kind == "lark":
        _check_lark(source, param)


def _check_nesting(param: str, what: str, value: int, limit: int = MAX_NESTING) -> None:
    if value > limit:
        raise ParameterError(param, f"{param} has {what} {value} deep; at most {limit} are allowed")


def _check_depth(param: str, depth: int, start: str, how: str) -> None:
    if depth > MAX_GRAMMAR_DEPTH:
        raise ParameterError(
            param, f"{param} is {depth} levels deep from {start} ({how}); at most {MAX_GRAMMAR_DEPTH} are allowed"
        )


# -- JSON text ---------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\.", re.S)
_STRING = re.compile(r'"[^"]*"')
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def json_nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest in JSON text (brackets inside strings are not counted); linear."""
    plain = _STRING.sub("", _ESCAPE.sub("", text))  # escapes first, so a string ends at its first quote
    return max(accumulate(_STEP[c] for c in _NOT_BRACKETS.sub("", plain)), default=0)


def loads_json(text: str, param: str, max_depth: int = MAX_NESTING) -> Any:
    """``json.loads(text)`` for text nested at most ``max_depth`` deep; ``ParameterError`` naming
    ``param`` otherwise (too deep, or not JSON)."""
    depth = json_nesting(text)
    if depth > max_depth:
        raise ParameterError(param, f"{param} is nested {depth} levels deep; at most {max_depth} are allowed")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParameterError(param, f"{param} is not valid JSON: {exc}") from exc


# -- JSON schemas --------------------------------------------------------------------------------------

Pointer = tuple[str, ...]


def check_schema(schema: Any, param: str) -> None:
    """Raise ``ParameterError`` if a JSON schema (parsed) has more than :data:`MAX_SCHEMA_NODES`
    values, nests deeper than :data:`MAX_NESTING` or reaches deeper than :data:`MAX_GRAMMAR_DEPTH`
    through its ``$ref`` chains. Iterative and linear: a hostile schema cannot exhaust the
    recursion limit here."""
    nodes = 0
    containers: dict[Pointer, int] = {}  # pointer → nesting depth, for every object and array
    refs: list[tuple[Pointer, str]] = []  # (the object holding "$ref", its value)
    names: dict[str, Pointer] = {}  # "$anchor" and "$id" values → their object
    stack: list[tuple[Any, Pointer]] = [(schema, ())]
    while stack:
        value, path = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise ParameterError(param, f"{param} must have at most {MAX_SCHEMA_NODES} values, got more")
        if not isinstance(value, (dict, list)):
            continue
        depth = len(path) + 1
        _check_nesting(param, "objects and arrays nested", depth)
        containers[path] = depth
        if isinstance(value, dict):
            if isinstance(value.get("$ref"), str):
                refs.append((path, value["$ref"]))
            for key in ("$anchor", "$dynamicAnchor", "$id"):
                if isinstance(value.get(key), str):
                    names[value[key]] = path
            stack.extend((v, (*path, str(k))) for k, v in value.items())
        else:
            stack.extend((v, (*path, str(i))) for i, v in enumerate(value))
    if not refs:
        return  # the nesting check above bounds it
    targets = {t for _, ref in refs if (t := _resolve(ref, names)) is not None and t in containers}
    targets.add(())
    graph: Graph = {_key(t): [] for t in targets}
    own = dict.fromkeys(graph, 1)

    def enclosing(path: Pointer, strict: bool) -> Pointer:
        """The nearest target at or above ``path`` (strictly above when ``strict``)."""
        for cut in range(len(path) - (1 if strict else 0), -1, -1):
            if path[:cut] in targets:
                return path[:cut]
        return ()

    for path, depth in containers.items():  # each object's depth counts for the target it lies in
        top = enclosing(path, strict=False)
        own[_key(top)] = max(own[_key(top)], depth - containers[top] + 1)
    for t in targets:
        if t:
            up = enclosing(t, strict=True)
            graph[_key(up)].append((_key(t), containers[t] - containers[up]))
    for path, ref in refs:
        target = _resolve(ref, names)
        if target in targets:
            top = enclosing(path, strict=False)
            graph[_key(top)].append((_key(target), containers[path] - containers[top] + 1))
    depth, start = deepest(graph, own)
    where = "the schema's root" if start == "#" else start
    _check_depth(param, depth, where, "$refs followed, objects and arrays nested on the way")


def _key(path: Pointer) -> str:
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _resolve(ref: str, names: dict[str, Pointer]) -> Pointer | None:
    """The object a ``$ref`` names: a JSON pointer, an anchor, or an ``$id`` (plus a pointer)."""
    base, _, fragment = ref.partition("#")
    start: Pointer = ()
    if base:
        if base not in names:
            return None  # another document: nothing here to follow
        start = names[base]
    if not fragment:
        return start
    if not fragment.startswith("/"):
        return names.get("#" + fragment, names.get(fragment))
    parts = tuple(unquote(p).replace("~1", "/").replace("~0", "~") for p in fragment[1:].split("/"))
    return (*start, *parts)


# -- Lark ---------------------------------------------------------------------------------------------

# llguidance's lexer (parser/src/lark/lexer.rs): names are rules (lower case) or tokens (upper
# case), "Xr1" is two names; strings are JSON strings on one line; a regex may span lines.
_RULE = re.compile(r"!?[_?]?[a-z][_a-z0-9\-]*")
_TOKEN = re.compile(r"_?[A-Z][_A-Z0-9\-]*")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_HEAD = re.compile(  # a definition starts a line: name, {params}, .priority, [attributes], ":"
    r"[ \t]*(?:%override[ \t]+)?(?P<name>!?[_?]?[a-z][_a-z0-9\-]*|_?[A-Z][_A-Z0-9\-]*)[ \t]*"
    r"(?:\{[^}\n]*\}[ \t]*)?(?:\.[ \t]*[+-]?[0-9]+[ \t]*)?"
    r'(?:\[(?:"(?:[^"\\\n]|\\.)*"|[^\]"\n])*\][ \t]*)?:'
)
_JSON_DIRECTIVE = re.compile(r"%(json|llguidance|regex)(?![A-Za-z0-9_])")
_DECODER = json.JSONDecoder()


def _check_lark(source: str, param: str) -> None:
    graph, own = lark_graph(source, param)
    rules = len(graph) - 1  # less the directives' node
    if rules > MAX_GRAMMAR_RULES:
        raise ParameterError(param, f"{param} must have at most {MAX_GRAMMAR_RULES} rules, got {rules}")
    depth, start = deepest(graph, own)
    _check_depth(param, depth, f"rule {start!r}", "rule references followed, brackets nested on the way")


def lark_graph(source: str, param: str) -> tuple[Graph, dict[str, int]]:
    """The reference graph of a Lark grammar (llguidance's dialect) and each rule's own nesting.

    One pass, tokenizing as llguidance does: comments, strings and regex literals are skipped
    (a regex's groups are checked against :data:`MAX_NESTING`); a line that starts with
    ``name:`` starts a rule; any other name is a reference, weighted by the brackets open
    around it; an embedded ``%json`` schema is checked by :func:`check_schema` and counts its
    nesting where it stands. Directives (``%ignore`` …) belong to a node of their own, ``%``.
    """
    graph: Graph = {"%": []}
    own: dict[str, int] = {"%": 1}
    current, depth = "%", 0
    i, n, line_start = 0, len(source), True
    while i < n:
        if line_start:
            line_start = False
            head = _HEAD.match(source, i)
            if head is not None:
                current, depth = head.group("name").lstrip("!?"), 0
                graph.setdefault(current, [])
                own.setdefault(current, 1)
                i = head.end()
                continue
            k = i
            while k < n and source[k] in " \t":
                k += 1
            if source.startswith("%", k) and not _JSON_DIRECTIVE.match(source, k):
                current, depth = "%", 0  # a statement: %ignore, %import, %declare
        c = source[i]
        if c == "\n":
            line_start = True
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and source[j] not in '"\n':
                j += 2 if source[j] == "\\" else 1
            i = j + 1
        elif c == "#" or source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
        elif c == "/":
            j = i + 1
            while j < n and source[j] != "/":
                j += 2 if source[j] == "\\" else 1
            _check_nesting(param, "groups nested in a regex", regex_nesting(source[i + 1 : j]))
            i = j + 1
        elif c == "%" and (m := _JSON_DIRECTIVE.match(source, i)):
            value, i = _json_prefix(source, m.end(), param)
            check_schema(value, param)
            if m.group(1) == "json":
                own[current] = max(own[current], depth + 1 + _schema_depth(value))
        elif c in "([{":
            depth += 1
            own[current] = max(own[current], depth + 1)
            _check_nesting(param, "brackets nested in a rule", depth)
            i += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
            i += 1
        elif m := (_NUMBER.match(source, i) if c.isdigit() or c in "+-" else None):
            i = m.end()
        elif m := (_RULE.match(source, i) or _TOKEN.match(source, i)):
            graph[current].append((m.group(0).lstrip("!?"), depth + 1))
            i = m.end()
        else:
            i += 1
    return graph, own


def _json_prefix(source: str, i: int, param: str) -> tuple[Any, int]:
    """The JSON value that starts at ``i`` (after whitespace) and the index past it."""
    while i < len(source) and source[i] in " \t\r\n":
        i += 1
    try:
        return _DECODER.raw_decode(source, i)
    except RecursionError as exc:
        raise ParameterError(param, f"{param} embeds JSON nested deeper than {MAX_NESTING} levels") from exc
    except ValueError as exc:
        raise ParameterError(param, f"{param} embeds invalid JSON: {exc}") from exc


def _schema_depth(schema: Any) -> int:
    """Nesting of a (checked) schema: its objects and arrays."""
    deepest_, stack = 0, [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest_ = max(deepest_, depth)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest_


# -- regexes ------------------------------------------------------------------------------------------


def regex_nesting(pattern: str) -> int:
    """How deep groups nest in a regex (a character class counts one level); linear."""
    depth = top = 0
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            top = max(top, depth + 1)
            if pattern.startswith("]", i + 1) or pattern.startswith("^]", i + 1):
                i += 2 if pattern[i + 1] == "]" else 3  # a literal "]" first in the class
                continue
        elif c == "(":
            depth += 1
            top = max(top, depth)
        elif c == ")":
            depth = max(0, depth - 1)
        i += 1
    return top


# -- the reference graph ---------------------------------------------------------------------------------


def deepest(graph: Graph, own: dict[str, int]) -> tuple[int, str]:
    """An upper bound of the deepest walk through ``graph``, and the node it starts from.

    A node's depth is the most of its ``own`` nesting and, over its references, the levels
    the reference adds plus the referenced node's depth (an undefined name adds only its
    levels). Recursive rules form strongly connected parts (Tarjan's algorithm, iterative);
    a simple walk passes each member of such a part at most once, so the part counts as the
    sum of its members' heaviest inner references. Linear in nodes plus references.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    part: dict[str, int] = {}
    members: list[list[str]] = []  # parts in reverse topological order (a part after those it reaches)
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[tuple[str, int]]]] = [(root, iter(graph[root]))]
        while work:
            u, edges = work[-1]
            pushed = False
            for v, _ in edges:
                if v not in graph:
                    continue
                if v not in index:
                    index[v] = low[v] = len(index)
                    stack.append(v)
                    on_stack.add(v)
                    work.append((v, iter(graph[v])))
                    pushed = True
                    break
                if v in on_stack:
                    low[u] = min(low[u], index[v])
            if pushed:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[u])
            if low[u] == index[u]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    part[w] = len(members)
                    group.append(w)
                    if w == u:
                        break
                members.append(group)
    best: list[int] = []
    for p, group in enumerate(members):
        inner = [max((w for v, w in graph[u] if part.get(v) == p), default=0) for u in group]
        cyclic = len(group) > 1 or inner[0] > 0
        out = max(own.get(u, 1) for u in group)
        for u in group:
            for v, w in graph[u]:
                q = part.get(v)
                if q is None:
                    out = max(out, w)
                elif q != p:
                    out = max(out, w + best[q])
        best.append((sum(inner) if cyclic else 0) + out)
    if not best:
        return 0, ""
    top = max(range(len(best)), key=best.__getitem__)
    return best[top], members[top][-1]
