"""kvm_model: a threaded model of KVM's MMU, shrinker and locks, validated by pylockdep."""
