"""Array type aliases with shapes, for public signatures (jaxtyping; documentation only).

``Data`` is a batch of examples of any shape, ``Times`` one time per example (or a scalar time
shared by the batch), ``PerExample`` one value per example.
"""

from collections.abc import Callable

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Data = Float[Array, "batch *dims"]
Times = Float[ArrayLike, "*batch"]
PerExample = Float[Array, " batch"]
Key = PRNGKeyArray

ScoreFn = Callable[[Data, PerExample], Data]
"""``score_fn(x, t) -> score``: x ``[batch, ...]``, t ``[batch]``, score shaped like x."""

__all__ = ["Array", "ArrayLike", "Data", "Key", "PerExample", "ScoreFn", "Times"]
