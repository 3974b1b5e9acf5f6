"""Fuzzing of the parsers that take untrusted bytes (atheris), and shared samples.

``python -m fuzz.run --list`` names the targets; docs/fuzzing.md says how to run them.
"""
