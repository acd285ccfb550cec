r"""Embedded explicit Runge-Kutta pairs for :func:`sde_jax.ode.solve_adaptive`.

A pair is a Butcher tableau :math:`(c, A, b)` of order :math:`p` with an embedded solution
:math:`\hat b` of lower order; the step's local error estimate is
:math:`e = h \sum_i (b_i - \hat b_i) k_i`. Every pair here is first-same-as-last (FSAL): its
last stage sits at :math:`c_S = 1` with the row :math:`a_{S,\cdot} = b`, so it is ``fn`` at
the new point and serves as stage 1 of the next step, and an accepted or rejected step costs
:math:`S - 1` evaluations.

- :data:`DOPRI5`: Dormand & Prince (1980), order 5(4), 7 stages; the RK45 of scipy and of the
  paper's likelihood. The default.
- :data:`TSIT5`: Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first
  column simplifying assumption", Table 1; order 5(4), 7 stages, smaller error constants.
- :data:`DOP853`: Dormand & Prince's 8(5,3) pair (Hairer, Nørsett & Wanner, *Solving ODEs I*,
  2nd ed., section II.10, code DOP853), order 8, 13 stages (12 new per step), with two
  embedded estimates of orders 5 and 3 combined as

  .. math:: \mathrm{err} = \frac{\|e_5\|^2}{\sqrt{N(\|e_5\|^2 + 0.01\,\|e_3\|^2)}},

  which behaves like :math:`O(h^8)` (the controller's exponent is 1/8).

The coefficients are checked against the rooted-tree order conditions in tests/test_ode.py.
"""

import dataclasses

import jax

__all__ = ["DOP853", "DOPRI5", "PAIRS", "TSIT5", "Tableau"]


@dataclasses.dataclass(frozen=True)
class Tableau:
    r"""An FSAL embedded Runge-Kutta pair.

    Attributes:
      name: a short name (``'dopri5'``).
      c: the nodes :math:`c_1 = 0, c_2, \dots, c_S`, length S.
      a: the rows :math:`a_{i,1..i-1}` of stages 2..S, row i-2 of length i-1; the last row is
        :math:`b` (FSAL).
      b: the weights of the solution of order ``order``, length S (:math:`b_S = 0`).
      b_error: :math:`b - \hat b`, length S; the local error estimate is
        :math:`h \sum_i` ``b_error[i]`` :math:`k_i`.
      order: the order of the propagated solution.
      embedded_order: the order of the embedded solution :math:`\hat b` (4 for a 5(4) pair, 5
        for DOP853).
      error_order: the power of h in the error norm the controller acts on (the embedded
        order plus one: 5 for a 5(4) pair, 8 for DOP853); the step factor is
        :math:`\mathrm{err}^{-1/\mathrm{error\_order}}`.
      b_error_low: optional second estimate :math:`b - \hat b_3`, :math:`\hat b_3` of order
        3 (DOP853's); when given, the error norm is the combination in the module docstring.

    Raises:
      ValueError: if the lengths do not match, or the pair is not FSAL (:math:`c_S \ne 1` or
        the last row of ``a`` differs from ``b``).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...]
    order: int
    embedded_order: int
    error_order: int
    b_error_low: tuple[float, ...] | None = None

    def __post_init__(self):
        stages = len(self.c)
        if len(self.a) != stages - 1 or any(len(row) != i + 1 for i, row in enumerate(self.a)):
            raise ValueError(
                f"a must hold {stages - 1} rows of lengths 1..{stages - 1} for {stages} nodes c, "
                f"got row lengths {[len(row) for row in self.a]} in tableau {self.name!r}."
            )
        for field in ("b", "b_error") + (("b_error_low",) if self.b_error_low else ()):
            if len(getattr(self, field)) != stages:
                raise ValueError(
                    f"{field} must have length {stages} in tableau {self.name!r}, got "
                    f"{len(getattr(self, field))}."
                )
        if self.c[0] != 0.0 or self.c[-1] != 1.0 or (*tuple(self.a[-1]), 0.0) != self.b:
            raise ValueError(
                f"tableau {self.name!r} must be first-same-as-last: c[0] = 0, c[-1] = 1 and the "
                f"last row of a equal to b."
            )

    @property
    def stages(self) -> int:
        """S, the number of stages including the FSAL one."""
        return len(self.c)

    @property
    def nfe_per_step(self) -> int:
        """Evaluations of ``fn`` per attempted step, ``S - 1`` (stage 1 is reused)."""
        return len(self.c) - 1

    def padded_rows(self) -> tuple[tuple[float, ...], ...]:
        """The rows of ``a`` zero-padded to length S, one per stage 2..S."""
        return tuple(tuple(row) + (0.0,) * (self.stages - len(row)) for row in self.a)


jax.tree_util.register_dataclass(
    Tableau, data_fields=[], meta_fields=[f.name for f in dataclasses.fields(Tableau)]
)


def _fsal(name, c, rows, b, b_hat_or_error, orders, *, is_error, low=None):
    """A Tableau from the rows of stages 2..S-1 and b, which becomes the FSAL row.

    ``b_hat_or_error`` is the embedded weights, or ``b - b_hat`` when ``is_error``;
    ``orders`` is ``(order, embedded_order, error_order)``.
    """
    b = (*tuple(b), 0.0)
    err = tuple(b_hat_or_error)
    if not is_error:
        err = tuple(bi - hi for bi, hi in zip(b, err, strict=True))
    return Tableau(name, tuple(c), (*tuple(rows), b[:-1]), b, err, *orders, low)


# --------------------------------------------------------------------------------------------
# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", Table 2 (RK5(4)7M).

_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
DOPRI5 = _fsal(
    "dopri5",
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    (
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    ),
    _DOPRI5_B,
    (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
    (5, 4, 5),
    is_error=True,
)
"""Dormand-Prince 5(4), 7 stages, FSAL: 6 evaluations per step."""

# --------------------------------------------------------------------------------------------
# Tsitouras (2011), Table 1 (the coefficients to double precision).

_TSIT5_B = (
    0.09646076681806522951816731316512876,
    0.01,
    0.4798896504144995747752495322905965,
    1.379008574103741893192274821856873,
    -3.290069515436080679901047585711363,
    2.324710524099773982415355918398766,
)
TSIT5 = _fsal(
    "tsit5",
    (0.0, 0.161, 0.327, 0.9, 0.9800255409045096857298102862870246, 1.0, 1.0),
    (
        (0.161,),
        (-0.008480655492356988544426874250230775, 0.3354806554923569885444268742502308),
        (
            2.897153057105493432130432594192939,
            -6.359448489975074843148159912383826,
            4.362295432869581411017727318190887,
        ),
        (
            5.325864828439256604428877920840511,
            -11.74888356406282787774717033978577,
            7.495539342889836208304604784564358,
            -0.09249506636175524925650207933207192,
        ),
        (
            5.861455442946420028659251486982648,
            -12.92096931784710929170611868178336,
            8.159367898576158643180400794539253,
            -0.07158497328140099722453054252582974,
            -0.02826905039406838290900305721271224,
        ),
    ),
    _TSIT5_B,
    (
        0.09468075576583945807478876255758923,
        0.009183565540343253096776363936645314,
        0.4877705284247615707855642599631228,
        1.234297566930478985655109673884238,
        -2.707712349983525454881109975059322,
        1.866628418170587035753719399566211,
        1 / 66,
    ),
    (5, 4, 5),
    is_error=False,
)
"""Tsitouras 5(4), 7 stages, FSAL: 6 evaluations per step."""

# --------------------------------------------------------------------------------------------
# Dormand & Prince 8(5,3): Hairer, Nørsett & Wanner, Solving ODEs I (2nd ed.), section II.10,
# the coefficients of their code DOP853 (also scipy's DOP853), rounded to double precision.

_DOP853_C = (
    0.0,
    0.05260015195876773,
    0.0789002279381516,
    0.1183503419072274,
    0.2816496580927726,
    0.3333333333333333,
    0.25,
    0.3076923076923077,
    0.6512820512820513,
    0.6,
    0.8571428571428571,
    1.0,
    1.0,
)
_DOP853_ROWS = (
    (0.05260015195876773,),
    (0.0197250569845379, 0.0591751709536137),
    (0.02958758547680685, 0.0, 0.08876275643042054),
    (0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792),
    (0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242),
    (0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125),
    (
        0.03709200011850479,
        0.0,
        0.0,
        0.17038392571223998,
        0.10726203044637328,
        -0.015319437748624402,
        0.008273789163814023,
    ),
    (
        0.6241109587160757,
        0.0,
        0.0,
        -3.3608926294469414,
        -0.868219346841726,
        27.59209969944671,
        20.154067550477894,
        -43.48988418106996,
    ),
    (
        0.47766253643826434,
        0.0,
        0.0,
        -2.4881146199716677,
        -0.590290826836843,
        21.230051448181193,
        15.279233632882423,
        -33.28821096898486,
        -0.020331201708508627,
    ),
    (
        -0.9371424300859873,
        0.0,
        0.0,
        5.186372428844064,
        1.0914373489967295,
        -8.149787010746927,
        -18.52006565999696,
        22.739487099350505,
        2.4936055526796523,
        -3.0467644718982196,
    ),
    (
        2.273310147516538,
        0.0,
        0.0,
        -10.53449546673725,
        -2.0008720582248625,
        -17.9589318631188,
        27.94888452941996,
        -2.8589982771350235,
        -8.87285693353063,
        12.360567175794303,
        0.6433927460157636,
    ),
)
_DOP853_B = (
    0.054293734116568765,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    0.3111643669578199,
    -0.1521609496625161,
    0.20136540080403034,
    0.04471061572777259,
)
_DOP853_E5 = (
    0.01312004499419488,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.2251564463762044,
    -0.4957589496572502,
    1.6643771824549864,
    -0.35032884874997366,
    0.3341791187130175,
    0.08192320648511571,
    -0.022355307863886294,
    0.0,
)
_DOP853_E3 = (
    -0.18980075407240762,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    -0.4226823213237919,
    -0.1521609496625161,
    0.20136540080403034,
    0.02265179219836082,
    0.0,
)
DOP853 = _fsal(
    "dop853",
    _DOP853_C,
    _DOP853_ROWS,
    _DOP853_B,
    _DOP853_E5,
    (8, 5, 8),
    is_error=True,
    low=_DOP853_E3,
)
"""Dormand-Prince 8(5,3), 13 stages, FSAL: 12 evaluations per step."""

PAIRS: dict[str, Tableau] = {"dopri5": DOPRI5, "tsit5": TSIT5, "dop853": DOP853}
"""The embedded pairs by name."""
