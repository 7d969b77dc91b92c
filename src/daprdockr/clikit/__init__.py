"""Helpers shared by the command-line front ends (spec files, output, running store calls)."""
