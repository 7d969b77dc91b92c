"""Adapters to the outside world; library errors become :mod:`daprdockr.errors` here."""
