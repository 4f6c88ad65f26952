"""Member training: independent, parallel or group (loss on the merged logit), with early stopping."""

from ttsrec.train.options import TrainOptions
from ttsrec.train.run import train_group_series, train_members

__all__ = ["TrainOptions", "train_group_series", "train_members"]
