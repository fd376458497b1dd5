"""``python -m retrieval.cli`` runs the command line."""

from retrieval.cli import main

main()
