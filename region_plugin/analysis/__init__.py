"""The paper's analyses as tools: revert layers to the backbone, text-task retention, LLM-only export.

Each CLI checks every input first (exit 2 naming the flag, before weights load), then loads the
model once through its codebase's own loader (`region_plugin.adapters`), then writes its outputs
through a hidden temporary sibling that is renamed into place.
"""
