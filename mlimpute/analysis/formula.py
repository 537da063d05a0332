"""lme4-style mixed-model formulas: split off the ``( … | group)`` bars, hand the rest to formulaic.

Only the outermost layer of the right-hand side is read here: it is cut at its top-level ``+``
and ``-`` signs, and a piece that is a parenthesised ``expr | group`` (or ``expr || group``)
becomes a random term. Everything else -- the fixed part and each random term's ``expr`` -- is
left to formulaic, so ``C(g)``, ``x:z``, ``np.log(x)``, ``0 + x`` mean what they mean there.

Grammar of the bars (as in lme4):

- ``(1 + x | g)``: correlated random intercept and slope for the levels of column ``g``;
- ``(0 + x | g)`` or ``(x - 1 | g)``: a random slope without intercept;
- ``(1 + x || g)``: uncorrelated terms, one per model-matrix column of ``1 + x``;
- ``(1 | a:b)``: grouping by the combinations of ``a`` and ``b``;
- ``(1 | a/b)``: nesting, the same as ``(1 | a) + (1 | a:b)``;
- ``(1 | mm(s1, s2, s3, weights = (w1, w2, w3)))``: multiple membership (Browne, Goldstein &
  Rasbash 2001): a row belongs to the units named in ``s1, s2, s3`` with weights ``w1, w2, w3``
  (without ``weights =``, equal weights over the ids present in the row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SpecError

__all__ = ["Membership", "RandomTerm", "ParsedFormula", "parse_formula", "intercept_dropped"]

_NAME = re.compile(r"^(?:(?:[^\W\d]|\.)[\w.]*|`[^`]+`)$")   # identifiers (Unicode too), R's dots, `anything`
_MM = re.compile(r"^mm\s*\((.*)\)$", re.DOTALL)
_WEIGHTS = re.compile(r"^weights\s*=\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Membership:
    """The columns of an ``mm( … )`` grouping: one id column and one weight column per membership.

    Attributes
    ----------
    ids : tuple of str
        Columns holding the ids of the units a row belongs to (missing where it has fewer).
    weights : tuple of str or None
        Columns holding the weights, in the order of ``ids``; None: equal weights over the ids
        present in the row.
    """

    ids: tuple[str, ...]
    weights: tuple[str, ...] | None


@dataclass(frozen=True)
class RandomTerm:
    """One ``(expr | group)`` bar term.

    Attributes
    ----------
    expr : str
        The left of the bar, a formulaic right-hand side (``"1 + x"``, ``"0 + x"``).
    group : tuple of str
        Columns whose combinations define the grouping factor.
    correlated : bool
        False for ``||``: the columns of ``expr`` get independent random effects.
    text : str
        The term as written (for messages).
    membership : Membership or None
        Set for a multiple-membership grouping ``mm( … )``; ``group`` is then its id columns.
    """

    expr: str
    group: tuple[str, ...]
    correlated: bool
    text: str
    membership: Membership | None = None

    @property
    def group_label(self) -> str:
        """Name of the grouping factor: the columns joined by ``:``, or ``mm(s1, s2)``."""
        if self.membership is not None:
            return f"mm({', '.join(self.group)})"
        return ":".join(self.group)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column of the grouping (for ``mm( … )`` the id and weight columns)."""
        if self.membership is None or self.membership.weights is None:
            return self.group
        return self.group + self.membership.weights


@dataclass(frozen=True)
class ParsedFormula:
    """A mixed-model formula cut into response, fixed part and random terms."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]


def _scan(text: str):
    """Yield ``(index, char, depth, call_stack)`` for the characters outside quotes.

    ``call_stack`` records for every open parenthesis whether it is a function call (preceded
    by a name, like ``C(`` or ``I(``) or a grouping parenthesis.
    """
    depth = 0
    stack: list[bool] = []
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote is not None:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
            continue
        if ch in "([{":
            before = text[:i].rstrip()
            stack.append(bool(before) and (before[-1].isalnum() or before[-1] in "_.]"))
            depth += 1
            yield i, ch, depth - 1, tuple(stack[:-1])
            continue
        if ch in ")]}":
            if depth == 0:
                raise SpecError(f"formula {text!r} has an unmatched {ch!r}; balance the parentheses")
            depth -= 1
            stack.pop()
        yield i, ch, depth, tuple(stack)
    if quote is not None:
        raise SpecError(f"formula {text!r} has an unclosed quote {quote}; close it")
    if depth != 0:
        raise SpecError(f"formula {text!r} has an unclosed '('; balance the parentheses")


def _split_top(rhs: str) -> list[tuple[str, str]]:
    """Cut ``rhs`` at its top-level ``+``/``-`` signs into ``(sign, piece)`` pairs."""
    pieces: list[tuple[str, str]] = []
    sign, start = "+", 0
    for i, ch, depth, _ in _scan(rhs):
        if depth == 0 and ch in "+-":
            # "**" and "e-3" style exponents stay inside their piece
            prev = rhs[:i].rstrip()
            if ch == "-" and prev and prev[-1] in "eE" and prev[:-1][-1:].isdigit():
                continue
            pieces.append((sign, rhs[start:i].strip()))
            sign, start = ch, i + 1
    pieces.append((sign, rhs[start:].strip()))
    return pieces


def intercept_dropped(rhs: str) -> str | None:
    """For a variance formula's right-hand side that removes the intercept (``0 + sex``,
    ``sex - 1``), the same formula with the intercept kept (``sex``); None if it keeps it. A
    variance function's intercept is the baseline variance itself, which cannot be left out."""
    pieces = _split_top(rhs)
    marks = {("+", "0"): False, ("-", "1"): False, ("+", "1"): True, ("-", "0"): True}
    kept_intercept = True
    for piece in pieces:   # the last mark wins, as in R: ``x - 1 + 1`` keeps it, ``x + 1 - 1`` not
        kept_intercept = marks.get(piece, kept_intercept)
    if kept_intercept:
        return None
    kept = [p if sg == "+" else f"- {p}" for sg, p in pieces if p and (sg, p) not in marks]
    return " + ".join(kept).replace("+ -", "-")


def _bar_position(piece: str) -> tuple[int, int] | None:
    """Position and width of the bar inside a piece that is one ``( … )``, else None."""
    if not (piece.startswith("(") and piece.endswith(")")):
        return None
    found: tuple[int, int] | None = None
    for i, ch, depth, _ in _scan(piece):
        if depth == 0 and ch == ")" and i != len(piece) - 1:
            return None  # "(a) + (b)"-like: the outer parentheses do not wrap the whole piece
        if depth == 1 and ch == "|":
            if found is not None and found[0] == i - 1 and found[1] == 1:
                found = (i - 1, 2)
            elif found is None:
                found = (i, 1)
            else:
                raise SpecError(f"random term {piece!r} has more than one bar; write one (expr | group) per term")
    return found


def _has_grouping_bar(piece: str) -> bool:
    """True if ``piece`` holds a ``|`` that is not inside a function call such as ``I(a | b)``."""
    return any(ch == "|" and not any(stack) for _, ch, _, stack in _scan(piece))


def _split_commas(text: str) -> list[str]:
    """Cut ``text`` at its top-level commas."""
    cuts = [i for i, ch, depth, _ in _scan(text) if ch == "," and depth == 0]
    return [text[a + 1 : b].strip() for a, b in zip([-1] + cuts, cuts + [len(text)])]


def _column(name: str, term: str, what: str) -> str:
    if not _NAME.match(name):
        raise SpecError(
            f"{what} {name!r} in random term {term!r} is not a column name; write "
            "mm(s1, s2, weights = (w1, w2)) with the id and weight columns of the data"
        )
    return name.strip("`")


def _parse_membership(inner: str, term: str) -> Membership:
    """``"s1, s2, weights = (w1, w2)"`` -> ``Membership(("s1", "s2"), ("w1", "w2"))``."""
    ids: list[str] = []
    weights: list[str] | None = None
    for arg in _split_commas(inner):
        kw = _WEIGHTS.match(arg)
        if kw is not None:
            if weights is not None:
                raise SpecError(f"random term {term!r} gives weights twice; write one weights = (w1, w2, ...)")
            value = kw.group(1).strip()
            if value.startswith("c("):
                value = value[1:]
            if not (value.startswith("(") and value.endswith(")")):
                raise SpecError(
                    f"weights in random term {term!r} must be a parenthesised list of columns like "
                    f"weights = (w1, w2), got {value!r}"
                )
            weights = [_column(w, term, "weight column") for w in _split_commas(value[1:-1])]
        elif "=" in arg:
            raise SpecError(f"mm() in random term {term!r} has an unknown argument {arg!r}; its only keyword is weights")
        else:
            if weights is not None:
                raise SpecError(f"random term {term!r}: the id columns of mm() come before weights = (...)")
            ids.append(_column(arg, term, "membership id column"))
    if not ids:
        raise SpecError(f"mm() in random term {term!r} names no id column; write mm(s1, s2, weights = (w1, w2))")
    if len(set(ids)) != len(ids):
        raise SpecError(f"mm() in random term {term!r} names an id column twice; name each column once")
    if weights is not None and set(ids) & set(weights):
        both = ", ".join(sorted(set(ids) & set(weights)))
        raise SpecError(f"mm() in random term {term!r} uses {both} both as ids and as weights; name other columns")
    if weights is not None and len(weights) != len(ids):
        raise SpecError(
            f"mm() in random term {term!r} has {len(ids)} id columns but {len(weights)} weight columns; "
            "give one weight column per id column, in the same order"
        )
    return Membership(ids=tuple(ids), weights=None if weights is None else tuple(weights))


def _parse_group(text: str, term: str) -> list[tuple[str, ...]]:
    """``"a/b"`` -> ``[("a",), ("a", "b")]``; ``"a:b"`` -> ``[("a", "b")]``."""
    nested = [part.strip() for part in text.split("/")]
    out: list[tuple[str, ...]] = []
    prefix: tuple[str, ...] = ()
    for part in nested:
        names = tuple(name.strip() for name in part.split(":"))
        for name in names:
            if not _NAME.match(name):
                quoted = re.fullmatch(r"""Q\(\s*(["'])(.+)\1\s*\)""", name)
                hint = (f"; a name with spaces or symbols goes in backticks there: `{quoted.group(2)}`"
                        if quoted else "")
                raise SpecError(
                    f"grouping factor {name!r} in random term {term!r} is not a column name; "
                    f"write a column (school), an interaction (school:class) or nesting (school/class){hint}"
                )
        prefix = prefix + tuple(n.strip("`") for n in names)
        out.append(prefix)
    return out


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4-style formula into response, fixed right-hand side and random terms.

    Parameters
    ----------
    formula : str
        For example ``"y ~ x + C(g) + x:z + (1 + x | school) + (1 | class)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    SpecError
        Not a two-sided formula, unbalanced parentheses, a bar term that is not added with
        ``+``, an empty side of a bar, or a grouping factor that is not made of column names.
    """
    if not isinstance(formula, str):
        raise SpecError(f"formula must be a string like 'y ~ x + (1 | g)', got {type(formula).__name__}")
    tildes = [i for i, ch, depth, _ in _scan(formula) if ch == "~" and depth == 0]
    if len(tildes) != 1:
        raise SpecError(f"formula {formula!r} must have exactly one '~' with the response on its left, like 'y ~ x + (1 | g)'")
    lhs, rhs = formula[: tildes[0]].strip(), formula[tildes[0] + 1 :].strip()
    if not lhs:
        raise SpecError(f"formula {formula!r} has no response; write it as 'y ~ ...'")
    if not rhs:
        raise SpecError(f"formula {formula!r} has an empty right-hand side; write at least '1'")
    fixed: list[tuple[str, str]] = []
    random: list[RandomTerm] = []
    for sign, piece in _split_top(rhs):
        if not piece:
            if sign == "-" or fixed or random:
                raise SpecError(f"formula {formula!r} has an empty term next to a '{sign}' sign; remove the extra sign")
            continue
        bar = _bar_position(piece)
        if bar is None:
            if any(ch == "|" and depth == 0 for _, ch, depth, _ in _scan(piece)):
                raise SpecError(
                    f"formula {formula!r}: the bar in {piece!r} is not inside parentheses; "
                    "write random terms as '(1 | g)'"
                )
            if _has_grouping_bar(piece):
                raise SpecError(
                    f"formula {formula!r}: {piece!r} mixes a random term with other terms; "
                    "random terms must stand alone in parentheses and be added with '+', like '+ (1 | g)'"
                )
            if piece.strip() == ".":
                raise SpecError(f"formula {formula!r}: '.' (R's all other columns) is not read here; "
                                "name the predictors, e.g. 'y ~ x1 + x2 + (1 | g)'")
            fixed.append((sign, piece))
            continue
        if sign == "-":
            raise SpecError(f"formula {formula!r} subtracts the random term {piece!r}; random terms can only be added")
        pos, width = bar
        expr, group = piece[1:pos].strip(), piece[pos + width : -1].strip()
        if not expr or not group:
            raise SpecError(
                f"random term {piece!r} needs an expression and a grouping factor on both sides of the bar, like (1 | school)"
            )
        mm = _MM.match(group)
        if mm is not None:
            membership = _parse_membership(mm.group(1), piece)
            random.append(RandomTerm(expr=expr, group=membership.ids, correlated=(width == 1), text=piece,
                                     membership=membership))
            continue
        if "mm(" in group.replace(" ", ""):
            raise SpecError(
                f"random term {piece!r} combines mm() with other grouping factors; a multiple-membership "
                "grouping stands alone, like (1 | mm(s1, s2, weights = (w1, w2)))"
            )
        for columns in _parse_group(group, piece):
            random.append(RandomTerm(expr=expr, group=columns, correlated=(width == 1), text=piece))
    fixed_rhs = " ".join(f"{sign} {piece}" for sign, piece in fixed).strip()
    if fixed_rhs.startswith("+"):
        fixed_rhs = fixed_rhs[1:].strip()
    if not fixed_rhs:
        fixed_rhs = "1"
    elif fixed_rhs.startswith("-"):
        fixed_rhs = "1 " + fixed_rhs
    return ParsedFormula(text=formula, response=lhs, fixed=fixed_rhs, random=tuple(random))
