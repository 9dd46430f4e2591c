"""Thin adapter between region_plugin's core and upstream Bunny (the `bunny` package, not on PyPI).

Kept import-light: the `.pth` that `make venv-bunny` installs imports a module of this package at
every interpreter start.
"""
