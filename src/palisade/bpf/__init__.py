"""palisade.bpf"""
