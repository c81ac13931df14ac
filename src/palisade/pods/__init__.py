"""palisade.pods"""
