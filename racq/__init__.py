"""RACQ: retrieval-augmented clarifying questions (an implementation of Kebir et al., ECIR 2026)."""

__version__ = "0.1.0"
