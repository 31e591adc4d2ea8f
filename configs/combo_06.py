"""Table 1, combination 6: agile_sigmoid in the conv layers, agile_sigmoid in the dense layer."""

from configs import default


def get_config():
    return default.get_config(6)
