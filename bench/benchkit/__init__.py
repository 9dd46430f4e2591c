"""Shared pieces of the benches: model shapes, local fixtures, timing and memory measurement.

Kept apart from `region_plugin` because nothing here is product code: it only builds inputs for,
and measures, the real upstream/plugin code paths.
"""
