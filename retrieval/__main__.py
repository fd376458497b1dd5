"""``python -m retrieval`` runs the command line (also what ``torchrun -m retrieval`` launches)."""

from retrieval.cli import main

main()
