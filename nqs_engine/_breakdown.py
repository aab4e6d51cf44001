"""The common shape of every loss model's answer: a total and its named terms."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax



class AbstractBreakdown(eqx.Module):
    r"""A predicted loss `total` and the terms it is the sum of, all of one shape.

    Every loss model returns one when called: the NQS its irreducible,
    approximation, bias and variance terms ([`nqs_engine.RiskBreakdown`][]),
    Chinchilla its irreducible, parameter and data terms. A final subclass has
    one array field per term and a field `total` (declared by the subclass, in
    the order its constructor takes them); `TERMS` names the term fields in
    order, and [`terms`][] returns them by name, which is all the command line
    needs to write one column per term.
    """

    TERMS: ClassVar[tuple[str, ...]] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """The broadcast shape of the configurations evaluated."""
        return self.total.shape

    def terms(self) -> dict[str, jax.Array]:
        """The terms by name, in the order of `TERMS` (the total not included)."""
        return {name: getattr(self, name) for name in self.TERMS}


__all__ = ["AbstractBreakdown"]
