"""Merge sweep rows from any number of runners into one report (Markdown, HTML, CSV) and gate regressions."""
