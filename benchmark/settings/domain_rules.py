"""The names of domain generalisation's model-selection rules, shared by its record side and its training side."""

SELECTION_RULE = "training-domain validation"
ORACLE_RULE = "test-domain validation (oracle)"
