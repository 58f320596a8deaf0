from htr.models.crnn import CRNN, time_stride

__all__ = ["CRNN", "time_stride"]
