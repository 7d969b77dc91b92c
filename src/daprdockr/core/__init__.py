"""Pure logic: no I/O and no I/O libraries (checked by import-linter)."""
