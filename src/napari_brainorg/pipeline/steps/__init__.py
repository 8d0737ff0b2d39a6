"""The pipeline's steps, one module each, in the order :mod:`..run` runs them.

Each module says at its top what it reads, what it writes and what its cache key covers.
Steps do not import one another: what two steps share lives below them
(:mod:`..context`, :mod:`..study`), and the run module passes one step's results to the
next.
"""
