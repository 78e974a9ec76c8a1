"""The subcommands of ``notifications`` that have a module of their own.

:mod:`notifications.cli` builds the parser and holds the older commands;
each module here adds one group of commands with its ``add_commands``.
"""
