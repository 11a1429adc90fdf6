"""Front ends that mirror other libraries' APIs on acsleuth's engine.

- :mod:`acsleuth.compat.sleuth`: the reference ACsleuth library (``sleuth``), docs/method.md §7.
"""
