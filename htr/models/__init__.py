from htr.models.crnn import CRNN

__all__ = ["CRNN"]
