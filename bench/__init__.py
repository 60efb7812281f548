"""The benchmarks of crypto-files-server (`make bench`, ``python -m bench``): docs/benchmarks.md.

Not part of the service and never deployed; run from the project root, which must be on
``sys.path`` (``python -m`` puts it there; ``bench/run.py`` does it for the documented commands).
"""
