"""The substantive (analysis) model of substantive-model-compatible imputation: data + formula →
the outcome's arrays and a compiled *design program*.

The imputation model of ``ImputationModel(..., substantive=formula)`` is
``p(y | covariates, θ_y) · p(incomplete covariates | complete covariates, θ_(6))``: the analysis
model of the outcome y times the joint latent-normal model (6) of the incomplete covariates
(Goldstein, Carpenter & Browne 2014). The sampler must re-evaluate the analysis model's design
row of a unit every time one of its imputed covariates changes, millions of times per run, so
the formula is compiled here, once, into a small program that compiled code evaluates::

    D[i, c] = const_c · Π_{primitives k of column c} prim_k(S[i, src_k])
    prim_k(s) = s ** power_k                    (POWER: a number, e.g. x, x**2, a complete column)
              = table[t_k, int(s)]              (TABLE: a category code looked up, e.g. a dummy)

``S`` holds one column per *source*: every incomplete variable of the formula (its current value,
or its current category code) and every complete factor the formula needs (evaluated once by
formulaic). The columns of ``D`` are the fixed-effect columns then the random-effect columns,
in formulaic's order and coding (treatment or any other contrasts, reduced or full rank as
formulaic's structure decides); the program is checked against formulaic's model matrix on the
data before any sampling, so the imputation model and the analysis that ``mi.lmm`` fits on the
completed data have the same columns.

Supported terms of an *incomplete* variable ``x``: ``x``, ``C(x)`` (any contrasts), powers and
products through ``I()`` (``I(x**2)``, ``I(x*z)``, ``I(x**2*z/2)``), and interactions of any order
of those with anything. Other transforms of an incomplete variable (``np.log(x)``, ``center(x)``,
``poly(x, 2)``) are refused before sampling: the variable to impute would be ``log(x)``.

References
----------
Goldstein, H., Carpenter, J. R., & Browne, W. J. (2014). Fitting multilevel multivariate models
with missing data in responses and covariates that may include interactions and non-linear
terms. JRSS A, 177(2), 553-564.
"""

from __future__ import annotations

import ast
import itertools
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from formulaic import model_matrix
from formulaic.errors import FormulaicError

from .analysis._design import formula_columns, formula_frame, power_hint, r_call_hint
from .analysis.formula import ParsedFormula, parse_formula
from .errors import ConvergenceWarning, DataError, SpecError
from .identification import dependent_column, separating_direction
from .spec import ImputationModel

__all__ = ["Program", "OutcomeData", "build_outcome", "probe_frame", "substantive_variables", "POWER", "TABLE"]

POWER, TABLE = 0, 1


@dataclass(frozen=True, eq=False)
class Program:
    """The compiled design of the substantive model (see the module notes).

    Columns ``0..n_fixed-1`` are the fixed effects, the rest the random effects. ``col_ptr``
    delimits each column's primitives in ``src``/``kind``/``par`` (``par`` is the power or the
    table index); ``dep_ptr``/``dep_cols`` list, per source, the columns that read it.
    ``linear[s]``: every column is affine in source s (so its conditional given the outcome is
    normal when the outcome is); ``quadratic[s]``: not affine, but every column a polynomial of
    degree at most 2 in source s (``x + I(x**2)``, ``x**2:z``), so that each row's linear
    predictor is symmetric about a vertex (the cells' reflection move).
    """

    const: np.ndarray
    col_ptr: np.ndarray
    src: np.ndarray
    kind: np.ndarray
    par: np.ndarray
    tables: np.ndarray
    dep_ptr: np.ndarray
    dep_cols: np.ndarray
    linear: np.ndarray
    quadratic: np.ndarray
    n_fixed: int

    @property
    def n_cols(self) -> int:
        return int(self.const.size)

    def evaluate(self, S: np.ndarray) -> np.ndarray:
        """The design matrix ``D`` (rows of S × columns), in numpy (set-up and tests only)."""
        D = np.repeat(self.const[None, :], S.shape[0], axis=0)
        for c in range(self.n_cols):
            for k in range(self.col_ptr[c], self.col_ptr[c + 1]):
                s = S[:, self.src[k]]
                if self.kind[k] == POWER:
                    D[:, c] *= s ** self.par[k]
                else:
                    D[:, c] *= self.tables[int(self.par[k])][s.astype(np.int64)]
        return D


@dataclass(frozen=True, eq=False)
class Source:
    """One column of S: an incomplete variable (``codec`` its name) or a complete factor."""

    name: str
    codec: str | None          # the imputed variable it follows, None if complete
    level: int                 # 1 or 2 (of the imputed variable)
    categorical: bool          # holds a category code rather than a value


@dataclass(frozen=True, eq=False)
class OutcomeData:
    """The outcome and the substantive model's design, rows in the model's sorted order.

    ``y``: outcome values (0/1 for binary), NaN where missing; ``S0``: the sources, with the
    columns of incomplete variables to be filled by the sampler; ``blocks``: (start, width) of
    each covariance block of the random effects (one per random term, one per column of a
    ``||`` term); ``start``: starting values and prior scales from a complete-case fit.
    """

    name: str
    family: str
    link: str
    codec: object                       # design.ColumnCodec of the outcome (level 1)
    y: np.ndarray
    observed: np.ndarray
    program: Program
    sources: tuple[Source, ...]
    S0: np.ndarray
    x_names: tuple[str, ...]
    z_names: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]
    z_class: tuple[str, ...]              # each random-effect column's classification (its name)
    beta0: np.ndarray
    cov0: np.ndarray
    sigma2_0: float
    prior_scale: np.ndarray
    prior_df: float | None               # stated df of every covariance block (None: each its width)
    sigma2_prior: float

    @property
    def n_fixed(self) -> int:
        return len(self.x_names)

    @property
    def q(self) -> int:
        return len(self.z_names)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------
def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == "`" else name


def parse_substantive(model: ImputationModel) -> ParsedFormula:
    """Parse and check ``model.substantive`` against the model's roles (no data needed)."""
    parsed = parse_formula(model.substantive)
    y = _unquote(parsed.response)
    quoted = parsed.response.strip().startswith("`")   # `my y`: any name, as in the analysis
    if not y or (not quoted and any(ch in y for ch in "()+*/:^ ")):
        raise SpecError(
            f"the outcome of substantive={model.substantive!r} is {parsed.response!r}; it must be a "
            "column name (transform the outcome in the data before imputing, e.g. a column log_y)"
        )
    if y in model.variables:
        raise SpecError(
            f"the outcome {y!r} of substantive= is also listed in variables=; the substantive model "
            "imputes the outcome itself: remove it from variables"
        )
    if y in model.covariates or y in model.level2_covariates or y in model.cluster_columns:
        raise SpecError(
            f"the outcome {y!r} of substantive= is also a covariate or the cluster of the imputation "
            "model; give it one role"
        )
    _outcome_not_read(y, substantive_variables(parsed), model.substantive)
    if not parsed.random:
        last = model.classifications[-1]
        example = (f"mm({', '.join(last.columns)}, weights = ({', '.join(last.weights)}))"
                   if last.kind == "membership" else last.name)
        raise SpecError(
            f"substantive={model.substantive!r} has no random term; a multilevel analysis model "
            f"needs one, e.g. '+ (1 | {example})'"
        )
    seen: dict[int, str] = {}
    for term in parsed.random:
        ci = term_classification(model, term)
        if model.two_level:
            continue
        if ci in seen and seen[ci] != term.group_label:
            raise SpecError(
                f"random terms {seen[ci]!r} and {term.group_label!r} of substantive= both group by the "
                f"classification {model.classifications[ci].name!r}; spell its grouping one way"
            )
        seen[ci] = term.group_label
    read = substantive_variables(parsed) & set(model.cluster_columns)
    weights = {w for c in model.classifications for w in c.weights}
    if read & weights:
        name = sorted(read & weights)[0]
        raise SpecError(
            f"substantive={model.substantive!r} reads {name!r}, a weight column of the multiple membership, "
            "outside its mm() term; the imputation model takes the weights as its structure, not as a "
            "covariate: leave it out of the fixed part (or copy it to a column of another name)"
        )
    if read:
        name = sorted(read)[0]
        raise SpecError(
            f"substantive={model.substantive!r} reads the cluster column {name!r} outside its "
            f"random terms; the random intercept of {name!r} already takes the clusters' "
            "differences: remove it from the fixed part (or use a cluster-level covariate)"
        )
    return parsed


def dispersion_note(model: ImputationModel | None, formula: str, dispersion: str | None) -> str | None:
    """What to say of an analysis with a variance function of the substantive model's outcome:
    the outcome was imputed with a constant residual variance, so the completed data carry no
    variance function and the analysis finds it attenuated (a helper's check, 4 replications:
    γ 0.67–0.81 for a truth of 1.39; the joint model with ``variance=`` 1.31–1.51). None when
    that is not the case."""
    if dispersion is None or model is None or getattr(model, "substantive", None) is None:
        return None
    response = _unquote(parse_formula(formula).response)
    if response != model.outcome:
        return None
    return (
        f"the analysis {formula!r} gives {response!r} the variance function {dispersion!r}, but {response!r} was "
        f"imputed from substantive={model.substantive!r}, whose residual variance is constant: the imputed values "
        "carry no variance function, so its coefficients come out attenuated toward 0; impute "
        f"{response!r} with the joint model instead, listed in variables= with variance={dispersion!r}"
    )


def _outcome_not_read(y: str, read: set[str], formula: str) -> None:
    if y in read:
        raise SpecError(
            f"the outcome {y!r} of substantive={formula!r} also appears on its right-hand side; an analysis "
            f"model does not explain {y!r} by itself: remove it from the fixed part and the random terms"
        )


def term_classification(model: ImputationModel, term) -> int:
    """The classification (index into ``model.classifications``) a random term of the
    substantive formula groups by: its column (``(1 | g)``) or, for a nested classification,
    the combination of its columns (``(1 | school:class)``) or its own column (``(1 | class)``:
    the data must then give each class one school, checked by ``check_nested_grouping``); a
    multiple membership ``mm(s1, s2, weights = (w1, w2))`` of the same ids and weights."""
    classes = model.classifications
    if model.two_level:
        if term.group != (model.cluster,):
            fix = ("the two must name the same column: fix whichever is misspelt" if len(term.group) == 1 else
                   f"a nested grouping needs the classifications in the imputation model: "
                   f"cluster={list(term.group)!r} (outermost first)" if term.group[0] == model.cluster else
                   "the imputation model must have these classifications: give cluster= all of them "
                   "(a list for nesting, mi.Crossed(...) for crossed ones)")
            raise SpecError(
                f"random term {term.text!r} of substantive= is grouped by {term.group_label!r}, but "
                f"the imputation model's cluster is {model.cluster!r}; {fix}"
            )
        return 0
    if term.membership is not None:
        ms = term.membership
        for k, c in enumerate(classes):
            if c.kind == "membership" and set(ms.ids) == set(c.columns):
                pairs = dict(zip(c.columns, c.weights))
                if ms.weights is None or dict(zip(ms.ids, ms.weights)) != pairs:
                    given = "no weights" if ms.weights is None else f"weights {', '.join(ms.weights)}"
                    raise SpecError(
                        f"random term {term.text!r} of substantive= gives {given} for the multiple "
                        f"membership {c.name!r}, whose weights are {', '.join(c.weights)}: write "
                        f"mm({', '.join(c.columns)}, weights = ({', '.join(c.weights)})) so that the "
                        "analysis weighs the units as the imputation does"
                    )
                return k
        raise SpecError(
            f"random term {term.text!r} of substantive= is a multiple membership of "
            f"{', '.join(ms.ids)}, which is not a classification of the imputation model (its groupings: "
            f"{_spellings(classes)}); give it as cluster=mi.Membership([...], [...]) too, or drop the term"
        )
    for k, c in enumerate(classes):
        if c.kind != "membership" and (term.group == (c.name,) or set(term.group) == set(c.columns)):
            return k
    raise SpecError(
        f"random term {term.text!r} of substantive= is grouped by {term.group_label!r}, which is not a "
        f"classification of the imputation model; its groupings are {_spellings(classes)}: group by one "
        "of those, or add it to cluster="
    )


def _spellings(classes) -> str:
    """How a random term names each classification."""
    out = []
    for c in classes:
        if c.kind == "membership":
            out.append(f"mm({', '.join(c.columns)}, weights = ({', '.join(c.weights)}))")
        elif len(c.columns) > 1:
            out.append(f"{':'.join(c.columns)} (or {c.name} if its ids are unique)")
        else:
            out.append(c.name)
    return ", ".join(out)


def substantive_variables(parsed: ParsedFormula, columns=()) -> set[str]:
    """Columns the right-hand side of the formula reads (grouping factors excluded); with the
    data's ``columns``, the arguments of stateful transforms too (``formula_columns``)."""
    out: set[str] = set()
    for rhs in [parsed.fixed, *(t.expr for t in parsed.random)]:
        out |= formula_columns(rhs, "right-hand side of substantive=", columns)
    return out


# --------------------------------------------------------------------------------------------
# Compiling factors into primitives
# --------------------------------------------------------------------------------------------
class _Compiler:
    """Collects sources, tables and the primitives of every design column."""

    def __init__(self, probe: pd.DataFrame, codecs: dict, where: str):
        self.probe = probe
        self.codecs = codecs            # incomplete variable name → ColumnCodec
        self.where = where
        self.sources: list[Source] = []
        self.columns: list[np.ndarray] = []   # values of complete sources (None for incomplete)
        self.tables: list[np.ndarray] = []
        self._index: dict[str, int] = {}

    # sources ---------------------------------------------------------------------------------
    def incomplete(self, name: str) -> int:
        if name not in self._index:
            codec = self.codecs[name]
            self._index[name] = len(self.sources)
            self.sources.append(Source(name, name, codec.level, codec.kind != "continuous"))
            self.columns.append(None)
        return self._index[name]

    def complete(self, key: str, values: np.ndarray, categorical: bool = False) -> int:
        if key not in self._index:
            self._index[key] = len(self.sources)
            self.sources.append(Source(key, None, 1, categorical))
            self.columns.append(np.asarray(values, dtype=float))
        return self._index[key]

    def table(self, values: np.ndarray) -> int:
        self.tables.append(np.asarray(values, dtype=float))
        return len(self.tables) - 1

    # factors ---------------------------------------------------------------------------------
    def factor_columns(self, sfactor, enc_state: dict, variables: set[str]) -> list[list[tuple]]:
        """The coded columns of one scoped factor, each a list of primitives (src, kind, par),
        with a constant folded in as ``("const", c)``."""
        expr = sfactor.factor.expr
        kind, state = enc_state.get(expr, (None, {}))
        incomplete = sorted(v for v in variables if v in self.codecs)
        categorical = getattr(kind, "value", kind) == "categorical"
        if not incomplete:
            return self._complete_factor(expr, categorical, state, sfactor.reduced)
        bare = _unquote(expr)
        if categorical:
            name = bare if bare in self.codecs else _c_argument(expr, self.codecs)
            if name is None:
                raise self._refuse(expr, incomplete)
            return self._coded(name, expr, state, sfactor.reduced)
        if bare in self.codecs:
            return [[self._numeric_power(bare, 1, expr)]]
        if expr.startswith("I(") and expr.endswith(")"):
            return [self._monomial(expr, incomplete)]
        raise self._refuse(expr, incomplete)

    def _refuse(self, expr: str, incomplete: list[str]) -> SpecError:
        return SpecError(
            f"term {expr!r} of {self.where} transforms the incomplete variable(s) "
            f"{', '.join(map(repr, incomplete))} in a way the substantive-model sampler cannot "
            "re-evaluate: use the variable itself, C(x), powers and products through I() "
            "(I(x**2), I(x*z)) and interactions; or transform the variable in the data first and "
            "impute the transformed column"
        )

    def _numeric_power(self, name: str, power: int, expr: str) -> tuple:
        codec = self.codecs[name]
        s = self.incomplete(name)
        if codec.kind == "continuous":
            return (s, POWER, float(power))
        try:
            values = np.array([float(c) for c in codec.categories]) ** power
        except (TypeError, ValueError):
            raise SpecError(
                f"term {expr!r} of {self.where} uses the categories of {name!r} "
                f"({list(codec.categories)[:5]}) as numbers, but they are not numbers; write C({name})"
            ) from None
        return (s, TABLE, float(self.table(values)))

    def _coded(self, name: str, expr: str, state: dict, reduced: bool) -> list[list[tuple]]:
        codec = self.codecs[name]
        contrasts = state.get("contrasts")
        levels = list(contrasts.levels) if contrasts is not None else list(state.get("categories", []))
        position = {}
        for k, cat in enumerate(codec.categories):
            match = [i for i, lev in enumerate(levels) if _same(lev, cat)]
            if not match:
                raise SpecError(
                    f"category {cat!r} of {name!r} is declared but never observed, so the analysis "
                    f"term {expr!r} would not have a column for it; drop it from categories= or "
                    "give the column a pandas Categorical dtype that lists it"
                )
            position[k] = match[0]
        coding = (np.asarray(contrasts.get_coding_matrix(reduced_rank=reduced), dtype=float)
                  if contrasts is not None else np.eye(len(levels))[:, int(reduced):])
        s = self.incomplete(name)
        out = []
        for j in range(coding.shape[1]):
            t = self.table([coding[position[k], j] for k in range(codec.n_categories)])
            out.append([(s, TABLE, float(t))])
        return out

    def _complete_factor(self, expr: str, categorical: bool, state: dict, reduced: bool) -> list[list[tuple]]:
        quoted = f"`{expr}`" if expr in self.probe.columns and not expr.isidentifier() else expr   # `my z`
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # missing values: refused by formulaic
            mm = model_matrix(f"0 + {quoted}", self.probe, ensure_full_rank=False, na_action="raise")
        values = np.asarray(mm, dtype=float)
        if not categorical:
            return [[(self.complete(f"{expr}[{k}]" if values.shape[1] > 1 else expr, values[:, k]),
                      POWER, 1.0)] for k in range(values.shape[1])]
        contrasts = state["contrasts"]
        codes = values.argmax(axis=1)
        s = self.complete(f"{expr}#code", codes, categorical=True)
        coding = np.asarray(contrasts.get_coding_matrix(reduced_rank=reduced),
                            dtype=float)
        return [[(s, TABLE, float(self.table(coding[:, j])))] for j in range(coding.shape[1])]

    def _monomial(self, expr: str, incomplete: list[str]) -> list[tuple]:
        quoted: dict[str, str] = {}   # `my x` → a Python name for the parser, and back

        def name_for(match) -> str:
            return quoted.setdefault(match.group(1), f"_quoted_{len(quoted)}")

        body = re.sub(r"`([^`]+)`", name_for, expr[2:-1].strip())
        try:
            tree = ast.parse(body, mode="eval").body
            const, powers = _monomial(tree)
        except (SyntaxError, ValueError):
            raise self._refuse(expr, incomplete) from None
        back = {v: k for k, v in quoted.items()}
        powers = {back.get(k, k): v for k, v in powers.items()}
        prims: list[tuple] = [("const", const)]
        complete = np.ones(len(self.probe))
        has_complete = False
        for name, power in sorted(powers.items()):
            if name in self.codecs:
                prims.append(self._numeric_power(name, power, expr))
            elif name in self.probe.columns and pd.api.types.is_numeric_dtype(self.probe[name].dtype):
                complete = complete * self.probe[name].to_numpy(dtype=float) ** power
                has_complete = True
            else:
                raise self._refuse(expr, incomplete)
        if has_complete:
            prims.append((self.complete(f"{expr}#complete", complete), POWER, 1.0))
        return prims


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # labels that do not compare
        return False


def _c_argument(expr: str, codecs: dict) -> str | None:
    """``C(x)`` / ``C(x, contr.sum)`` → ``x`` if x is an incomplete variable."""
    try:
        call = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "C"
            and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in codecs):
        return call.args[0].id
    return None


def _monomial(node) -> tuple[float, dict[str, int]]:
    """``c · Π name**k`` from an expression tree, else ValueError."""
    if isinstance(node, ast.Name):
        return 1.0, {node.id: 1}
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value), {}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        c, p = _monomial(node.operand)
        return (-c if isinstance(node.op, ast.USub) else c), p
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mult):
            c1, p1 = _monomial(node.left)
            c2, p2 = _monomial(node.right)
            return c1 * c2, {k: p1.get(k, 0) + p2.get(k, 0) for k in {*p1, *p2}}
        if isinstance(node.op, ast.Div):
            c2, p2 = _monomial(node.right)
            if p2 or c2 == 0:
                raise ValueError("division by a variable")
            c1, p1 = _monomial(node.left)
            return c1 / c2, p1
        if isinstance(node.op, ast.Pow):
            e = node.right
            if not (isinstance(e, ast.Constant) and isinstance(e.value, int) and e.value >= 0):
                raise ValueError("power must be a non-negative integer")
            c, p = _monomial(node.left)
            return c ** e.value, {k: v * e.value for k, v in p.items()}
    raise ValueError("not a monomial")


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def _compile_rhs(comp: _Compiler, rhs: str, what: str):
    """Primitive lists and names of every column of ``rhs``, checked against formulaic."""
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # missing values: refused below
            mm = model_matrix(rhs, comp.probe, na_action="raise")
    except FormulaicError as exc:
        raise SpecError(f"cannot build the {what} {rhs!r}: {exc}; fix the formula{power_hint(rhs)}") from exc
    except ValueError as exc:   # (na_action="raise": a transform gave missing values, e.g. np.log(0))
        found = re.search(r"`([^`]+)`", str(exc))   # formulaic names the failing expression
        expr = found.group(1) if found else rhs
        incomplete = sorted(n for n in comp.codecs if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", expr))
        note = (f"; a transform of the incomplete variable(s) {', '.join(map(repr, incomplete))} is refused "
                "anyway (the variable to impute would be the transformed one: impute that column instead)"
                if incomplete else "")
        raise SpecError(
            f"cannot build the {what} {rhs!r} on the data: {exc} (a transform gives missing or infinite "
            f"values, e.g. np.log of values <= 0){note}; fix the formula or the data") from exc
    spec = mm.model_spec
    factor_vars = {str(f): {str(v) for v in vs} for f, vs in spec.factor_variables.items()}
    columns: list[list[tuple]] = []
    for structure in spec.structure:
        for scoped in structure.scoped_terms:
            per_factor = [comp.factor_columns(sf, spec.encoder_state, factor_vars.get(sf.factor.expr, set()))
                          for sf in scoped.factors]
            scale = float(getattr(scoped, "scale", 1.0) or 1.0)
            # formulaic's order: the first factor's columns vary fastest
            for combo in itertools.product(*reversed(per_factor)):
                prims = [("const", scale)]
                for part in reversed(combo):
                    prims.extend(part)
                columns.append(prims)
    names = tuple(str(c) for c in mm.columns)
    if len(columns) != len(names):
        raise SpecError(f"the {what} {rhs!r} is coded in a way the substantive sampler does not follow "
                        f"({len(columns)} columns against formulaic's {len(names)}); simplify the term")
    return columns, names, np.asarray(mm, dtype=float)


def _assemble(comp: _Compiler, columns: list[list[tuple]], n_fixed: int) -> Program:
    const = np.ones(len(columns))
    src, kind, par, ptr = [], [], [], [0]
    for c, prims in enumerate(columns):
        for p in prims:
            if p[0] == "const":
                const[c] *= p[1]
            else:
                src.append(p[0]); kind.append(p[1]); par.append(p[2])
        ptr.append(len(src))
    n_src = len(comp.sources)
    src_a = np.asarray(src, dtype=np.int64)
    deps = [sorted({c for c in range(len(columns)) if (src_a[ptr[c]:ptr[c + 1]] == s).any()})
            for s in range(n_src)]
    linear = np.ones(n_src, dtype=bool)
    polynomial2 = np.ones(n_src, dtype=bool)
    for c in range(len(columns)):
        power = {}
        for k in range(ptr[c], ptr[c + 1]):
            if kind[k] == POWER:
                power[src[k]] = power.get(src[k], 0.0) + par[k]
        for s, p in power.items():
            if p > 1:
                linear[s] = False
            if p not in (1.0, 2.0):
                polynomial2[s] = False
    kmax = max([t.size for t in comp.tables], default=1)
    tables = np.zeros((max(len(comp.tables), 1), kmax))
    for t, values in enumerate(comp.tables):
        tables[t, :values.size] = values
    return Program(
        const=const, col_ptr=np.asarray(ptr, dtype=np.int64), src=src_a,
        kind=np.asarray(kind, dtype=np.int64), par=np.asarray(par, dtype=float), tables=tables,
        dep_ptr=np.cumsum([0, *map(len, deps)]).astype(np.int64),
        dep_cols=np.asarray([c for d in deps for c in d], dtype=np.int64), linear=linear,
        quadratic=~linear & polynomial2, n_fixed=n_fixed,
    )


def probe_frame(sdf, names: list[str], levels: dict | None = None) -> pd.DataFrame:
    """The used columns in sorted order, each missing cell filled with a random observed value of
    its column (a fixed stream: the result does not depend on any seed), so that formulaic sees
    the dtypes and categories of a completed dataset and collinearity checks see real variation;
    text columns of ``levels`` as Categoricals in that order (``design.with_declared_levels``)."""
    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        s = sdf[name].reset_index(drop=True)
        miss = s.isna().to_numpy()
        if miss.any() and not miss.all():
            pool = s[~miss]
            s = s.copy()
            s[miss] = pool.iloc[rng.integers(pool.size, size=int(miss.sum()))].to_numpy()
        if pd.api.types.is_float_dtype(s.dtype) and s.dtype != np.float64:
            s = s.astype(np.float64)   # float32: formulaic would square it in float32 (helper 34)
        out[name] = s
    from .design import with_declared_levels
    return formula_frame(with_declared_levels(pd.DataFrame(out), levels or {}))


def build_outcome(df: pd.DataFrame, sdf, model: ImputationModel, codecs: tuple, make_codec, starts,
                  cluster: np.ndarray) -> OutcomeData:
    """Check the data against ``model.substantive`` and compile its design (rows sorted).

    ``sdf`` reads the frame's columns in the sorted order; ``codecs`` are the imputed
    variables' codecs; ``make_codec(name, kind)`` builds the outcome's codec.
    """
    parsed = parse_substantive(model)
    y_name = _unquote(parsed.response)
    used = substantive_variables(parsed, df.columns)
    _outcome_not_read(y_name, used, model.substantive)   # a stateful transform's argument shows only now
    missing_cols = [c for c in sorted(used | {y_name}) if c not in df.columns]
    if "offset" in missing_cols or "weights" in missing_cols:
        raise SpecError(f"substantive={model.substantive!r}: offset() and weights terms are not supported in "
                        "the imputation's analysis model; leave them out")
    if missing_cols:
        hints = [h for c in missing_cols if (h := r_call_hint(c, model.substantive))]
        hint = hints[0] if hints else f"available columns: {list(df.columns)[:20]}."
        raise DataError(
            f"column(s) {', '.join(map(repr, missing_cols))} of substantive={model.substantive!r} not "
            f"found in the data; {hint} Fix the formula or the data"
        )
    incomplete = {c.name: c for c in codecs}
    for name in sorted(used - set(incomplete)):
        if name in model.cluster_columns:
            continue
        miss = df[name].isna().to_numpy()
        if miss.any():
            raise DataError(
                f"column {name!r} of substantive= has {int(miss.sum())} missing value(s) but is not "
                "listed in variables=; list it there (with its kind) to impute it, or drop those rows"
            )
    kind = "continuous" if model.family == "gaussian" else "binary"
    if kind == "binary" and y_name in df.columns:
        values = pd.unique(df[y_name].dropna())
        if len(values) > 2:
            shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in sorted(values, key=str)[:5])
            raise DataError(
                f"the outcome {y_name!r} of substantive= (family='binomial') has {len(values)} distinct values "
                f"({shown}); a binomial analysis model needs two: recode it to two values, or (the analysis "
                "model cannot have an ordinal or nominal outcome) drop substantive= and list it in variables= "
                "as ordinal or nominal"
            )
    codec = make_codec(y_name, kind)
    if kind == "continuous":
        y = sdf[y_name].to_numpy(dtype=float, na_value=np.nan) if pd.api.types.is_numeric_dtype(df[y_name].dtype) \
            else None
        if y is None or pd.api.types.is_bool_dtype(df[y_name].dtype):
            raise DataError(
                f"outcome {y_name!r} of substantive= is not numeric (dtype {df[y_name].dtype}); "
                "family='gaussian' needs numbers: convert it, or use family='binomial' for two categories"
            )
        if np.isinf(y).any():
            raise DataError(f"outcome {y_name!r} holds infinite values; replace them with finite values or missing")
    else:
        y = np.where(codec.codes < 0, np.nan, codec.codes.astype(float))
    observed = ~np.isnan(y)
    if observed.sum() < 2:
        raise DataError(f"outcome {y_name!r} of substantive= has fewer than two observed values; nothing to fit")
    if kind == "continuous" and np.ptp(y[observed]) == 0:
        raise DataError(
            f"outcome {y_name!r} of substantive= is constant ({_plain(y[observed][0])!r}) where observed: its "
            "residual variance is 0 and nothing relates it to the covariates; check the column, or leave it "
            "out of the imputation"
        )

    from .design import declared_levels
    probe = probe_frame(sdf, sorted((used | {y_name}) - set(model.cluster_columns)), declared_levels(model))
    comp = _Compiler(probe, incomplete, f"substantive={model.substantive!r}")
    fixed_cols, x_names, x_ref = _compile_rhs(comp, parsed.fixed, "fixed part")
    z_cols, z_names, z_refs, blocks, z_class = [], [], [], [], []
    for term in parsed.random:
        ci = term_classification(model, term)
        check_nested_grouping(df, model, term, "substantive=")
        cols, names, ref = _compile_rhs(comp, term.expr, f"random term {term.text}")
        if not model.two_level:   # several classifications: each effect named with its grouping
            names = [f"{n}|{term.group_label}" for n in names]
        z_class.extend([model.classifications[ci].name] * len(cols))
        if term.correlated:
            blocks.append((len(z_cols), len(cols)))
        else:
            blocks.extend((len(z_cols) + k, 1) for k in range(len(cols)))
        dup = set(names) & set(z_names)
        if dup:
            raise SpecError(f"random effect {sorted(dup)[0]!r} is declared twice in substantive=; declare it once")
        z_cols.extend(cols)
        z_names.extend(names)
        z_refs.append(ref)
    program = _assemble(comp, [*fixed_cols, *z_cols], len(fixed_cols))
    S0 = _initial_sources(comp, probe, len(df))
    D = program.evaluate(S0)
    ref = np.column_stack([x_ref, *z_refs])
    if D.shape != ref.shape or not np.allclose(D, ref, rtol=1e-9, atol=1e-9):
        bad = int(np.flatnonzero(~np.isclose(D, ref, rtol=1e-9, atol=1e-9).all(axis=0))[0]) if D.shape == ref.shape else -1
        name = ([*x_names, *z_names][bad] if bad >= 0 else "?")
        raise SpecError(
            f"column {name!r} of substantive={model.substantive!r} is coded in a way the substantive "
            "sampler does not reproduce; simplify that term"
        )
    _check_rank(D[observed][:, :len(x_names)], x_names, model.substantive)
    if kind == "binary":
        complete = np.ones(len(df), dtype=bool)
        for src in comp.sources:
            if src.codec is not None:
                complete &= sdf[src.name].notna().to_numpy()
        _check_binary_outcome(program, S0, comp, D[:, :len(x_names)], x_names, codec, y, observed, model.substantive,
                              complete)
    fit = _complete_case_start(model, sdf, used, y_name, x_names, tuple(z_names), blocks,
                               D[observed][:, len(x_names):], y[observed])
    return OutcomeData(
        name=y_name, family=model.family, link=model.resolved_link, codec=codec, y=y,
        observed=observed, program=program, sources=tuple(comp.sources), S0=S0,
        x_names=x_names, z_names=tuple(z_names), blocks=tuple(blocks), z_class=tuple(z_class), **fit,
    )


def check_nested_grouping(df: pd.DataFrame, model: ImputationModel, term, where: str) -> None:
    """A nested classification grouped by its own column alone (``(1 | class)`` for
    ``cluster=["school", "class"]``) groups the fit by that column's values: the data must give
    each of them one unit of the classification, else the fit pools classes of different
    schools that the imputation keeps apart. ``where`` names the formula (``substantive=``, an
    analysis) in the error."""
    for c in () if model.two_level else model.classifications:
        if c.kind != "nested" or len(c.columns) < 2 or tuple(term.group) != (c.name,):
            continue
        outer = list(c.columns[:-1])
        spread = df.groupby(df[c.name].to_numpy(), sort=False)[outer].nunique(dropna=False).max(axis=1)
        if (spread > 1).any():
            label = spread.index[np.flatnonzero(spread.to_numpy() > 1)[0]]
            raise DataError(
                f"random term {term.text!r} of {where} groups by {c.name!r} alone, but {c.name!r} = "
                f"{_plain(label)!r} occurs in several units of {', '.join(map(repr, outer))}: the fit "
                f"would pool them. Write the grouping as ({term.expr.strip()} | {':'.join(c.columns)}), or give "
                f"the {c.name!r} ids unique values"
            )


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _initial_sources(comp: _Compiler, probe: pd.DataFrame, n: int) -> np.ndarray:
    """Complete sources filled; incomplete ones from the probe frame (the sampler overwrites them)."""
    S = np.zeros((n, len(comp.sources)))
    for s, (src, values) in enumerate(zip(comp.sources, comp.columns)):
        if values is not None:
            S[:, s] = values
            continue
        codec = comp.codecs[src.codec]
        col = probe[src.codec]
        if codec.kind == "continuous":
            S[:, s] = col.to_numpy(dtype=float)
        else:
            lookup = {}
            for k, cat in enumerate(codec.categories):
                lookup.setdefault(cat, k)
            S[:, s] = [lookup[v] for v in col.to_numpy(dtype=object)]
    return S


def _check_rank(X: np.ndarray, names: tuple[str, ...], formula: str) -> None:
    k = dependent_column(X)     # on columns scaled to unit root mean square
    if k is not None:
        raise DataError(
            f"fixed-effect column {names[k]!r} of substantive={formula!r} is a linear "
            "combination of the columns before it in the rows with an observed outcome (to within "
            "1e-7 of the columns' scale); remove it from the formula"
        )


def _check_binary_outcome(program, S0, comp, X, names, codec, y, observed, formula, complete) -> None:
    """A binary outcome needs both categories observed, and no separation by the terms made of
    complete columns only (a separating direction there separates every completion of the data):
    either leaves its coefficients' posterior improper under their flat prior. Separation among
    the rows where every variable of the formula is observed (``complete``) by terms of incomplete
    variables is warned of: the imputations of the other rows can follow it (the coefficient then
    drifts: −50 on a helper's design), or not, which the data cannot tell before sampling."""
    seen = np.unique(y[observed]).astype(int)
    if seen.size < 2:
        raise DataError(
            f"outcome {codec.name!r} of substantive={formula!r} has only the category "
            f"{codec.categories[seen[0]]!r} among its observed values: family='binomial' has nothing to "
            "fit and its intercept would drift; check the column, or drop the substantive model"
        )
    moved = S0.copy()
    for k, (src, values) in enumerate(zip(comp.sources, comp.columns)):
        if values is None:                      # an incomplete variable's source: another value
            K = comp.codecs[src.codec].n_categories
            moved[:, k] = (moved[:, k] + 1) % K if K else moved[:, k] + 1.0 + np.abs(moved[:, k])
    fixed = np.flatnonzero(np.isclose(program.evaluate(moved)[:, :X.shape[1]], X).all(axis=0))
    beta = separating_direction(X[observed][:, fixed], y[observed] == 1)
    if beta is not None:
        terms = ", ".join(names[c] for c, b in zip(fixed, beta) if abs(b) > 1e-6 and names[c] != "Intercept")
        raise DataError(
            f"outcome {codec.name!r} of substantive={formula!r} is separated by {terms or 'the intercept'}: "
            "one of its categories is predicted perfectly in the rows where it is observed, so its "
            "coefficients have no proper posterior under flat priors (complete or quasi-complete "
            "separation) and would drift; drop or coarsen those terms"
        )
    cc = observed & complete
    if np.unique(y[cc]).size == 2:
        beta = separating_direction(X[cc], y[cc] == 1)
        if beta is not None:
            terms = ", ".join(names[c] for c in np.flatnonzero(np.abs(beta) > 1e-6) if names[c] != "Intercept")
            warnings.warn(
                f"outcome {codec.name!r} of substantive={formula!r} is separated by {terms} in the {int(cc.sum())} rows "
                "where the formula's variables are all observed (one category predicted perfectly): if the "
                "imputations follow, those coefficients have no proper posterior under flat priors and drift; "
                "look at res.trace() for them, and coarsen or drop those terms if they run away",
                ConvergenceWarning, stacklevel=2)


PRIOR_FLOOR = 0.05   # fraction of the outcome's variance (in each column's units) kept in the prior scale


def _complete_case_start(model, sdf, used, y_name, x_names, z_names, blocks, z_obs: np.ndarray, y_obs: np.ndarray) -> dict:
    """Starting values and prior scales from the complete-case fit, as jomo.lmer/jomo.glmer do,
    except where the prior is centred: each covariance block's inverse-Wishart prior (one per
    random term, or per column of a ``||`` term; width w) has df ν = w and scale
    Ψ = (ν + w + 1) · Σ̂_cc of the block, so that its mode is the complete-case estimate (before,
    with several blocks Ψ took the total dimension q for w: modes (2q + 1)/(2w + 1) times too
    large); the residual variance's prior is IW(1, σ̂²_cc).

    jomo takes Ψ = Σ̂_cc, whose mode is Σ̂_cc / (2q + 1). Where the data say little about a
    variance (the random slope of a binary outcome with ~15 observed rows per cluster) the
    posterior follows the prior, and that pulls it toward a fifth of the complete-case value:
    measured on the binary design of ``benchmarks/study_substantive.py``, the pooled slope
    variance came out 7.5 % of the truth below the complete-data estimate (200 replications);
    with the centred scale, +0.8 ± 4.7 % (24 replications). Where the data are informative the
    scale adds about Ψ / J to a variance's posterior mean.

    Unlike jomo, each variance of the scale is kept at least ``PRIOR_FLOOR`` · Var(y) / mean(z_k²)
    (z_k the random-effect column, Var(y) the outcome's variance, 1 for probit and π²/3 for logit
    latent scales). A complete-case fit on the boundary (a variance estimated as 0, common when
    the outcome drives the missingness) otherwise makes an inverse-Wishart scale near 0, whose
    prior mass piles up at 0: measured here, chains started there stayed at a random-intercept
    variance of 1e-7 for 3,000 sweeps while the data said 0.24.
    """
    from .analysis import glmm, lmm

    q = len(z_names)
    cols = sorted((used | {y_name, *model.cluster_columns}))
    # rows in the canonical order (``sdf``): the fit, and so the prior, do not depend on the input's
    # row order (a fit near a boundary can land elsewhere when its rows are permuted)
    # (a membership's ids and weights are missing by design where a row has fewer units: not dropped)
    cc = pd.DataFrame({c: sdf[c].reset_index(drop=True) for c in cols}).dropna(subset=sorted(used | {y_name}))
    from .design import declared_levels, with_declared_levels
    cc = with_declared_levels(cc, declared_levels(model))   # C(ses) as in the sampler's design
    beta0 = np.zeros(len(x_names))
    est_cov = None
    if model.family == "gaussian":
        var_y = float(np.var(y_obs)) if y_obs.size > 1 and np.var(y_obs) > 0 else 1.0
    else:
        var_y = 1.0 if model.resolved_link == "probit" else np.pi ** 2 / 3
    sigma2 = var_y if model.family == "gaussian" else 1.0
    if len(cc) > len(x_names) + q + 2 and len(cc[list(model.cluster_columns)].drop_duplicates()) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if model.family == "gaussian":
                    fit = lmm(model.substantive, cc, reml=True)
                else:
                    fit = glmm(model.substantive, cc, family="binomial", link=model.resolved_link)
            except Exception:  # a failed start is not an error: the sampler starts elsewhere
                fit = None
        if fit is not None:
            est = dict(zip(fit.term_names, fit.beta))
            beta0 = np.array([est.get(n, 0.0) for n in x_names])
            full = _block_diag([np.atleast_2d(c) for c in fit.term_covs])
            if full.shape == (q, q) and np.all(np.isfinite(full)):
                est_cov = 0.5 * (full + full.T)
            if fit.sigma2 is not None and np.isfinite(fit.sigma2) and fit.sigma2 > 0:
                sigma2 = float(fit.sigma2)
    if not np.all(np.isfinite(beta0)):
        beta0 = np.zeros(len(x_names))
    m2 = np.mean(z_obs ** 2, axis=0) if z_obs.size else np.ones(q)
    floor = PRIOR_FLOOR * var_y / np.where(m2 > 0, m2, 1.0)
    if est_cov is None:
        est_cov = np.diag(floor)
    else:  # raise small variances to the floor; drop correlations that are no longer valid
        sd_old = np.sqrt(np.clip(np.diag(est_cov), 0, None))
        sd_new = np.sqrt(np.maximum(np.diag(est_cov), floor))
        corr = np.where(np.outer(sd_old, sd_old) > 0, est_cov / np.where(np.outer(sd_old, sd_old) > 0,
                                                                             np.outer(sd_old, sd_old), 1), 0)
        corr = np.clip(corr, -0.95, 0.95)
        np.fill_diagonal(corr, 1.0)
        est_cov = corr * np.outer(sd_new, sd_new)
        ev = np.linalg.eigvalsh(est_cov)
        if ev.min() <= 1e-3 * ev.max():   # a singular complete-case fit (its scale would make the
            est_cov = np.diag(sd_new ** 2)  # inverse-Wishart prior improper and numpy fail in a sweep)
    # each covariance block's prior (df its width w; ``outcome.prepare_outcome``) has its mode at
    # the block of the complete-case estimate: Ψ_b = (2w + 1) Σ̂_b
    scale = np.zeros((q, q))
    for start, width in blocks:
        sl = slice(start, start + width)
        scale[sl, sl] = (2.0 * width + 1.0) * est_cov[sl, sl]
    prior = model.prior_substantive
    if prior.scale is not None:
        scale, _ = prior.resolve(q, "substantive random-effect")
        inside = np.zeros((q, q), bool)
        for start, width in blocks:
            inside[start:start + width, start:start + width] = True
        if np.any(scale[~inside] != 0):
            i, j = np.argwhere(~inside & (scale != 0))[0]
            raise SpecError(
                f"prior_substantive scale couples {z_names[i]!r} and {z_names[j]!r}, whose random effects the "
                "formula keeps independent (different terms or classifications, or a || term): set those "
                "entries to 0, or put the effects in one term"
            )
    widest = max(w for _, w in blocks)
    if prior.df is not None and prior.df <= widest - 1:
        raise SpecError(f"prior_substantive df={prior.df:g} must exceed the widest covariance block's dimension "
                        f"- 1 = {widest - 1} for a proper prior")
    # a stated df is every block's; by default each block's df is its width (``outcome.block_dfs``)
    df_prior = None if prior.df is None else float(prior.df)
    return dict(beta0=beta0, cov0=est_cov.copy(), sigma2_0=sigma2, prior_scale=scale, prior_df=df_prior,
                sigma2_prior=sigma2)


def _block_diag(mats: list[np.ndarray]) -> np.ndarray:
    n = sum(m.shape[0] for m in mats)
    out = np.zeros((n, n))
    o = 0
    for m in mats:
        k = m.shape[0]
        out[o:o + k, o:o + k] = m
        o += k
    return out
