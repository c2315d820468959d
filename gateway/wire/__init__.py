"""What goes over the wire, as data: MLflow's scoring bodies (``mlflow_scoring``), the Open
Inference Protocol's tensors and binary extension (``oip_codec``), the JSON the control API
answers with (``api_schemas``), and the grammar of a version's selector in a path or
``X-Model-Version`` (``selectors``). Decoded and encoded here, with no I/O and nothing of the
data plane: the data plane, routing and the protocol adapters all build on it."""
