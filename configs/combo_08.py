"""Table 1, combination 8: relu in the conv layers, agile_relu in the dense layer."""

from configs import default


def get_config():
    return default.get_config(8)
