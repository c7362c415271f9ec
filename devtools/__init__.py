"""Machinery for a developer's machine and the test suite, not part of the product.

`python -m service` never imports this package and the wheel does not ship it (pyproject lists
the packages it ships): `make run` runs `python -m devtools.devserver` from the checkout.
"""
