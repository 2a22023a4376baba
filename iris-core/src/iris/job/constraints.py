"""Placement constraints: ``key op value`` tests on worker attributes.

Well-known attribute keys (set by providers on every worker): ``region``, ``zone``,
``preemptible``, ``hostname``, ``slice``, ``scale-group``, ``tpu-name``, ``tpu-worker-id``,
``topology``, ``device``, ``device-variant``. Providers and configs may add custom ones.

Text form, as ``iris run --constraint`` takes it::

    zone=us-central2-b      EQ        zone!=us-central2-b   NE
    preemptible             EXISTS    !preemptible          NOT_EXISTS
    memory-gb>=64           GE        (also >, <, <=)
    zone in a,b,c           IN
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import attrs

from iris.errors import IrisError
from iris.job.types import show

WELL_KNOWN_KEYS = (
    "region",
    "zone",
    "preemptible",
    "hostname",
    "slice",
    "scale-group",
    "tpu-name",
    "tpu-worker-id",
    "topology",
    "device",
    "device-variant",
)


class ConstraintError(IrisError, ValueError):
    pass


class Op(enum.Enum):
    EQ = "EQ"
    NE = "NE"
    EXISTS = "EXISTS"
    NOT_EXISTS = "NOT_EXISTS"
    GT = "GT"
    GE = "GE"
    LT = "LT"
    LE = "LE"
    IN = "IN"


_SYMBOL = {Op.EQ: "=", Op.NE: "!=", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}


@attrs.frozen
class Constraint:
    key: str
    op: Op = Op.EQ
    values: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.key:
            raise ConstraintError("constraint: the attribute key is empty")
        key = self.key if len(self.key) <= 60 else show(self.key)
        needs = {Op.EXISTS: 0, Op.NOT_EXISTS: 0, Op.IN: -1}.get(self.op, 1)
        if needs == 0 and self.values:
            raise ConstraintError(f"constraint {key} {self.op.value}: takes no value")
        if needs == 1 and len(self.values) != 1:
            raise ConstraintError(f"constraint {key} {self.op.value}: takes exactly one value")
        if needs == -1 and not self.values:
            raise ConstraintError(f"constraint {key} IN: needs at least one value")
        if self.op in (Op.GT, Op.GE, Op.LT, Op.LE):
            try:
                float(self.values[0])
            except ValueError:
                raise ConstraintError(f"constraint {key} {_SYMBOL[self.op]} {show(self.values[0])}: the value must be a number") from None

    def matches(self, attributes: Mapping[str, str]) -> bool:
        present = self.key in attributes
        if self.op is Op.EXISTS:
            return present
        if self.op is Op.NOT_EXISTS:
            return not present
        if not present:
            return self.op is Op.NE
        actual = attributes[self.key]
        if self.op is Op.EQ:
            return actual == self.values[0]
        if self.op is Op.NE:
            return actual != self.values[0]
        if self.op is Op.IN:
            return actual in self.values
        try:
            number = float(actual)
        except ValueError:
            return False
        wanted = float(self.values[0])
        return {Op.GT: number > wanted, Op.GE: number >= wanted, Op.LT: number < wanted, Op.LE: number <= wanted}[self.op]

    def describe(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.NOT_EXISTS:
            return f"!{self.key}"
        if self.op is Op.IN:
            return f"{self.key} in {','.join(self.values)}"
        return f"{self.key}{_SYMBOL[self.op]}{self.values[0]}"


_TEXT = re.compile(r"^\s*(?P<key>[A-Za-z0-9_.\-/]+)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*$")
_IN = re.compile(r"^\s*(?P<key>[A-Za-z0-9_.\-/]+)\s+in\s+(?P<values>.+?)\s*$")
_KEY = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[A-Za-z0-9_.\-/]+)\s*$")
_OPS = {"=": Op.EQ, "!=": Op.NE, ">": Op.GT, ">=": Op.GE, "<": Op.LT, "<=": Op.LE}


def parse_constraint(text: str) -> Constraint:
    """Parse the text form (see the module docstring)."""
    if m := _IN.match(text):
        values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
        return Constraint(m["key"], Op.IN, values)
    if m := _TEXT.match(text):
        if not m["value"]:
            raise ConstraintError(f"constraint {show(text)}: missing value after {m['op']}")
        return Constraint(m["key"], _OPS[m["op"]], (m["value"],))
    if m := _KEY.match(text):
        return Constraint(m["key"], Op.NOT_EXISTS if m["neg"] else Op.EXISTS)
    raise ConstraintError(
        f"constraint {show(text)} is not understood; use KEY=VALUE, KEY!=VALUE, KEY>=N (>, <, <=), KEY, !KEY or 'KEY in A,B'"
    )

