"""The pool tests' fixtures (defined in pool_support)."""

from pool_support import gate, start_pool

__all__ = ["gate", "start_pool"]
