"""Backbones (timm, with weights that ship with the install), the classifier around them,
cached embeddings, ONNX export, and the runners that apply a model to decoded images."""
