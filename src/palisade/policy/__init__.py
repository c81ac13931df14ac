"""palisade.policy"""
