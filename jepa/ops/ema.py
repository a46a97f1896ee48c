"""Old name of :mod:`jepa.ops.ema_update` (the op is named ``ema_update`` in every layer); kept so that
``from jepa.ops.ema import ema_update`` keeps working."""

from jepa.ops.ema_update import ema_update, ema_update_reference

__all__ = ["ema_update", "ema_update_reference"]
