"""The core layer: archs and spaces, the supernet and its static subnets, BN recalibration, the training step
and the strategies that plan it. It knows nothing of files, configs or run directories."""
