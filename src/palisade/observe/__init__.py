"""palisade.observe"""
