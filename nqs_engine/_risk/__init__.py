"""The NQS risk: the closed form per direction and its evaluators (risk, curves, weight norm)."""
