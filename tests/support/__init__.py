"""What the tests share that is not a fixture (fixtures are in tests/conftest.py): the stand-in
vLLM server, paths and settings, assertions, and more."""
