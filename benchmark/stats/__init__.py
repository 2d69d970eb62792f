"""Statistics over records: paired tests and ranks with ties."""

from .paired import PairedTest, paired_test

__all__ = ["PairedTest", "paired_test"]
