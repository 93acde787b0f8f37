"""Load tests (locust) and the fake upstream model API they and the tests run against."""
