"""Submissions: loading and checking a user's one-file method, `bench submit` and `bench verify`."""
