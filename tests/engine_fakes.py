"""A tiny CMOS-shaped network and task for fast engine tests (registered as ``tiny_cmos_test``)."""

import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models import registry
from bsrdata.models.engine.task_cmos import CMOSTask

NAME = "tiny_cmos_test"


class TinyCMOS(nn.Module):
    """conv 3->8 -> (blur 1, seg C) at LR, ×4 bilinear; same dict as CMOS. ``bn`` adds a BatchNorm."""

    def __init__(self, num_classes=4, bn=False):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(),
                                  nn.ReLU())
        self.blur = nn.Conv2d(8, 1, 1)
        self.seg = nn.Conv2d(8, num_classes, 1)
        self.aux_blur = nn.Conv2d(8, 1, 1)
        self.aux_seg = nn.Conv2d(8, num_classes, 1)

    def forward(self, lr):
        f = self.body(lr)
        up = lambda y: F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)  # noqa: E731
        return {"blur": up(self.blur(f)), "seg": up(self.seg(f)), "aux_blur": up(self.aux_blur(f)),
                "aux_seg": up(self.aux_seg(f))}


def register():
    registry.register_model(NAME)(lambda num_classes=4, bn=False, window=None, gia=None: TinyCMOS(num_classes, bn))


register()


class TinyTask(CMOSTask):
    """CMOSTask whose model may be the tiny network (model.name accepts tiny_cmos_test)."""

    defaults = {**CMOSTask.defaults, "model": {"name": NAME, "num_classes": 4, "bn": False, "gia": {},
                                                "window": [15, 20]}}

    def check_config(self, cfg, where):
        from bsrdata.models.engine.task import Task

        Task.check_config(self, cfg, where)


def small_cfg(task, **train):
    t = {"iterations": 4, "batch_size": 2, "workers": 0, "log_every": 1, "ckpt_every": 2, "warmup": 1,
         "lr": 1e-2}
    t.update(train)
    return task.config({"data": {"crop": [16, 20], "zoom": [1, 1.5]}, "train": t})
