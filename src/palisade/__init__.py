"""Palisade: eBPF identity-aware network policy, flow observability and runtime security."""

__version__ = "0.1.0"
