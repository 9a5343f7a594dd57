"""Widgets the pages share: grid, detail dialog, map and charts; each renders facade records."""
