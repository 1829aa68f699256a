"""pylockdep: a runtime lock-dependency validator modelled on the Linux kernel's lockdep."""
