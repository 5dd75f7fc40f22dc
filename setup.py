"""Only the C extension lives here; everything else is in pyproject.toml.

The fast path is optional: if it fails to compile, the relay falls back to the
pure-Python forwarder (and says so in its log).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "voxgate.relay._fastpath",
            ["src/voxgate/relay/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
