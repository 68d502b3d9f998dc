"""`python -m opsconsole.cli` runs the command line, as the installed `opsconsole` script does."""

from opsconsole.cli.main import main

main()
