"""Development and test infrastructure: Pebble, pebble-challtestsrv, Redis and the app's own processes.

Used by `make run` (python -m devstack) and by the test suite's fixtures, so both run the same way.
Not imported by the product itself.
"""
