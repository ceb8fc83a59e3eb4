"""`compare --where`: a filter parsed here into column comparisons, never evaluated as code.

pandas' query() evaluates Python with `@` access to its caller's scope (and through it to
os.system); a filter typed by a user, or pasted from someone's notes, must not run anything.
The grammar is small on purpose:

    filter     := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" or ")" | comparison
    comparison := operand ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
    operand    := column | number | 'string' | "string" | true | false | null

A column is a name as the table shows it (epochs, layers.0.units, test_accuracy), its full
dotted name (training.epochs) or `in backticks`.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import pandas as pd

from dlrun.errors import QueryError
from dlrun.spec.keys import ending_in

MAX_LENGTH = 2000
MAX_DEPTH = 50
EXAMPLE = "e.g. \"training.epochs >= 5 and status == 'completed'\""
_OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
    |(?P<string>'[^']*'|"[^"]*")
    |(?P<op>==|!=|<=|>=|<|>|\(|\))
    |(?P<quoted>`[^`]+`)
    |(?P<name>[A-Za-z_][\w.\-/]*)
    )""",
    re.VERBOSE,
)
_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}
_WORDS = ("and", "or", "not")


def _tokens(expression: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            rest = text[position:].strip()[:20]
            raise QueryError(f"--where: cannot read {rest!r}; {EXAMPLE}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, frame: pd.DataFrame, tokens: list[tuple[str, str]]):
        self.frame, self.tokens, self.at, self.depth = frame, tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise QueryError(f"--where: the filter ends too early; {EXAMPLE}")
        self.at += 1
        return token

    def word(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "name" and token[1].lower() == word:
            self.at += 1
            return True
        return False

    def parse(self) -> pd.Series:
        mask = self.any_of()
        if self.peek() is not None:
            raise QueryError(f"--where: unexpected {self.peek()[1]!r}; {EXAMPLE}")
        return mask

    def any_of(self) -> pd.Series:
        mask = self.all_of()
        while self.word("or"):
            mask = mask | self.all_of()
        return mask

    def all_of(self) -> pd.Series:
        mask = self.negation()
        while self.word("and"):
            mask = mask & self.negation()
        return mask

    def negation(self) -> pd.Series:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"--where: nested deeper than {MAX_DEPTH} levels")
        try:
            if self.word("not"):
                return ~self.negation()
            if self.peek() == ("op", "("):
                self.take()
                mask = self.any_of()
                if self.take() != ("op", ")"):
                    raise QueryError(f"--where: expected ')'; {EXAMPLE}")
                return mask
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> pd.Series:
        left = self.operand()
        token = self.peek()
        if token is None or token[0] != "op" or token[1] not in _OPERATORS:
            raise QueryError(f"--where: expected a comparison (==, !=, <, <=, >, >=); {EXAMPLE}")
        self.take()
        right = self.operand()
        if not any(isinstance(side, pd.Series) for side in (left, right)):
            raise QueryError(f"--where: a comparison needs a column on one side; {EXAMPLE}")
        return _compare(_OPERATORS[token[1]], left, right)

    def operand(self) -> Any:
        kind, text = self.take()
        if kind == "number":
            return float(text)
        if kind == "string":
            return text[1:-1]
        if kind == "quoted":
            return self.column(text[1:-1])
        if kind == "name":
            if text.lower() in _CONSTANTS:
                return _CONSTANTS[text.lower()]
            if text.lower() in _WORDS:
                raise QueryError(f"--where: unexpected {text!r}; {EXAMPLE}")
            return self.column(text)
        raise QueryError(f"--where: unexpected {text!r}; {EXAMPLE}")

    def column(self, name: str) -> pd.Series:
        """A column by its full name, or by the last parts the table shows (layers.0.units)."""
        if name not in self.frame.columns:
            endings = ending_in(name, list(self.frame.columns))
            if len(endings) == 1:
                return self.frame[endings[0]]
            if endings:
                raise QueryError(
                    f"--where: {name!r} could be {', '.join(endings[:10])}; give more of it, "
                    f"e.g. {endings[0]}"
                )
            shown = ", ".join(map(str, list(self.frame.columns)[:30]))
            raise QueryError(f"--where: no column {name!r}; columns are {shown}")
        return self.frame[name]


def _compare(op, left: Any, right: Any) -> pd.Series:
    """Numbers compare as numbers (cells that are not numbers never match), else as text."""
    values = [left, right]
    if any(isinstance(v, float) for v in values):
        values = [
            pd.to_numeric(v, errors="coerce") if isinstance(v, pd.Series) else v for v in values
        ]
    elif any(isinstance(v, str) for v in values):
        values = [v.astype(str) if isinstance(v, pd.Series) else v for v in values]
    elif any(v is None for v in values):
        series = next(v for v in values if isinstance(v, pd.Series))
        if op in (operator.eq, operator.ne):
            return series.isna() if op is operator.eq else series.notna()
        raise QueryError("--where: null compares only with == or !=")
    try:
        result = op(*values)
    except TypeError as exc:
        raise QueryError(f"--where: cannot compare these ({exc})") from None
    return (
        pd.Series(result, index=next(v for v in values if isinstance(v, pd.Series)).index)
        .fillna(False)
        .astype(bool)
    )


def filter_rows(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """The rows of `frame` for which the --where expression holds."""
    if len(expression) > MAX_LENGTH:
        raise QueryError(f"--where: longer than {MAX_LENGTH} characters")
    tokens = _tokens(expression)
    if not tokens:
        raise QueryError(f"--where: empty filter; {EXAMPLE}")
    return frame[_Parser(frame, tokens).parse().to_numpy()]
