"""Marks this folder as a package for the build: pyproject.toml maps it into the wheel as
recorder.named_queries, read at run time with importlib.resources."""
