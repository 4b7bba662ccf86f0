"""Stage 2: joint training of the critique (LM) head and the reward head, and the standard-RM baseline."""

from criticrm.training.config import TrainConfig
from criticrm.training.schedules import LambdaContext, LambdaSchedule

__all__ = ["LambdaContext", "LambdaSchedule", "TrainConfig", "train_reward_model"]


def __getattr__(name: str):
    if name == "train_reward_model":  # imports transformers' Trainer: only when asked for
        from criticrm.training.trainer import train_reward_model

        return train_reward_model
    raise AttributeError(name)
