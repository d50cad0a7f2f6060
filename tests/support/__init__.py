"""What tests share, so that no test module imports another: fakes at the real seams
(``runners``: scripted runners for the real app, ``app``), real processes (``server``: ``power
serve``; ``spawn``: the real Supervisor over runner children; ``registry`` and
``token_realm``: a CNCF registry and its token service; ``proxy``: a counting TCP proxy),
files (``gguf``: header-only GGUFs; ``synth``: GGUFs with weights, adapters, projectors,
images), ``limited`` (the e2e limited server's model and endpoints), ``net`` (free ports) and
``wait`` (waiting for an observable state; never sleeping to prove a negative)."""
