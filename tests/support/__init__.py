"""What tests share: fakes at the real seams, spawners, waits, free ports, tiny GGUFs."""
