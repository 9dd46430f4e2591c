"""Thin adapter between region_plugin's core and upstream LLaVA (the `llava` package)."""
