"""Races of x86 KVM's lockless fast page fault, reproduced step by step and shown fixed by each rule of
locking.txt ("Fast page fault")."""
