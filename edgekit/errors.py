"""The one exception type users see: it says what went wrong and what to do about it."""


class EdgekitError(Exception):
    """Raised for anything a user can cause: bad files, unsupported models, bad arguments."""


class UnsupportedOpsError(EdgekitError):
    """A model uses operators edgekit cannot lower; ``ops`` lists every (op, location) pair."""

    def __init__(self, source: str, ops: list[tuple[str, str]]):
        self.ops = ops
        lines = "\n".join(f"  - {op} at {where}" for op, where in ops)
        names = sorted({op for op, _ in ops})
        super().__init__(
            f"{source} model uses {len(ops)} unsupported operator(s) "
            f"({', '.join(names)}):\n{lines}\n"
            "Rewrite these parts with supported layers (see `edgekit inspect --ops`) "
            "or open an issue asking for them."
        )
