"""The data plane: load a version, keep it in the memory-bounded LRU, queue and batch its
requests, predict. Knows no wire protocol and no HTTP (``predictor.InferenceService`` is
its one door); the protocol adapters in ``gateway.protocols`` call it."""
