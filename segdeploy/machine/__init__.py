"""The machine a number was measured on: device names (device), CPU features (cpuinfo), the environment record
(envinfo) and the compute/bandwidth probe (roofline)."""
