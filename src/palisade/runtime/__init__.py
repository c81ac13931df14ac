"""palisade.runtime"""
