"""Marks this folder as a package for the build: pyproject.toml maps it into the wheel as
recorder.prometheus (alerts.yml, alerts_test.yml, prometheus.yml); `recorder prometheus DIR` copies them out."""
