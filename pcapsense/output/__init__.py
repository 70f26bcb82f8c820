"""Renderers of an analysis result: terminal summary, JSON document."""
