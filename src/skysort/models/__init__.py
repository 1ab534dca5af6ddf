"""Backbones (timm, with weights that ship with the install) and the classifier around them."""
