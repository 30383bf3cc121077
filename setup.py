"""The one compiled part of the recorder: recorder/_speedups.c (predict.fun order books read a run
at a time). Everything else is in pyproject.toml. `optional`: where no C compiler is found the
package still builds and installs, and the recorder reads those books in Python (slower, the same
rows); `recorder version` says which (tests/test_speedups.py requires it built here)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("recorder._speedups", ["recorder/_speedups.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
