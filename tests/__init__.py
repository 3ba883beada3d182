"""medvlm's tests: one folder per package (tests/data_prep/ ... tests/bench/), whole-pipeline tests here.

Every folder is a package, so `from tests.conftest import ...` and `from tests.fake_openai import ...` reach
the shared helpers from any of them.
"""
