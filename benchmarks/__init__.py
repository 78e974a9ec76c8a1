"""The benchmarks of the notifications center (see benchmarks/README.rst).

``run.py`` is the command; the ``bench`` package below it holds its parts.
"""
