"""The test suite (a package, so that pytest and the test modules import its
conftest as one module, ``tests.conftest``)."""
