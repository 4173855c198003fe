"""The crash harness: scenarios, the exactly-once checker and the live demo.

It drives a local stack (``tools/stack/``) and judges runs; production entry points never import it.
"""
