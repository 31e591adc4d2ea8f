"""Table 1, combination 10: agile_relu in the conv layers, relu in the dense layer."""

from configs import default


def get_config():
    return default.get_config(10)
