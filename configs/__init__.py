"""Experiment configs (ml_collections). ``default.py`` documents every field."""
