"""Shape inference by unification: every vector value gets a dimension variable, and
elementwise operations, affine maps and state updates unify them with the named
dimensions of inputs, states and declared shapes (like type inference, over sizes)."""
from __future__ import annotations


class DimConflict(Exception):
    def __init__(self, a: str, b: str):
        super().__init__(f"{a} vs {b}")
        self.names = (a, b)


class Dims:
    """Union-find over dimension variables; a class may carry one name ("I", "H")."""

    def __init__(self):
        self._parent: list[int] = []
        self._name: dict[int, str] = {}
        self._by_name: dict[str, int] = {}

    def fresh(self) -> int:
        self._parent.append(len(self._parent))
        return len(self._parent) - 1

    def named(self, name: str) -> int:
        if name not in self._by_name:
            var = self.fresh()
            self._name[var] = name
            self._by_name[name] = var
        return self._by_name[name]

    def find(self, var: int) -> int:
        while self._parent[var] != var:
            self._parent[var] = self._parent[self._parent[var]]
            var = self._parent[var]
        return var

    def name(self, var: int) -> str | None:
        """The dimension name `var` is bound to, or None while it is still unknown."""
        return self._name.get(self.find(var))

    def unify(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        na, nb = self._name.get(ra), self._name.get(rb)
        if na is not None and nb is not None:
            raise DimConflict(na, nb)
        if na is None:
            ra, rb = rb, ra
        self._parent[rb] = ra
        return ra
