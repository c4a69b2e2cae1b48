"""nnU-Net's per-epoch logger, extended with the semi-supervised loss terms and their panel in ``progress.png``.

nnU-Net's ``LocalLogger`` only accepts eight fixed keys. :class:`SSLLocalLogger` accepts any key registered with
:meth:`SSLLocalLogger.register` and draws those series in a fourth panel. Its state is the same dict nnU-Net
checkpoints, so ``--c`` restores the extra curves too.
"""
import warnings
from typing import Iterable

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

NETWORK_DICE_PREFIX = "pseudo_dice_"
NNUNET_KEYS = ("mean_fg_dice", "ema_fg_dice", "dice_per_class_or_region", "train_losses", "val_losses", "lrs",
               "epoch_start_timestamps", "epoch_end_timestamps")


def network_dice_key(network: str) -> str:
    """The logger key of a monitored network's per-class pseudo Dice."""
    return NETWORK_DICE_PREFIX + network


def per_class_rows(values: list) -> np.ndarray:
    """A logged per-class series as [epochs, classes]; a scalar entry (the NaN that :meth:`SSLLocalLogger.register`
    pads a resumed run with) becomes a row of NaN."""
    classes = max((len(v) for v in values if np.ndim(v) == 1), default=1)
    return np.array([v if np.ndim(v) == 1 else [float("nan")] * classes for v in values],
                    dtype=float).reshape(len(values), classes)


class SSLLocalLogger(LocalLogger):
    def register(self, keys: Iterable[str]) -> None:
        """Accept ``keys`` from now on. A key new to a resumed run is padded with NaN for the epochs already done."""
        epochs_done = len(self.my_fantastic_logging["train_losses"])
        for key in keys:
            self.my_fantastic_logging.setdefault(key, [float("nan")] * epochs_done)

    @property
    def extra_keys(self):
        return [k for k in self.my_fantastic_logging if k not in NNUNET_KEYS]

    @property
    def network_dice_keys(self):
        """``pseudo_dice_<network>``: per-class pseudo Dice lists of the monitored networks (drawn with the Dice)."""
        return [k for k in self.extra_keys if k.startswith(NETWORK_DICE_PREFIX)]

    def plot_progress_png(self, output_folder: str) -> None:
        logged = self.my_fantastic_logging
        epochs = min(len(logged[k]) for k in NNUNET_KEYS)
        if epochs == 0:
            return
        x = list(range(epochs))
        fig, axes = plt.subplots(4, 1, figsize=(12, 20))

        ax = axes[0]
        ax.plot(x, logged["train_losses"][:epochs], color="b", label="loss_tr (total)")
        ax.plot(x, logged["val_losses"][:epochs], color="r", label="loss_val (supervised)")
        ax.set_ylabel("loss")
        dice_ax = ax.twinx()
        dice_ax.plot(x, logged["mean_fg_dice"][:epochs], color="g", ls="dotted", label="pseudo dice")
        dice_ax.plot(x, logged["ema_fg_dice"][:epochs], color="g", label="pseudo dice (mov. avg.)")
        for key, style in zip(self.network_dice_keys, ("dashed", "dashdot", (0, (1, 3)))):
            with warnings.catch_warnings():  # an epoch where every class is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(per_class_rows(logged[key][:epochs]), axis=1)
            dice_ax.plot(x[:len(mean)], mean, color="purple", ls=style,
                         label=f"pseudo dice, {key[len(NETWORK_DICE_PREFIX):]}")
        dice_ax.set_ylabel("pseudo dice")
        ax.legend(loc="upper left")
        dice_ax.legend(loc="upper right")

        ax = axes[1]
        durations = [end - start for start, end in zip(logged["epoch_start_timestamps"][:epochs],
                                                        logged["epoch_end_timestamps"][:epochs])]
        ax.plot(x, durations, color="b", label="epoch duration")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("time [s]")
        ax.legend(loc="upper left")

        ax = axes[2]
        ax.plot(x, logged["lrs"][:epochs], color="b", label="learning rate")
        ax.set_ylabel("learning rate")
        ax.legend(loc="upper left")

        ax = axes[3]
        terms = [k for k in self.extra_keys if not k.startswith(NETWORK_DICE_PREFIX)]
        for key in terms:
            values = logged[key][:epochs]
            ax.plot(list(range(len(values))), values, label=key)
        ax.set_ylabel("semi-supervised terms")
        if terms:
            ax.legend(loc="upper left", fontsize="small")
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(f"{output_folder}/progress.png")
        plt.close(fig)
