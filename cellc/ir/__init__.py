"""The IR of every stage, each stage's types in its own module, in pipeline order:
`cell` (front end, regularize, split), `plan` (schedule), `derivation` (derive). The
back end's program tree is `backend/tree.py`."""
