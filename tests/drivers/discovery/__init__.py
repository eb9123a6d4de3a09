"""Drive discovery tests: classification on captured udev properties, pyudev under umockdev."""
