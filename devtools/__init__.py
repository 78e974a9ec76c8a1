"""Developer tools of the repository (not part of the installed package).

They use the standard library only, so that the Makefile and the CI script
can run them with any Python 3.11 before the virtual environment exists.
"""
