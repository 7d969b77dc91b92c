"""``python -m daprdockr`` runs the same typer app as the ``daprdockr`` console script."""

from daprdockr.cli.main import main

if __name__ == "__main__":
    main()
