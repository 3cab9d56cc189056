"""FSS methods, one subpackage each. ``fssbench.methods`` discovers them; nothing imports one by name."""
