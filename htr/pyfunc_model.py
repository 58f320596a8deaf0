"""The model file of a logged htr pyfunc ("models from code"): MLflow runs this code to build the model.

Nothing of ours is pickled into the registry; a model version is this file, the ``htr`` sources and its artifacts
(checkpoint, ONNX export), so loading it never unpickles code that came with it.
"""

from mlflow.models import set_model

from htr.pyfunc import HTRPythonModel

set_model(HTRPythonModel())
